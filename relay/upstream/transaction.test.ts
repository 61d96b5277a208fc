import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { UpstreamTarget } from './connection.ts';
import { UpstreamError } from './errors.ts';
import { type PoolOptions, type TransactionResult, UpstreamPool, type UpstreamTransaction } from './pool.ts';
import { ScriptedServer, type ScriptedServerOptions } from './testing/scripted-server.ts';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(serverOpts: ScriptedServerOptions = {}, poolOpts: Partial<PoolOptions> = {}) {
  const server = await ScriptedServer.start(serverOpts);
  const results: TransactionResult[] = [];
  const pool = new UpstreamPool({
    heloName: 'relay.test',
    connectTimeoutMs: 1000,
    greetingTimeoutMs: 1000,
    commandTimeoutMs: 1000,
    dataTimeoutMs: 1000,
    onTransaction: (_t, _ms, r) => results.push(r),
    ...poolOpts,
  });
  cleanups.push(() => server.close());
  cleanups.push(() => pool.close());
  const target: UpstreamTarget = { host: '127.0.0.1', port: server.port, tls: 'none', verify: true };
  return { server, pool, target, results };
}

async function begin(pool: UpstreamPool, target: UpstreamTarget, from = 'sender@example.org') {
  const r = await pool.begin(target, from);
  if (!r.ok) throw new Error(`MAIL refused: ${r.reply.code}`);
  return r.tx;
}

async function send(tx: UpstreamTransaction, ...chunks: string[]) {
  expect((await tx.data()).code).toBe(354);
  for (const c of chunks) tx.write(Buffer.from(c, 'latin1'));
  return tx.end();
}

