// Fairness limits through a real relay over loopback (raw sockets from several 127.0.0.0/8
// addresses, nodemailer as the well-behaved sender, the capture sink as upstream): hostile clients
// that hold upstream connections, open many connections or send thousands of refused recipients
// must not starve other senders or grow the relay's records without bound.
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { renderTable } from '../../cli/commands/trace.ts';
import type { RelayConfig } from '../../contract/config/types.gen.ts';
import { type CaptureSink, startCaptureSink } from '../../test/support/capture-sink.ts';
import { type Relay, type RelayOptions, startRelay } from '../relay.ts';
import { openTraceStore } from '../trace/open.ts';
import { entrySize, TraceWriter } from '../trace/writer.ts';
import { forward, RawClient, relayConfig, sleep, tenant } from './testing/harness.ts';

// the defaults (relay/smtp/fairness.ts DEFAULT_FAIRNESS), written out: a changed default shows here
const UPSTREAM_PER_CLIENT = 20;
const CONNECTIONS_PER_CLIENT = 50;

let dir: string;
let up: CaptureSink;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mailplus-fairness-'));
  up = await startCaptureSink();
});
afterAll(async () => {
  await up?.close();
  await rm(dir, { recursive: true, force: true });
});
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  up.reset();
});

const acme = () =>
  relayConfig([tenant('acme', ['acme.example'], [forward('acme/all', ['*@acme.example'], [up.port])])]);

async function relayWith(
  config: RelayConfig,
  opts: Partial<RelayOptions> = {},
): Promise<{ relay: Relay; port: number; logs: Array<Record<string, unknown>> }> {
  const logs: Array<Record<string, unknown>> = [];
  const relay = await startRelay({
    listen: { host: '127.0.0.1', port: 0 },
    admin: false,
    hostname: 'relay.test',
    config,
    logSink: (line) => logs.push(JSON.parse(line)),
    upstream: { connectTimeoutMs: 2000, commandTimeoutMs: 5000, dataTimeoutMs: 5000, idleTimeoutMs: 1000 },
    ...opts,
  });
  cleanups.push(() => relay.close());
  return { relay, port: relay.address().smtp.port, logs };
}

/** A raw SMTP client whose connection comes from `from` (any 127.0.0.0/8 address is ours on Linux). */
function connectFrom(port: number, from: string): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: from }, () =>
      resolve(new RawClient(socket)),
    );
    socket.once('error', reject);
  });
}

/** The well-behaved sender: nodemailer from 127.0.0.1, timed. */
async function send(port: number, to: string) {
  const t = nodemailer.createTransport({
    host: '127.0.0.1',
    port,
    secure: false,
    ignoreTLS: true,
    connectionTimeout: 20_000,
    greetingTimeout: 20_000,
    socketTimeout: 20_000,
  });
  const started = performance.now();
  try {
    const info = await t.sendMail({
      envelope: { from: 'a@sender.example', to: [to] },
      raw: `From: a@sender.example\r\nTo: ${to}\r\nSubject: fair\r\n\r\nhello\r\n`,
    });
    return { response: info.response, ms: performance.now() - started };
  } catch (err) {
    return { response: (err as Error & { response?: string }).response ?? String(err), ms: 0 };
  } finally {
    t.close();
  }
}

async function metric(relay: Relay, limit: string): Promise<number> {
  const m = await relay.metrics.limitHitsTotal.get();
  return m.values.find((v) => v.labels.limit === limit)?.value ?? 0;
}

type Held = Awaited<ReturnType<typeof holder>>;

/** Opens a session that holds an upstream connection: MAIL + an accepted RCPT, then keeps quiet. */
async function holder(port: number, from: string, n: number) {
  const c = await connectFrom(port, from);
  cleanups.push(() => c.close());
  await c.hello();
  await c.cmd('MAIL FROM:<idle@hostile.example>');
  return { client: c, rcpt: await c.cmd(`RCPT TO:<held${n}@acme.example>`) };
}

