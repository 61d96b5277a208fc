import net from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { UpstreamTarget } from './connection.ts';
import { UpstreamError } from './errors.ts';
import { type PoolOptions, type TransactionResult, UpstreamPool } from './pool.ts';
import { ScriptedServer, type ScriptedServerOptions } from './testing/scripted-server.ts';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  vi.restoreAllMocks();
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(serverOpts: ScriptedServerOptions = {}, poolOpts: Partial<PoolOptions> = {}) {
  const server = await ScriptedServer.start(serverOpts);
  const results: TransactionResult[] = [];
  const connects: boolean[] = [];
  const pool = new UpstreamPool({
    heloName: 'relay.test',
    connectTimeoutMs: 1000,
    greetingTimeoutMs: 1000,
    commandTimeoutMs: 1000,
    dataTimeoutMs: 1000,
    onTransaction: (_t, _ms, r) => results.push(r),
    onConnect: (_t, ms, ok) => {
      expect(ms).toBeGreaterThanOrEqual(0);
      connects.push(ok);
    },
    ...poolOpts,
  });
  cleanups.push(() => server.close());
  cleanups.push(() => pool.close());
  const target: UpstreamTarget = { host: '127.0.0.1', port: server.port, tls: 'none', verify: true };
  return { server, pool, target, results, connects };
}