async function expectUpstreamError(p: Promise<unknown>, kind: UpstreamError['kind']): Promise<UpstreamError> {
  const err = await p.then(
    () => {
      throw new Error('expected an UpstreamError');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UpstreamError);
  expect((err as UpstreamError).kind).toBe(kind);
  return err as UpstreamError;
}

describe('session setup', () => {
  it('greets, EHLOs with our name, and uses advertised extensions for MAIL parameters', async () => {
    const { server, pool, target } = await setup();
    const r = await pool.begin(target, 'a@example.org', { size: 1234, body: '8BITMIME', smtputf8: true });
    expect(r.ok).toBe(true);
    expect(r.reply).toMatchObject({ code: 250, enhancedCode: '2.1.0', text: 'Ok' });
    if (r.ok) await r.tx.release();
    expect(server.sessions[0].commands).toEqual([
      'EHLO relay.test',
      'MAIL FROM:<a@example.org> SIZE=1234 BODY=8BITMIME SMTPUTF8',
      'RSET',
    ]);
  });

  it('omits SIZE and BODY when not advertised, and refuses SMTPUTF8 the upstream lacks', async () => {
    const { server, pool, target, results } = await setup({ extensions: ['PIPELINING'] });
    const r = await pool.begin(target, 'a@example.org', { size: 1234, body: '8BITMIME' });
    if (r.ok) await r.tx.release();
    expect(server.sessions[0].commands[1]).toBe('MAIL FROM:<a@example.org>');
    const u = await pool.begin(target, 'ü@example.org', { smtputf8: true });
    expect(u).toMatchObject({ ok: false, reply: { code: 553, enhancedCode: '5.6.7' } });
    expect(server.sessions[0].commands.filter((c) => c.startsWith('MAIL'))).toHaveLength(1);
    expect(results.at(-1)?.outcome).toBe('rejected');
  });

  it('parses a multi-line EHLO reply split across writes', async () => {
    const { server, pool, target } = await setup({
      replies: {
        EHLO: (_l, s) => {
          s.socket.write('250-scripted.test\r\n250-SI');
          setTimeout(() => s.socket.write('ZE 100\r\n250 8BITMIME\r\n'), 20);
          return null;
        },
      },
    });
    const r = await pool.begin(target, 'a@example.org', { size: 5, body: '7BIT' });
    if (r.ok) await r.tx.release();
    expect(server.sessions[0].commands[1]).toBe('MAIL FROM:<a@example.org> SIZE=5 BODY=7BIT');
  });

  it('falls back to HELO when EHLO is not understood', async () => {
    const { server, pool, target } = await setup({ replies: { EHLO: '502 5.5.2 What?' } });
    const tx = await begin(pool, target);
    await tx.release();
    expect(server.sessions[0].commands.slice(0, 2)).toEqual(['EHLO relay.test', 'HELO relay.test']);
  });

  it('fails with kind connect (reply attached) on a refusing greeting', async () => {
    const { pool, target } = await setup({ greeting: '554 5.3.2 No service here' });
    const err = await expectUpstreamError(pool.begin(target, 'a@example.org'), 'connect');
    expect(err.reply?.code).toBe(554);
    expect(err.target).toBe(target.host + ':' + target.port);
  });

  it('fails with kind connect when nothing listens', async () => {
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const pool = new UpstreamPool({ heloName: 'relay.test', connectTimeoutMs: 1000 });
    cleanups.push(() => pool.close());
    await expectUpstreamError(
      pool.begin({ host: '127.0.0.1', port, tls: 'none', verify: true }, 'a@b'),
      'connect',
    );
    expect(pool.stats().open).toBe(0);
  });
});

describe('verdicts', () => {
  it('passes MAIL and RCPT verdicts through with enhanced codes', async () => {
    const { pool, target, results } = await setup({
      replies: {
        MAIL: (line) => (line.includes('<bad@') ? '553 5.7.1 Sender rejected' : '250 2.1.0 Ok'),
        RCPT: (line) =>
          line.includes('<gone@')
            ? '550 5.1.1 <gone@example.com>: Recipient address rejected'
            : line.includes('<full@')
              ? '452-4.2.2 Mailbox full\r\n452 4.2.2 try later'
              : '250 2.1.5 Ok',
      },
    });
    const refused = await pool.begin(target, 'bad@example.org');
    expect(refused).toMatchObject({
      ok: false,
      reply: { code: 553, enhancedCode: '5.7.1', text: 'Sender rejected' },
    });
    expect(results.at(-1)?.outcome).toBe('rejected');
    const tx = await begin(pool, target);
    expect(await tx.rcpt('ok@example.com')).toMatchObject({ code: 250, enhancedCode: '2.1.5' });
    expect(await tx.rcpt('gone@example.com')).toMatchObject({
      code: 550,
      enhancedCode: '5.1.1',
      text: '<gone@example.com>: Recipient address rejected',
    });
    expect(await tx.rcpt('full@example.com')).toMatchObject({
      code: 452,
      enhancedCode: '4.2.2',
      text: 'Mailbox full try later',
    });
    await tx.release();
    expect(pool.stats()).toMatchObject({ open: 1, idle: 1 });
  });

  it('resolves data() with a refusal and lets release() reset', async () => {
    const { server, pool, target } = await setup({ replies: { DATA: '554 5.5.1 No valid recipients' } });
    const tx = await begin(pool, target);
    expect(await tx.data()).toMatchObject({ code: 554, enhancedCode: '5.5.1' });
    await tx.release();
    expect(server.sessions[0].commands.at(-1)).toBe('RSET');
    expect(pool.stats().idle).toBe(1);
  });

  it('reports final reply 4xx/5xx as deferred/rejected and keeps the connection', async () => {
    let n = 0;
    const { pool, target, results } = await setup({
      replies: { DOT: () => (++n === 1 ? '451 4.3.0 Try again' : '554 5.6.0 Content refused') },
    });
    let tx = await begin(pool, target);
    await tx.rcpt('x@example.com');
    expect(await send(tx, 'a\r\n')).toMatchObject({ code: 451, enhancedCode: '4.3.0' });
    tx = await begin(pool, target);
    await tx.rcpt('x@example.com');
    expect(await send(tx, 'a\r\n')).toMatchObject({ code: 554 });
    expect(results.map((r) => r.outcome)).toEqual(['deferred', 'rejected']);
    expect(pool.stats()).toMatchObject({ open: 1, idle: 1 });
  });
});

describe('byte-faithful DATA', () => {
  it('delivers written bytes exactly, dot-stuffed lines and bare CR/LF included', async () => {
    const { server, pool, target, results } = await setup();
    const content =
      'Subject: x\r\n\r\n..leading dot stays stuffed\r\nbare\nLF and bare\rCR\r\n.. \r\nend\r\n';
    const tx = await begin(pool, target);
    await tx.rcpt('x@example.com');
    expect(await tx.data()).toMatchObject({ code: 354 });
    // written in awkward pieces, as the client's bytes arrive
    for (let i = 0; i < content.length; i += 7) tx.write(Buffer.from(content.slice(i, i + 7), 'latin1'));
    expect(tx.bytesWritten).toBe(content.length);
    expect(await tx.end()).toMatchObject({ code: 250 });
    expect(server.sessions[0].messages[0].toString('latin1')).toBe(content);
    const raw = server.sessions[0].raw.toString('latin1');
    expect(raw.endsWith(`DATA\r\n${content}.\r\n`)).toBe(true);
    expect(results[0]).toMatchObject({ outcome: 'accepted', bytes: content.length });
  });

  it('adds CRLF before the dot only when content does not end with CRLF', async () => {
    const { server, pool, target } = await setup();
    const cases: Array<[string[], string]> = [
      [['no newline at end'], 'no newline at end\r\n.\r\n'],
      [['ends with CR\r'], 'ends with CR\r\r\n.\r\n'],
      [['split CR', '\r', '\n'], 'split CR\r\n.\r\n'],
      [[], '.\r\n'],
      [['', ''], '.\r\n'],
      [['\r\n'], '\r\n.\r\n'],
    ];
    for (const [chunks, wire] of cases) {
      const before = server.sessions[0]?.raw.length ?? 0;
      const tx = await begin(pool, target);
      await tx.rcpt('x@example.com');
      expect((await send(tx, ...chunks)).code).toBe(250);
      const raw = server.sessions[0].raw.subarray(before).toString('latin1');
      expect(raw.endsWith(`DATA\r\n${wire}`), JSON.stringify(chunks)).toBe(true);
    }
    expect(server.sessions).toHaveLength(1);
    expect(server.sessions[0].messages.map((m) => m.toString('latin1'))).toEqual([
      'no newline at end\r\n',
      'ends with CR\r\r\n',
      'split CR\r\n',
      '',
      '',
      '\r\n',
    ]);
  });

  it('streams 10 MiB with backpressure and a byte count', async () => {
    const { server, pool, target } = await setup({}, { dataTimeoutMs: 10_000 });
    const tx = await begin(pool, target);
    await tx.rcpt('x@example.com');
    await tx.data();
    const line = Buffer.from(`${'x'.repeat(76)}\r\n`);
    const chunk = Buffer.concat(Array.from({ length: 800 }, () => line)); // 62.5 KiB
    let written = 0;
    let sawBackpressure = false;
    while (written < 10 * 1024 * 1024) {
      written += chunk.length;
      if (!tx.write(chunk)) {
        sawBackpressure = true;
        await new Promise<void>((r) => tx.once('drain', r));
      }
    }
    expect(await tx.end()).toMatchObject({ code: 250 });
    expect(tx.bytesWritten).toBe(written);
    expect(server.sessions[0].messages[0].length).toBe(written);
    expect(sawBackpressure).toBe(true);
  });

  it('abort() mid-DATA never sends the terminator and drops the connection', async () => {
    const { server, pool, target, results } = await setup();
    const tx = await begin(pool, target);
    await tx.rcpt('x@example.com');
    await tx.data();
    tx.write(Buffer.from('Subject: half\r\n\r\nhalf a message\r\n'));
    tx.abort();
    tx.abort();
    await server.waitFor(() => server.sessions[0].closed);
    expect(server.sessions[0].messages).toEqual([]);
    expect(server.sessions[0].partial?.toString()).toBe('Subject: half\r\n\r\nhalf a message\r\n');
    expect(pool.stats()).toEqual({ open: 0, idle: 0, waiting: 0 });
    expect(results.map((r) => r.outcome)).toEqual(['aborted']);
    const next = await begin(pool, target);
    await next.release();
    expect(server.sessions).toHaveLength(2);
  });

  it('release() mid-DATA aborts instead of sending RSET', async () => {
    const { server, pool, target } = await setup();
    const tx = await begin(pool, target);
    await tx.data();
    tx.write(Buffer.from('partial'));
    await tx.release();
    await server.waitFor(() => server.sessions[0].closed);
    expect(server.sessions[0].messages).toEqual([]);
    expect(server.sessions[0].commands).not.toContain('RSET');
  });

  it('enforces the transaction state machine', async () => {
    const { pool, target } = await setup();
    const tx = await begin(pool, target);
    expect(() => tx.write(Buffer.from('x'))).toThrow(/state 'mail'/);
    await expect(tx.end()).rejects.toThrow(/state 'mail'/);
    await tx.data();
    await expect(tx.rcpt('x@example.com')).rejects.toThrow(/state 'data'/);
    await tx.end();
    await expect(tx.end()).rejects.toThrow(/state 'done'/);
  });
});

describe('injection', () => {
  it('refuses CR, LF or NUL in addresses and the HELO name before writing anything', async () => {
    const { server, pool, target } = await setup();
    for (const bad of ['a@b\r\nRCPT TO:<evil@x>', 'a@b\n', 'a@b\0', 'a\r@b']) {
      await expect(pool.begin(target, bad)).rejects.toThrow(TypeError);
    }
    expect(server.sessions).toHaveLength(0);
    const tx = await begin(pool, target);
    await expect(tx.rcpt('x@example.com>\r\nDATA')).rejects.toThrow(TypeError);
    await expect(tx.rcpt('x@example.com\0')).rejects.toThrow(TypeError);
    await tx.release();
    expect(server.sessions[0].commands).toEqual([
      'EHLO relay.test',
      'MAIL FROM:<sender@example.org>',
      'RSET',
    ]);
    expect(() => new UpstreamPool({ heloName: 'relay\r\nMAIL FROM:<x>' })).toThrow(TypeError);
    // @ts-expect-error size must be a number
    await expect(pool.begin(target, 'a@b', { size: '1\r\nRSET' })).rejects.toThrow(TypeError);
    // @ts-expect-error body must be one of two values
    await expect(pool.begin(target, 'a@b', { body: '8BITMIME\r\nRSET' })).rejects.toThrow(TypeError);
  });
});

describe('failures', () => {
  it('times out on a silent greeting with kind timeout', async () => {
    const { pool, target } = await setup({ greeting: null }, { greetingTimeoutMs: 100 });
    const t0 = Date.now();
    const err = await expectUpstreamError(pool.begin(target, 'a@b'), 'timeout');
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(err.message).toMatch(/greeting/);
    expect(pool.stats().open).toBe(0);
  });

  it('times out a silent RCPT and never reuses the connection', async () => {
    const { server, pool, target, results } = await setup(
      { replies: { RCPT: null } },
      { commandTimeoutMs: 100 },
    );
    const tx = await begin(pool, target);
    const err = await expectUpstreamError(tx.rcpt('x@example.com'), 'timeout');
    expect(err.message).not.toContain('x@example.com');
    await server.waitFor(() => server.sessions[0].closed);
    expect(pool.stats().open).toBe(0);
    expect(results.map((r) => r.outcome)).toEqual(['failed']);
    await tx.release();
  });

  it('times out the final dot with the separate data timeout', async () => {
    const { pool, target } = await setup(
      { replies: { DOT: null } },
      { commandTimeoutMs: 50, dataTimeoutMs: 300 },
    );
    const tx = await begin(pool, target);
    await tx.data();
    tx.write(Buffer.from('x\r\n'));
    const t0 = Date.now();
    const err = await expectUpstreamError(tx.end(), 'timeout');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(err.message).toMatch(/end of data/);
  });

  it('reports kind closed when the server hangs up mid-transaction', async () => {
    const { pool, target } = await setup({ replies: { RCPT: { destroy: true } } });
    const tx = await begin(pool, target);
    await expectUpstreamError(tx.rcpt('x@example.com'), 'closed');
    expect(pool.stats().open).toBe(0);
  });

  it('reports kind closed when the server hangs up mid-content; writers are released', async () => {
    const { server, pool, target } = await setup();
    const tx = await begin(pool, target);
    await tx.data();
    tx.write(Buffer.from('first\r\n'));
    await server.waitFor(() => server.sessions[0].partial !== undefined);
    server.sessions[0].socket.destroy();
    await new Promise<void>((r) => tx.once('drain', r)); // fires because the connection died
    expect(tx.write(Buffer.from('dropped\r\n'))).toBe(true);
    await expectUpstreamError(tx.end(), 'closed');
  });

  it('turns 421 into kind closed with the reply, and never reuses the connection', async () => {
    const { server, pool, target } = await setup({ replies: { RCPT: '421 4.3.2 Shutting down' } });
    const tx = await begin(pool, target);
    const err = await expectUpstreamError(tx.rcpt('x@example.com'), 'closed');
    expect(err.reply).toMatchObject({ code: 421, enhancedCode: '4.3.2' });
    expect(pool.stats().open).toBe(0);
    await server.waitFor(() => server.sessions[0].closed);
  });

  it('treats an unsolicited reply as a protocol error', async () => {
    const { server, pool, target } = await setup({ replies: { RCPT: '250 2.1.5 Ok\r\n250 2.0.0 Surprise' } });
    const tx = await begin(pool, target);
    // the RCPT itself got its reply; the extra one kills the connection
    await tx.rcpt('x@example.com');
    await server.waitFor(() => server.sessions[0].closed);
    await expectUpstreamError(tx.data(), 'protocol');
    expect(pool.stats().open).toBe(0);
  });

  it('treats a malformed or oversized reply as a protocol error', async () => {
    const { pool, target } = await setup({
      replies: { MAIL: (l) => (l.includes('<a@') ? 'hello there' : `250-${'x'.repeat(70_000)}`) },
    });
    await expectUpstreamError(pool.begin(target, 'a@b'), 'protocol');
    await expectUpstreamError(pool.begin(target, 'b@b'), 'protocol');
    expect(pool.stats().open).toBe(0);
  });
});
