// Self-tests of the test fixtures: real SMTP over loopback with nodemailer and swaks into
// the capture sink, the fast sink and Postfix's smtp-sink.
import { createTransport } from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCaptureSink } from './capture-sink.ts';
import { createTestPki, type TestPki } from './certs.ts';
import { startFastSink } from './fast-sink.ts';
import { canConnect, freePort, startProcess } from './processes.ts';
import { startSmtpSink } from './smtp-sink.ts';
import { runSwaks } from './swaks.ts';

let pki: TestPki;
beforeAll(async () => {
  pki = await createTestPki();
});
afterAll(async () => {
  await pki?.cleanup();
});

function send(port: number, raw: string | Buffer, from: string, to: string[], extra: object = {}) {
  const transport = createTransport({
    host: '127.0.0.1',
    port,
    ignoreTLS: true,
    ...extra,
  } as Parameters<typeof createTransport>[0]);
  return transport.sendMail({ envelope: { from, to }, raw });
}

describe('capture sink', () => {
  it('records envelope and exact content (dots un-stuffed) from nodemailer', async () => {
    const sink = await startCaptureSink();
    try {
      const raw = 'Subject: hi\r\n\r\nline\r\n.leading dot\r\n..two\r\n';
      await send(sink.port, raw, 'a@example.test', ['x@bench.test', 'y@bench.test']);
      const [m] = await sink.waitForMessages(1);
      expect(m.mailFrom).toBe('a@example.test');
      expect(m.rcptTo).toEqual(['x@bench.test', 'y@bench.test']);
      expect(m.data.toString()).toBe(raw);
      expect(m.tls.secure).toBe(false);
    } finally {
      await sink.close();
    }
  });

  it('replies per recipient, MAIL and DATA as configured (swaks)', async () => {
    const sink = await startCaptureSink({
      behaviour: {
        rcpt: {
          'bad@x.test': { code: 550, message: '5.1.1 no such user' },
          'later@x.test': { code: 451, message: '4.2.0 try later' },
        },
      },
    });
    try {
      const r = await runSwaks({ port: sink.port, to: ['bad@x.test', 'later@x.test', 'ok@x.test'] });
      expect(r.exitCode).toBe(0); // swaks succeeds while one recipient is accepted
      expect(r.rcpt.map((x) => x.code)).toEqual([550, 451, 250]);
      expect(r.rcpt[0].text).toContain('5.1.1 no such user');
      expect(r.last.END?.code).toBe(250);
      expect((await sink.waitForMessages(1))[0].rcptTo).toEqual(['ok@x.test']);

      sink.reset({ data: { code: 554, message: '5.7.1 content rejected' } });
      const d = await runSwaks({ port: sink.port, to: 'ok@x.test' });
      expect(d.exitCode).not.toBe(0);
      expect(d.last.END).toMatchObject({ code: 554 });
      expect(sink.messages).toHaveLength(0);

      sink.reset({ mailFrom: { code: 451, message: '4.3.0 busy' } });
      const f = await runSwaks({ port: sink.port, to: 'ok@x.test' });
      expect(f.last.MAIL?.code).toBe(451);
    } finally {
      await sink.close();
    }
  });

  it('delays replies', async () => {
    const sink = await startCaptureSink({ behaviour: { delayMs: { data: 300 } } });
    try {
      const t0 = Date.now();
      await send(sink.port, 'Subject: x\r\n\r\nx\r\n', 'a@x.test', ['b@x.test']);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    } finally {
      await sink.close();
    }
  });

  it('drops the connection mid-DATA', async () => {
    const sink = await startCaptureSink({ behaviour: { dropAfterDataBytes: 10_000 } });
    try {
      const big = `Subject: big\r\n\r\n${'x'.repeat(76)}\r\n`.repeat(2000);
      await expect(send(sink.port, big, 'a@x.test', ['b@x.test'])).rejects.toThrow();
      expect(sink.messages).toHaveLength(0);
      expect(sink.connections()).toBe(1);
    } finally {
      await sink.close();
    }
  });

  it('refuses connections', async () => {
    const sink = await startCaptureSink({ behaviour: { refuse: true } });
    expect(await canConnect(sink.port)).toBe(false);
    await sink.close();
  });

  it('STARTTLS and implicit TLS with a certificate from the test CA, verified by the client', async () => {
    const starttls = await startCaptureSink({ tls: { key: pki.server.key, cert: pki.server.cert } });
    const implicit = await startCaptureSink({
      tls: { key: pki.server.key, cert: pki.server.cert, implicit: true },
    });
    try {
      await send(starttls.port, 'Subject: t\r\n\r\nt\r\n', 'a@x.test', ['b@x.test'], {
        ignoreTLS: false,
        requireTLS: true,
        tls: { ca: pki.ca, servername: 'localhost' },
      });
      const [m] = await starttls.waitForMessages(1);
      expect(m.tls.secure).toBe(true);
      expect(m.tls.protocol).toMatch(/^TLSv1\.[23]$/);

      const r = await runSwaks({ port: implicit.port, to: 'b@x.test', tls: 'implicit', tlsCa: pki.caPath });
      expect(r.exitCode).toBe(0);
      expect((await implicit.waitForMessages(1))[0].tls.secure).toBe(true);

      // a client trusting only the CA refuses a self-signed certificate
      const rogue = await pki.selfSigned('rogue', ['127.0.0.1', 'localhost']);
      const bad = await startCaptureSink({ tls: { key: rogue.key, cert: rogue.cert } });
      try {
        await expect(
          send(bad.port, 'x', 'a@x.test', ['b@x.test'], {
            ignoreTLS: false,
            requireTLS: true,
            tls: { ca: pki.ca, servername: 'localhost' },
          }),
        ).rejects.toThrow(/certificate/i);
      } finally {
        await bad.close();
      }
    } finally {
      await starttls.close();
      await implicit.close();
    }
  });
});