async function deliver(pool: UpstreamPool, target: UpstreamTarget, body = 'hello\r\n') {
  const r = await pool.begin(target, 'sender@example.org');
  if (!r.ok) throw new Error(`MAIL refused: ${r.reply.code}`);
  await r.tx.rcpt('rcpt@example.com');
  await r.tx.data();
  r.tx.write(Buffer.from(body));
  return r.tx.end();
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('UpstreamPool', () => {
  it('reuses one connection across many transactions with flat listener counts', async () => {
    const sockets: net.Socket[] = [];
    const real = net.connect;
    vi.spyOn(net, 'connect').mockImplementation(((...args: Parameters<typeof net.connect>) => {
      const s = real(...args);
      sockets.push(s);
      return s;
    }) as typeof net.connect);
    const { server, pool, target, results, connects } = await setup();
    const counts = () =>
      ['data', 'error', 'close', 'drain', 'end', 'timeout'].map((e) => sockets[0].listenerCount(e)).join(',');
    await deliver(pool, target);
    const baseline = counts();
    for (let i = 0; i < 60; i++) {
      expect((await deliver(pool, target, `message ${i}\r\n`)).code).toBe(250);
      if (i % 10 === 0) {
        const r = await pool.begin(target, 'x@example.org');
        if (r.ok) await r.tx.release();
      }
    }
    expect(counts()).toBe(baseline);
    expect(sockets).toHaveLength(1);
    expect(server.sessions).toHaveLength(1);
    expect(server.sessions[0].messages).toHaveLength(61);
    expect(connects).toEqual([true]);
    expect(results.filter((r) => r.outcome === 'accepted')).toHaveLength(61);
    expect(pool.stats()).toEqual({ open: 1, idle: 1, waiting: 0 });
  });

  it('QUITs and reconnects after maxMessagesPerConnection', async () => {
    const { server, pool, target } = await setup({}, { maxMessagesPerConnection: 2 });
    for (let i = 0; i < 5; i++) await deliver(pool, target);
    await server.waitFor(() => server.openSessions === 1);
    expect(server.sessions.map((s) => s.messages.length)).toEqual([2, 2, 1]);
    expect(server.sessions[0].commands.at(-1)).toBe('QUIT');
    expect(pool.stats()).toEqual({ open: 1, idle: 1, waiting: 0 });
  });

  it('bounds connections per target; waiters get released connections in order', async () => {
    const { server, pool, target } = await setup({}, { maxConnectionsPerTarget: 2 });
    const a = await pool.begin(target, 'a@example.org');
    const b = await pool.begin(target, 'b@example.org');
    const c = pool.begin(target, 'c@example.org');
    const d = pool.begin(target, 'd@example.org');
    await sleep(30);
    expect(pool.stats()).toEqual({ open: 2, idle: 0, waiting: 2 });
    expect(server.sessions).toHaveLength(2);
    if (!a.ok || !b.ok) throw new Error('unexpected refusal');
    await a.tx.data();
    a.tx.write(Buffer.from('x\r\n'));
    await a.tx.end();
    const rc = await c;
    expect(rc.ok).toBe(true);
    expect(pool.stats().waiting).toBe(1);
    b.tx.abort(); // frees a slot: d opens a new connection in it
    const rd = await d;
    expect(rd.ok).toBe(true);
    expect(server.sessions).toHaveLength(3);
    expect(server.sessions[0].count('MAIL')).toBe(2);
    expect(pool.stats()).toEqual({ open: 2, idle: 0, waiting: 0 });
    if (rc.ok) await rc.tx.release();
    if (rd.ok) await rd.tx.release();
    expect(pool.stats()).toEqual({ open: 2, idle: 2, waiting: 0 });
  });

  it('gives up waiting for a connection after acquireTimeoutMs', async () => {
    const { pool, target } = await setup({}, { maxConnectionsPerTarget: 1, acquireTimeoutMs: 100 });
    const a = await pool.begin(target, 'a@example.org');
    const err = await pool.begin(target, 'b@example.org').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UpstreamError);
    expect((err as UpstreamError).kind).toBe('timeout');
    expect(pool.stats().waiting).toBe(0);
    if (a.ok) await a.tx.release();
  });

  it('closes idle connections after idleTimeoutMs', async () => {
    const { server, pool, target } = await setup({}, { idleTimeoutMs: 80 });
    await deliver(pool, target);
    expect(pool.stats().idle).toBe(1);
    await server.waitFor(() => server.sessions[0].closed);
    expect(server.sessions[0].commands.at(-1)).toBe('QUIT');
    await sleep(5);
    expect(pool.stats()).toEqual({ open: 0, idle: 0, waiting: 0 });
    await deliver(pool, target);
    expect(server.sessions).toHaveLength(2);
  });

  it('drops an idle connection the upstream closed, or that got an unsolicited 421', async () => {
    const { server, pool, target } = await setup();
    await deliver(pool, target);
    server.sessions[0].socket.destroy();
    await sleep(30);
    expect(pool.stats()).toEqual({ open: 0, idle: 0, waiting: 0 });
    await deliver(pool, target);
    server.sessions[1].socket.write('421 4.4.2 Idle timeout\r\n');
    await sleep(30);
    expect(pool.stats()).toEqual({ open: 0, idle: 0, waiting: 0 });
    expect((await deliver(pool, target)).code).toBe(250);
    expect(server.sessions).toHaveLength(3);
  });

  it('retries once on a fresh connection when a reused one dies at MAIL FROM', async () => {
    const { server, pool, target, results } = await setup({
      replies: {
        MAIL: (_l, s) => (s.index === 0 && s.count('MAIL') === 2 ? { destroy: true } : '250 2.1.0 Ok'),
      },
    });
    await deliver(pool, target);
    expect((await deliver(pool, target)).code).toBe(250);
    expect(server.sessions).toHaveLength(2);
    expect(server.sessions[1].messages).toHaveLength(1);
    expect(results.map((r) => r.outcome)).toEqual(['accepted', 'accepted']);
  });

  it('retries once on a fresh connection when a reused one answers MAIL with 421', async () => {
    const { server, pool, target } = await setup({
      replies: {
        MAIL: (_l, s) => (s.index === 0 && s.count('MAIL') === 2 ? '421 4.3.2 Bye' : '250 2.1.0 Ok'),
      },
    });
    await deliver(pool, target);
    expect((await deliver(pool, target)).code).toBe(250);
    expect(server.sessions).toHaveLength(2);
  });

  it('does not retry a fresh connection, nor more than once', async () => {
    const { server, pool, target, results } = await setup({
      replies: {
        MAIL: (_l, s) => (s.count('MAIL') >= 2 || s.index > 0 ? { destroy: true } : '250 2.1.0 Ok'),
      },
    });
    await deliver(pool, target);
    const err = await pool.begin(target, 'a@example.org').catch((e: unknown) => e);
    expect((err as UpstreamError).kind).toBe('closed');
    expect(server.sessions).toHaveLength(2);
    const err2 = await pool.begin(target, 'a@example.org').catch((e: unknown) => e);
    expect((err2 as UpstreamError).kind).toBe('closed');
    expect(server.sessions).toHaveLength(3);
    expect(results.map((r) => r.outcome)).toEqual(['accepted', 'failed', 'failed']);
    expect(pool.stats().open).toBe(0);
  });

  it('close() QUITs idle connections, destroys busy ones, fails waiters, and leaves no timers', async () => {
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    const { server, pool, target } = await setup({}, { maxConnectionsPerTarget: 1 });
    const other = { ...target, serverName: 'other.test' };
    await deliver(pool, target);
    const busy = await pool.begin(other, 'b@example.org');
    const waiting = pool.begin(other, 'd@example.org').catch((e: unknown) => e);
    await sleep(10);
    expect(pool.stats()).toEqual({ open: 2, idle: 1, waiting: 1 });
    await pool.close();
    expect(((await waiting) as UpstreamError).kind).toBe('closed');
    expect(pool.stats()).toEqual({ open: 0, idle: 0, waiting: 0 });
    await server.waitFor(() => server.openSessions === 0);
    expect(server.sessions[0].commands.at(-1)).toBe('QUIT');
    expect(server.sessions[1].commands).not.toContain('QUIT');
    if (busy.ok) await expect(busy.tx.rcpt('x@example.com')).rejects.toMatchObject({ kind: 'closed' });
    if (busy.ok) await busy.tx.release();
    await expect(pool.begin(target, 'e@example.org')).rejects.toMatchObject({ kind: 'closed' });
    expect(timers()).toBeLessThanOrEqual(before);
  });

  it('keeps connections to different targets apart', async () => {
    const { server, pool, target } = await setup();
    await deliver(pool, target);
    await deliver(pool, { ...target, serverName: 'other.test' });
    expect(server.sessions).toHaveLength(2);
    expect(pool.stats()).toEqual({ open: 2, idle: 2, waiting: 0 });
  });

  it('survives throwing metrics hooks', async () => {
    const { pool, target } = await setup(
      {},
      {
        onConnect: () => {
          throw new Error('boom');
        },
        onTransaction: () => {
          throw new Error('boom');
        },
      },
    );
    expect((await deliver(pool, target)).code).toBe(250);
  });
});
