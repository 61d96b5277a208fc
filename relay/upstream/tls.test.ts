import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { UpstreamTarget } from './connection.ts';
import { UpstreamError } from './errors.ts';
import { type PoolOptions, UpstreamPool } from './pool.ts';
import { makeTestPki, type TestPki } from './testing/pki.ts';
import { ScriptedServer, type ScriptedServerOptions } from './testing/scripted-server.ts';

let pki: TestPki;
beforeAll(() => {
  pki = makeTestPki();
});

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

type Cert = 'trusted' | 'untrusted' | 'none';

async function setup(
  cert: Cert,
  serverOpts: ScriptedServerOptions = {},
  poolOpts: Partial<PoolOptions> = {},
) {
  const tls =
    cert === 'trusted'
      ? { key: pki.key, cert: pki.cert }
      : cert === 'untrusted'
        ? { key: pki.untrustedKey, cert: pki.untrustedCert }
        : undefined;
  const server = await ScriptedServer.start({ tls, ...serverOpts });
  const pool = new UpstreamPool({
    heloName: 'relay.test',
    connectTimeoutMs: 2000,
    greetingTimeoutMs: 2000,
    commandTimeoutMs: 2000,
    ca: pki.caCert,
    ...poolOpts,
  });
  cleanups.push(() => server.close());
  cleanups.push(() => pool.close());
  const target = (mode: UpstreamTarget['tls'], extra: Partial<UpstreamTarget> = {}): UpstreamTarget => ({
    host: '127.0.0.1',
    port: server.port,
    tls: mode,
    verify: true,
    ...extra,
  });
  return { server, pool, target };
}

async function deliver(pool: UpstreamPool, target: UpstreamTarget, content = 'Subject: t\r\n\r\n..dot\r\n') {
  const r = await pool.begin(target, 'sender@example.org');
  if (!r.ok) throw new Error(`MAIL refused: ${r.reply.code}`);
  await r.tx.rcpt('rcpt@example.com');
  await r.tx.data();
  r.tx.write(Buffer.from(content));
  return r.tx.end();
}

async function failure(p: Promise<unknown>): Promise<UpstreamError> {
  const e = await p.then(
    () => new Error('expected failure'),
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(UpstreamError);
  return e as UpstreamError;
}

describe('TLS modes', () => {
  it('none: never STARTTLS even when advertised', async () => {
    const { server, pool, target } = await setup('trusted');
    expect((await deliver(pool, target('none'))).code).toBe(250);
    expect(server.sessions[0].tls).toBe(false);
    expect(server.sessions[0].commands).not.toContain('STARTTLS');
  });

  it('opportunistic: STARTTLS when advertised, certificate not verified, EHLO again', async () => {
    const { server, pool, target } = await setup('untrusted');
    const content = 'Subject: t\r\n\r\n..stuffed\r\nlast line without CRLF';
    expect((await deliver(pool, target('opportunistic'), content)).code).toBe(250);
    const s = server.sessions[0];
    expect(s.tls).toBe(true);
    expect(s.commands.slice(0, 3)).toEqual(['EHLO relay.test', 'STARTTLS', 'EHLO relay.test']);
    expect(s.messages[0].toString()).toBe(`${content}\r\n`);
  });

  it('opportunistic: plaintext when STARTTLS is not advertised', async () => {
    const { server, pool, target } = await setup('none');
    expect((await deliver(pool, target('opportunistic'))).code).toBe(250);
    expect(server.sessions[0].tls).toBe(false);
  });

  it('opportunistic: a refused STARTTLS is an error, not a downgrade', async () => {
    const { server, pool, target } = await setup('untrusted', {
      replies: { STARTTLS: '454 4.7.0 TLS not available' },
    });
    const err = await failure(pool.begin(target('opportunistic'), 'a@example.org'));
    expect(err.kind).toBe('tls');
    expect(err.reply?.code).toBe(454);
    expect(server.sessions[0].commands).not.toContain('MAIL FROM:<a@example.org>');
  });

  it('refuses bytes smuggled after the STARTTLS 220 (response injection)', async () => {
    const { server, pool, target } = await setup('trusted', {
      replies: { STARTTLS: '220 2.0.0 Go ahead\r\n250 2.1.0 injected' },
    });
    const err = await failure(pool.begin(target('opportunistic'), 'a@example.org'));
    expect(err.kind).toBe('protocol');
    expect(server.sessions[0].commands).toEqual(['EHLO relay.test', 'STARTTLS']);
  });

  it('required: verified against the private CA, by IP SAN or by serverName', async () => {
    const { server, pool, target } = await setup('trusted');
    expect((await deliver(pool, target('required'))).code).toBe(250);
    expect((await deliver(pool, target('required', { serverName: 'localhost' }))).code).toBe(250);
    expect(server.sessions.map((s) => s.tls)).toEqual([true, true]);
  });

  it('required: an untrusted certificate fails with kind tls; verify:false accepts it', async () => {
    const { server, pool, target } = await setup('untrusted');
    const err = await failure(pool.begin(target('required'), 'a@example.org'));
    expect(err.kind).toBe('tls');
    expect(pool.stats().open).toBe(0);
    expect((await deliver(pool, target('required', { verify: false }))).code).toBe(250);
    expect(server.sessions[0].commands).not.toContain('MAIL FROM:<sender@example.org>');
  });

  it('required: a name mismatch fails with kind tls', async () => {
    const { pool, target } = await setup('trusted');
    const err = await failure(
      pool.begin(target('required', { serverName: 'mx.elsewhere.test' }), 'a@example.org'),
    );
    expect(err.kind).toBe('tls');
    expect(err.message).toMatch(/mx\.elsewhere\.test|altname/i);
  });

  it('required: the private CA is needed (default store does not trust it)', async () => {
    const { pool, target } = await setup('trusted', {}, { ca: undefined });
    const err = await failure(pool.begin(target('required'), 'a@example.org'));
    expect(err.kind).toBe('tls');
  });

  it('required: STARTTLS not advertised fails with kind tls before MAIL', async () => {
    const { server, pool, target } = await setup('none');
    const err = await failure(pool.begin(target('required'), 'a@example.org'));
    expect(err.kind).toBe('tls');
    expect(server.sessions[0].commands).toEqual(['EHLO relay.test']);
  });

  it('implicit: TLS from the first byte, verified; untrusted fails; verify:false passes', async () => {
    const trusted = await setup('trusted', { implicit: true });
    expect((await deliver(trusted.pool, trusted.target('implicit'))).code).toBe(250);
    expect(trusted.server.sessions[0].tls).toBe(true);
    expect(trusted.server.sessions[0].messages[0].toString()).toBe('Subject: t\r\n\r\n..dot\r\n');
    const untrusted = await setup('untrusted', { implicit: true });
    expect((await failure(untrusted.pool.begin(untrusted.target('implicit'), 'a@b'))).kind).toBe('tls');
    expect((await deliver(untrusted.pool, untrusted.target('implicit', { verify: false }))).code).toBe(250);
  });

  it('implicit against a plaintext server fails with kind tls or timeout, never plaintext', async () => {
    const { pool, target } = await setup('none', {}, { connectTimeoutMs: 300 });
    const err = await failure(pool.begin(target('implicit'), 'a@example.org'));
    expect(['tls', 'timeout']).toContain(err.kind);
  });

  it('pools TLS connections like plaintext ones', async () => {
    const { server, pool, target } = await setup('trusted');
    for (let i = 0; i < 5; i++) await deliver(pool, target('required'));
    expect(server.sessions).toHaveLength(1);
    expect(server.sessions[0].messages).toHaveLength(5);
  });
});