describe('item 1: upstream pool exhaustion by idle sessions', () => {
  it('50 idle holders from one address (defaults): 20 hold an upstream, the rest get 450 4.7.1, others still get through at once', async () => {
    const { relay, port } = await relayWith(acme());
    const holders: Held[] = [];
    for (let i = 0; i < 50; i++) holders.push(await holder(port, '127.0.0.2', i));
    const accepted = holders.filter((h) => h.rcpt?.code === 250);
    const refused = holders.filter((h) => h.rcpt?.code === 450);
    expect(accepted).toHaveLength(UPSTREAM_PER_CLIENT);
    expect(refused).toHaveLength(50 - UPSTREAM_PER_CLIENT);
    expect(refused[0].rcpt?.lines[0]).toBe('4.7.1 Error: too much mail from 127.0.0.2');
    // the holders keep their sessions alive the way the attack does
    for (const h of holders) h.client.write('NOOP\r\n');
    const r = await send(port, 'x@acme.example');
    expect(r.response).toMatch(/^250/);
    expect(r.ms).toBeLessThan(5000);
    expect(await metric(relay, 'upstream_per_client')).toBe(30);
  });

  it('holders spread over 50 addresses are released after the hold time (NOOP is no progress): 421 4.4.2, pool free again', async () => {
    const { relay, port } = await relayWith(acme(), { fairness: { upstreamHoldMs: 1000 } });
    const holders: Held[] = [];
    for (let i = 0; i < 50; i++) holders.push(await holder(port, `127.0.1.${i + 1}`, i));
    expect(holders.every((h) => h.rcpt?.code === 250)).toBe(true);
    const started = performance.now();
    const noops = setInterval(() => {
      for (const h of holders) if (!h.client.socket.destroyed) h.client.write('NOOP\r\n');
    }, 200);
    cleanups.push(() => clearInterval(noops));
    const r = await send(port, 'x@acme.example');
    expect(r.response).toMatch(/^250/);
    // the pool's own wait for a free connection is 10 s; the hold time frees them well before
    expect(performance.now() - started).toBeLessThan(5000);
    for (const h of holders) {
      await h.client.closed;
    }
    clearInterval(noops);
    expect(await metric(relay, 'upstream_hold_time')).toBe(50);
    // every holder saw its NOOPs answered, then the 421 of the hold limit as the last reply
    const last = [];
    for (let i = 0; i < 200; i++) {
      const reply = await holders[0].client.read(100).catch(() => undefined);
      if (!reply) break;
      last.push(reply);
    }
    expect(last.at(-1)?.code).toBe(421);
    expect(last.at(-1)?.lines[0]).toBe('4.4.2 relay.test Error: timeout exceeded');
  });

  it('a sender that makes progress is not cut: RCPTs every 600 ms with a 1 s hold time, then DATA, is relayed', async () => {
    const { port } = await relayWith(acme(), { fairness: { upstreamHoldMs: 1000 } });
    const c = await connectFrom(port, '127.0.0.3');
    cleanups.push(() => c.close());
    await c.hello();
    expect((await c.cmd('MAIL FROM:<slow@sender.example>'))?.code).toBe(250);
    for (let i = 0; i < 3; i++) {
      expect((await c.cmd(`RCPT TO:<slow${i}@acme.example>`))?.code).toBe(250);
      await sleep(600);
    }
    expect((await c.cmd('DATA'))?.code).toBe(354);
    expect((await c.cmd('Subject: slow\r\n\r\nbody\r\n.'))?.code).toBe(250);
    expect(await up.waitForMessages(1)).toHaveLength(1);
  });

  it('per-tenant share: the limit of one tenant leaves the others alone (451 4.4.5)', async () => {
    const config = relayConfig([
      tenant('acme', ['acme.example'], [forward('acme/all', ['*@acme.example'], [up.port])]),
      tenant('beta', ['beta.example'], [forward('beta/all', ['*@beta.example'], [up.port])]),
    ]);
    const { relay, port } = await relayWith(config, { fairness: { upstreamPerTenant: 3 } });
    const held: Held[] = [];
    for (let i = 0; i < 4; i++) held.push(await holder(port, `127.0.2.${i + 1}`, i));
    expect(held.map((h) => h.rcpt?.code)).toEqual([250, 250, 250, 451]);
    expect(held[3].rcpt?.lines[0]).toBe(
      '4.4.5 Error: too many concurrent transactions for this domain, try again later',
    );
    expect((await send(port, 'y@beta.example')).response).toMatch(/^250/);
    expect(await metric(relay, 'upstream_per_tenant')).toBe(1);
    // a holder that leaves gives its share back
    held[0].client.write('QUIT\r\n');
    await held[0].client.closed;
    expect((await send(port, 'z@acme.example')).response).toMatch(/^250/);
  });
});