describe('fast sink', () => {
  it('counts pipelined messages and ids, with terminators split across chunks', async () => {
    const sink = await startFastSink();
    try {
      for (let i = 0; i < 3; i++) {
        await send(sink.port, `X-Bench-Id: id-${i}\r\nSubject: s\r\n\r\n.dot\r\nbody\r\n`, 'a@x.test', [
          'r@bench.test',
        ]);
      }
      await send(sink.port, 'Subject: no id\r\n\r\nbody\r\n', 'a@x.test', [
        'first@bench.test',
        'second@bench.test',
      ]);
      const big = Buffer.alloc(10 * 1024 * 1024, 'a');
      for (let i = 0; i < big.length; i += 1000) big.write('\r\n', i);
      await send(sink.port, Buffer.concat([Buffer.from('X-Bench-Id: big\r\n\r\n'), big]), 'a@x.test', [
        'r@bench.test',
      ]);
      const swaks = await runSwaks({ port: sink.port, to: 'sw@bench.test', pipeline: true });
      expect(swaks.exitCode).toBe(0);
      expect(swaks.last.END?.code).toBe(250);

      const st = sink.stats();
      expect(st.messages).toBe(6);
      expect(st.duplicateCount).toBe(0);
      expect([...sink.ids().keys()].sort()).toEqual(
        ['big', 'first@bench.test', 'id-0', 'id-1', 'id-2', 'sw@bench.test'].sort(),
      );
      expect(st.bytes).toBeGreaterThan(10 * 1024 * 1024);
    } finally {
      await sink.close();
    }
  });

  it('handles byte-by-byte input and an empty message', async () => {
    const sink = await startFastSink();
    const { connect } = await import('node:net');
    try {
      const script =
        'EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<one@x>\r\nDATA\r\n.\r\nMAIL FROM:<a@x>\r\nRCPT TO:<two@x>\r\nDATA\r\nX-Bench-Id: b2\r\n\r\nhi\r\n.\r\nQUIT\r\n';
      const got = await new Promise<string>((resolve, reject) => {
        const sock = connect(sink.port, '127.0.0.1');
        let out = '';
        sock.on('data', (d) => {
          out += d;
        });
        sock.on('end', () => resolve(out));
        sock.on('error', reject);
        sock.once('connect', async () => {
          for (const ch of script) {
            sock.write(ch);
            await new Promise((r) => setImmediate(r));
          }
        });
      });
      expect(got.match(/queued as/g)).toHaveLength(2);
      expect([...sink.ids().keys()]).toEqual(['one@x', 'b2']);
    } finally {
      await sink.close();
    }
  });
});

describe("postfix's smtp-sink", () => {
  it('receives from swaks and nodemailer, counted by dump files', async () => {
    const sink = await startSmtpSink();
    try {
      const r = await runSwaks({ port: sink.port, to: 'a@bench.test' });
      expect(r.exitCode).toBe(0);
      await send(sink.port, 'Subject: x\r\n\r\nx\r\n', 'a@x.test', ['b@bench.test']);
      expect(await sink.waitForCount(2)).toBe(2);
      const dumps = await sink.dumps();
      expect(Buffer.concat(dumps).toString('latin1')).toContain('b@bench.test');
    } finally {
      await sink.stop();
    }
  });
});

describe('processes', () => {
  it('parses JSON lines, waits for a port and stops by PID', async () => {
    const port = await freePort();
    const code = `
      const net = require('node:net');
      console.log(JSON.stringify({ msg: 'starting', port: ${port} }));
      net.createServer(() => {}).listen(${port}, '127.0.0.1', () => console.log('plain line'));
      process.on('SIGTERM', () => { console.log(JSON.stringify({ msg: 'bye' })); process.exit(0); });
    `;
    const p = startProcess(process.execPath, ['-e', code], { name: 'child' });
    await p.waitForPort(port);
    expect((await p.waitForLine((l) => l.json?.msg === 'starting')).json?.port).toBe(port);
    await p.waitForLine((l) => l.text === 'plain line');
    expect(await p.stop()).toBe(0);
    expect(await canConnect(port)).toBe(false);
  });
});
