// The real `smtp-server` package as the upstream: a second opinion beside the scripted peer.
import type { AddressInfo } from 'node:net';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { UpstreamTarget } from './connection.ts';
import { UpstreamPool } from './pool.ts';
import { makeTestPki, type TestPki } from './testing/pki.ts';

let pki: TestPki;
beforeAll(() => {
  pki = makeTestPki();
});

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Received {
  from: string;
  to: string[];
  body: Buffer;
}

async function start(opts: Partial<SMTPServerOptions> = {}) {
  const received: Received[] = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH'],
    logger: false,
    size: 1024 * 1024,
    onRcptTo(address, _session, cb) {
      if (address.address.startsWith('nobody@')) {
        const err = Object.assign(new Error('5.1.1 No such user here'), { responseCode: 550 });
        cb(err);
        return;
      }
      cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        received.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((r) => r.address),
          body: Buffer.concat(chunks),
        });
        cb();
      });
    },
    ...opts,
  });
  server.on('error', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.server.address() as AddressInfo).port;
  const pool = new UpstreamPool({ heloName: 'relay.test', commandTimeoutMs: 2000, ca: pki.caCert });
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  cleanups.push(() => pool.close());
  const target = (tls: UpstreamTarget['tls'] = 'none'): UpstreamTarget => ({
    host: '127.0.0.1',
    port,
    tls,
    verify: true,
    serverName: 'localhost',
  });
  return { received, pool, target };
}

describe('against smtp-server', () => {
  it('relays a dot-stuffed message that smtp-server unstuffs, with per-recipient verdicts', async () => {
    const { received, pool, target } = await start();
    const r = await pool.begin(target(), 'sender@example.org', { size: 100, body: '8BITMIME' });
    if (!r.ok) throw new Error('MAIL refused');
    expect((await r.tx.rcpt('a@example.com')).code).toBe(250);
    const no = await r.tx.rcpt('nobody@example.com');
    expect(no).toMatchObject({ code: 550, enhancedCode: '5.1.1', text: 'No such user here' });
    expect((await r.tx.data()).code).toBe(354);
    r.tx.write(Buffer.from('Subject: hi\r\n\r\n..one dot\r\n...two dots\r\n'));
    r.tx.write(Buffer.from('last'));
    expect((await r.tx.end()).code).toBe(250);
    expect(received).toHaveLength(1);
    expect(received[0].from).toBe('sender@example.org');
    expect(received[0].to).toEqual(['a@example.com']);
    expect(received[0].body.toString()).toBe('Subject: hi\r\n\r\n.one dot\r\n..two dots\r\nlast\r\n');
  });

  it('negotiates STARTTLS (required, verified) and delivers several messages on one connection', async () => {
    const { received, pool, target } = await start({ key: pki.key, cert: pki.cert });
    for (let i = 0; i < 3; i++) {
      const r = await pool.begin(target('required'), 'sender@example.org');
      if (!r.ok) throw new Error('MAIL refused');
      await r.tx.rcpt('a@example.com');
      await r.tx.data();
      r.tx.write(Buffer.from(`Subject: ${i}\r\n\r\nbody\r\n`));
      expect((await r.tx.end()).code).toBe(250);
    }
    expect(received.map((m) => m.body.toString())).toEqual(
      [0, 1, 2].map((i) => `Subject: ${i}\r\n\r\nbody\r\n`),
    );
    expect(pool.stats()).toEqual({ open: 1, idle: 1, waiting: 0 });
  });

  it('speaks implicit TLS', async () => {
    const { received, pool, target } = await start({ secure: true, key: pki.key, cert: pki.cert });
    const r = await pool.begin(target('implicit'), '');
    if (!r.ok) throw new Error('MAIL refused');
    await r.tx.rcpt('a@example.com');
    await r.tx.data();
    expect((await r.tx.end()).code).toBe(250);
    expect(received[0]).toMatchObject({ from: '', body: Buffer.alloc(0) });
  });

  it('an aborted transaction delivers nothing', async () => {
    const { received, pool, target } = await start();
    const r = await pool.begin(target(), 'sender@example.org');
    if (!r.ok) throw new Error('MAIL refused');
    await r.tx.rcpt('a@example.com');
    await r.tx.data();
    r.tx.write(Buffer.from('Subject: never\r\n\r\npartial'));
    r.tx.abort();
    await new Promise((res) => setTimeout(res, 50));
    expect(received).toEqual([]);
    expect(pool.stats().open).toBe(0);
  });
});