describe('item 2: connections per client address and per network', () => {
  it('one address opening 300 connections (max-clients 300) gets 421 4.7.0 past 50; everyone else still gets in', async () => {
    const { relay, port } = await relayWith(acme(), { maxClients: 300 });
    const clients: RawClient[] = [];
    for (let i = 0; i < 300; i++) {
      const c = await connectFrom(port, '127.0.0.4');
      cleanups.push(() => c.close());
      clients.push(c);
    }
    const greetings = await Promise.all(clients.map((c) => c.read(10_000)));
    expect(greetings.filter((g) => g?.code === 220)).toHaveLength(CONNECTIONS_PER_CLIENT);
    const refused = greetings.filter((g) => g?.code === 421);
    expect(refused).toHaveLength(300 - CONNECTIONS_PER_CLIENT);
    expect(refused[0]?.lines[0]).toBe('4.7.0 relay.test Error: too many connections from 127.0.0.4');
    expect((await send(port, 'x@acme.example')).response).toMatch(/^250/);
    expect(await metric(relay, 'connections_per_client')).toBe(250);
    // the count follows live connections: one closed, one more admitted
    clients[0].close();
    await clients[0].closed;
    await sleep(50);
    const again = await connectFrom(port, '127.0.0.4');
    cleanups.push(() => again.close());
    expect((await again.read())?.code).toBe(220);
  });

  it('a /24 is one network: 30 addresses with one connection each, limit 20 per network', async () => {
    const { relay, port } = await relayWith(acme(), { fairness: { connectionsPerNetwork: 20 } });
    const greetings = [];
    for (let i = 1; i <= 30; i++) {
      const c = await connectFrom(port, `127.0.7.${i}`);
      cleanups.push(() => c.close());
      greetings.push(await c.read());
    }
    expect(greetings.filter((g) => g?.code === 220)).toHaveLength(20);
    expect(greetings[20]?.lines[0]).toBe('4.7.0 relay.test Error: too many connections from 127.0.7.21');
    const other = await connectFrom(port, '127.0.8.1');
    cleanups.push(() => other.close());
    expect((await other.read())?.code).toBe(220);
    expect(await metric(relay, 'connections_per_network')).toBe(10);
  });

  it('exempt clients (--client-limit-exempt) are not counted', async () => {
    const { port } = await relayWith(acme(), {
      fairness: { connectionsPerClient: 2 },
      fairnessExempt: ['127.0.9.0/24'],
    });
    for (let i = 0; i < 5; i++) {
      const c = await connectFrom(port, '127.0.9.1');
      cleanups.push(() => c.close());
      expect((await c.read())?.code).toBe(220);
    }
  });
});

describe('item 3: per-transaction records are bounded', () => {
  /** One session, one transaction: `n` RCPTs pipelined (the relay answers them in order). */
  async function junk(port: number, rcpts: string[], from = '127.0.0.5') {
    const c = await connectFrom(port, from);
    cleanups.push(() => c.close());
    await c.hello();
    expect((await c.cmd('MAIL FROM:<junk@hostile.example>'))?.code).toBe(250);
    c.write(rcpts.map((r) => `RCPT TO:<${r}>\r\n`).join(''));
    const codes: number[] = [];
    for (const _ of rcpts) codes.push((await c.read(20_000))?.code ?? 0);
    // RSET ends the transaction (its log line and trace entry) before its reply
    expect((await c.cmd('RSET'))?.code).toBe(250);
    expect((await c.cmd('QUIT'))?.code).toBe(221);
    return codes;
  }

  it('a junk session is slowed after 10 errors and disconnected after 20 (Postfix soft/hard error limits)', async () => {
    const { relay, port } = await relayWith(acme(), { fairness: { errorSleepMs: 200 } });
    const c = await connectFrom(port, '127.0.0.6');
    cleanups.push(() => c.close());
    await c.hello();
    expect((await c.cmd('MAIL FROM:<junk@hostile.example>'))?.code).toBe(250);
    const started = performance.now();
    c.write(Array.from({ length: 1000 }, (_, i) => `RCPT TO:<u${i}@unheld.example>\r\n`).join(''));
    const replies = [];
    for (let i = 0; i < 1000; i++) {
      const r = await c.read(5000);
      if (!r) break;
      replies.push(r);
    }
    expect(replies.slice(0, 20).every((r) => r.code === 550)).toBe(true);
    expect(replies).toHaveLength(21);
    expect(replies[20].code).toBe(421);
    expect(replies[20].lines[0]).toBe('4.7.0 relay.test Error: too many errors');
    // errors 11 to 20 waited 200 ms each
    expect(performance.now() - started).toBeGreaterThanOrEqual(10 * 200 - 50);
    await c.closed;
    expect(await metric(relay, 'errors_per_session')).toBe(1);
    expect(await metric(relay, 'error_sleep')).toBe(10);
  });

  it('a delivered message resets the error count (errors "without delivering mail")', async () => {
    const { port } = await relayWith(acme(), { fairness: { softErrorLimit: 0, hardErrorLimit: 3 } });
    const c = await connectFrom(port, '127.0.0.7');
    cleanups.push(() => c.close());
    await c.hello();
    for (let round = 0; round < 3; round++) {
      expect((await c.cmd('MAIL FROM:<a@sender.example>'))?.code).toBe(250);
      expect((await c.cmd('RCPT TO:<x@unheld.example>'))?.code).toBe(550);
      expect((await c.cmd('RCPT TO:<y@unheld.example>'))?.code).toBe(550);
      expect((await c.cmd('RCPT TO:<ok@acme.example>'))?.code).toBe(250);
      expect((await c.cmd('DATA'))?.code).toBe(354);
      expect((await c.cmd('Subject: x\r\n\r\nbody\r\n.'))?.code).toBe(250);
    }
    expect(await up.waitForMessages(3)).toHaveLength(3);
  });

  it('5,000 refused RCPTs (error limits off): the log line and the trace row keep 100 and count the rest', async () => {
    const store = `sqlite:${join(dir, 'junk.db')}`;
    // the error limits would end this session after 20 refusals; with them off (a sender exempted
    // by raising them), the recorded-recipients limit still bounds what one transaction leaves behind
    const { relay, port, logs } = await relayWith(acme(), {
      traceStore: store,
      traceWriter: { flushIntervalMs: 50 },
      fairness: { softErrorLimit: 0, hardErrorLimit: 0 },
    });
    const rcpts = Array.from({ length: 5000 }, (_, i) => `u${i}@unheld${i % 7}.example`);
    const codes = await junk(port, [...rcpts, 'ok@acme.example']);
    expect(codes.filter((c) => c === 550 || c === 554)).toHaveLength(5000);
    expect(codes.at(-1)).toBe(250);
    await relay.flushTrace();
    const line = logs.find((l) => l.msg === 'transaction') as Record<string, unknown> & {
      recipients: unknown[];
      recipientsNotRecorded: Array<{ result: string; count: number }>;
    };
    // 100 refused ones, and the accepted one past the limit (accepted recipients are always recorded)
    expect(line.recipients).toHaveLength(101);
    expect(line.recipientsNotRecorded.reduce((n, r) => n + r.count, 0)).toBe(4900);
    expect(JSON.stringify(line).length).toBeLessThan(20_000);
    const s = await openTraceStore(store);
    try {
      const all = await s.query({ limit: 10 });
      const rows = all.flatMap((e) => e.recipients);
      expect(rows.filter((r) => r.omitted === undefined)).toHaveLength(101);
      expect(rows.filter((r) => r.omitted !== undefined).reduce((n, r) => n + (r.omitted ?? 0), 0)).toBe(
        4900,
      );
      expect(rows.some((r) => r.address === 'ok@acme.example' && r.result === 'accepted')).toBe(true);
      // what `mailplus trace` shows for the marker
      expect(renderTable(all)).toContain('+4900 not recorded(550)');
      expect(JSON.stringify(all).length).toBeLessThan(30_000);
    } finally {
      await s.close();
    }
    expect(await metric(relay, 'recorded_recipients')).toBe(4900);
  });

  it('accepted recipients per transaction stop at the limit with 452 4.5.3 Error: too many recipients', async () => {
    const { relay, port } = await relayWith(acme(), { fairness: { recipientsPerTransaction: 3 } });
    const codes = await junk(
      port,
      Array.from({ length: 5 }, (_, i) => `r${i}@acme.example`),
    );
    expect(codes).toEqual([250, 250, 250, 452, 452]);
    expect(await metric(relay, 'recipients_per_transaction')).toBe(2);
  });

  it('the trace buffer is bounded in bytes while the store is unreachable', async () => {
    const dropped: number[] = [];
    const w = new TraceWriter({
      open: async () => {
        throw new Error('connection refused');
      },
      maxBufferBytes: 64 * 1024,
      retryMs: 10_000,
      metrics: { written: () => {}, dropped: (n) => dropped.push(n), buffered: () => {} },
    });
    cleanups.push(() => w.close(0));
    const big = (i: number) => ({
      time: new Date().toISOString(),
      txid: `t${i}`,
      tenant: '',
      route: '',
      clientIp: '127.0.0.1',
      tls: false,
      sender: 'a@b.example',
      recipients: Array.from({ length: 100 }, (_, j) => ({
        address: `user${j}@unheld.example`,
        result: 'rejected' as const,
        code: 550,
      })),
      size: 0,
      upstream: '',
      result: 'abandoned' as const,
      code: 0,
      durationMs: 1,
    });
    // the size estimate (no serialising on the mail path) stays close to the JSON size
    const json = Buffer.byteLength(JSON.stringify(big(0)));
    expect(entrySize(big(0))).toBeGreaterThan(json * 0.8);
    expect(entrySize(big(0))).toBeLessThan(json * 1.5);
    for (let i = 0; i < 1000; i++) w.record(big(i), Date.now() + 60_000);
    expect(w.bufferedBytes).toBeLessThanOrEqual(64 * 1024);
    expect(w.buffered).toBeGreaterThan(0);
    expect(w.buffered + dropped.length).toBe(1000);
  });
});
