// The privacy features through a real relay: real SMTP on loopback (nodemailer → startRelay →
// capture sink), the trace in a real SQLite store. Proves: one metadata-only trace entry per
// transaction and tenant; per-tenant pseudonyms in trace and log line; mail keeps flowing when the
// store is down (drops counted); captures only within scope, with consent, before expiry, up to
// maxMessages; and a capture decrypts byte-identical to what the client sent.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Capture, RelayConfig, Tenant } from '../../contract/config/types.gen.ts';
import { checkConsent } from '../../operator/compile/consent.ts';
import { decryptCapture, generateCaptureKeyPair } from '../../relay/capture/crypto.ts';
import { type Relay, type RelayOptions, startRelay } from '../../relay/relay.ts';
import { forward, relayConfig, splitReceived, tenant } from '../../relay/smtp/testing/harness.ts';
import { openTraceStore } from '../../relay/trace/open.ts';
import { tenantPseudonym } from '../../relay/trace/pseudonym.ts';
import type { TraceStore } from '../../relay/trace/store.ts';
import { type CaptureSink, startCaptureSink } from '../support/capture-sink.ts';

const KEY = 'master-key-0123456789abcdef';
const keys = generateCaptureKeyPair('x25519');

let dir: string;
let up: CaptureSink;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mailplus-privacy-relay-'));
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

let dbN = 0;
interface Started {
  relay: Relay;
  port: number;
  logs: Array<Record<string, unknown>>;
  store: string;
}

async function relayWith(config: RelayConfig, opts: Partial<RelayOptions> = {}): Promise<Started> {
  const logs: Array<Record<string, unknown>> = [];
  const store = `sqlite:${join(dir, `r${++dbN}.db`)}`;
  const relay = await startRelay({
    listen: { host: '127.0.0.1', port: 0 },
    admin: false,
    hostname: 'relay.test',
    config,
    logSink: (line) => logs.push(JSON.parse(line)),
    upstream: { connectTimeoutMs: 2000, commandTimeoutMs: 5000, dataTimeoutMs: 5000, idleTimeoutMs: 1000 },
    traceStore: store,
    pseudonymizeKey: KEY,
    traceWriter: { flushIntervalMs: 50 },
    ...opts,
  });
  cleanups.push(() => relay.close());
  return { relay, port: relay.address().smtp.port, logs, store };
}

async function send(port: number, from: string, to: string[], raw: string | Buffer) {
  const t = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
  try {
    return await t.sendMail({ envelope: { from, to }, raw });
  } finally {
    t.close();
  }
}

async function withStore<T>(where: string, fn: (s: TraceStore) => Promise<T>): Promise<T> {
  const s = await openTraceStore(where);
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

function consent(over: Record<string, unknown> = {}, now = Date.now()): Capture {
  const r = checkConsent(
    'acme',
    {
      scope: ['support@acme.example'],
      consentReference: 'TICKET-42',
      approvedBy: 'dpo@acme.example',
      expiresAt: new Date(now + 3600_000).toISOString(),
      maxMessages: 10,
      publicKey: keys.publicKey,
      ...over,
    },
    ['acme.example'],
    now,
  );
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.capture;
}

const acme = (extra: Partial<Tenant> = {}) =>
  tenant('acme', ['acme.example'], [forward('acme/all', ['*@acme.example'], [up.port])], extra);
const other = (extra: Partial<Tenant> = {}) =>
  tenant('other', ['other.example'], [forward('other/all', ['*@other.example'], [up.port])], extra);

const SECRET = 'Subject: the secret subject line\r\nX-Header: private header\r\n\r\nconfidential body\r\n';
const msg = (to: string) => `From: a@sender.example\r\nTo: ${to}\r\n${SECRET}`;

describe('message trace through the relay', () => {
  it('records one metadata-only entry per transaction and tenant; never content, subject or headers', async () => {
    const { relay, port, store } = await relayWith(
      relayConfig([acme(), other({ privacy: { retentionSeconds: 7200 } })]),
    );
    await send(
      port,
      'A@Sender.example',
      ['x@acme.example', 'y@other.example', 'z@nowhere.example'],
      msg('x@acme.example'),
    ).catch(() => undefined);
    await relay.flushTrace();
    const entries = await withStore(store, (s) => s.query({}));
    expect(entries.map((e) => e.tenant).sort()).toEqual(['', 'acme', 'other']);
    const a = entries.find((e) => e.tenant === 'acme');
    expect(a).toMatchObject({
      route: 'acme/all',
      clientIp: '127.0.0.1',
      tls: false,
      sender: 'A@sender.example', // as smtp-server hands it over (domain lower-cased)
      recipients: [{ address: 'x@acme.example', result: 'accepted', code: 250 }],
      upstream: `127.0.0.1:${up.port}`,
      result: 'relayed',
      code: 250,
    });
    expect(a?.size).toBeGreaterThan(0);
    expect(a?.txid).toMatch(/^[0-9a-f]{16}$/);
    const o = entries.find((e) => e.tenant === 'other');
    expect(o?.recipients).toEqual([{ address: 'y@other.example', result: 'accepted', code: 250 }]);
    // retention per tenant: other keeps 2 h, acme the default 30 days
    expect(Date.parse(o?.expiresAt ?? '') - Date.parse(o?.time ?? '')).toBe(7200_000);
    expect(Date.parse(a?.expiresAt ?? '') - Date.parse(a?.time ?? '')).toBe(720 * 3600_000);
    expect(entries.find((e) => e.tenant === '')?.recipients[0]).toMatchObject({
      address: 'z@nowhere.example',
      result: 'rejected',
    });
    await relay.close();
    const bytes = await readFile(store.slice('sqlite:'.length));
    for (const s of ['secret subject', 'private header', 'confidential body'])
      expect(bytes.includes(s)).toBe(false);
  });

  it('pseudonymises a tenant’s addresses in its trace entries and log lines when it asks', async () => {
    const { relay, port, logs, store } = await relayWith(
      relayConfig([acme({ privacy: { pseudonymize: true } }), other()]),
    );
    await send(port, 'a@sender.example', ['x@acme.example'], msg('x@acme.example'));
    await send(port, 'a@sender.example', ['y@other.example'], msg('y@other.example'));
    await relay.flushTrace();
    expect(
      await relay.metrics.registry.getSingleMetricAsString('mailplus_relay_trace_written_total'),
    ).toMatch(/ 2$/m);
    const entries = await withStore(store, (s) => s.query({}));
    const a = entries.find((e) => e.tenant === 'acme');
    expect(a?.sender).toBe(tenantPseudonym(KEY, 'acme', 'a@sender.example'));
    expect(a?.recipients[0].address).toBe(tenantPseudonym(KEY, 'acme', 'x@acme.example'));
    expect(entries.find((e) => e.tenant === 'other')?.sender).toBe('a@sender.example');
    const lines = logs.filter((l) => l.msg === 'transaction');
    expect(lines[0]).toMatchObject({
      sender: tenantPseudonym(KEY, 'acme', 'a@sender.example'),
      recipients: [{ address: tenantPseudonym(KEY, 'acme', 'x@acme.example'), result: 'accepted' }],
    });
    expect(JSON.stringify(lines[0])).not.toContain('x@acme.example');
    // the other tenant did not ask: its line keeps the relay-wide behaviour (keyed relay → h: tokens)
    expect(lines[1].recipients).toEqual([
      expect.objectContaining({ address: expect.stringMatching(/^h:[0-9a-f]{16}@other\.example$/) }),
    ]);
  });

  it('keeps mail flowing when the store is down: entries buffered, overflow dropped and counted', async () => {
    let attempts = 0;
    const { relay, port } = await relayWith(relayConfig([acme()]), {
      traceStore: async () => {
        attempts++;
        throw new Error('connection refused');
      },
      traceWriter: { maxBuffer: 2, flushIntervalMs: 20, retryMs: 10 },
    });
    for (let i = 0; i < 4; i++) {
      const info = await send(port, 'a@sender.example', ['x@acme.example'], msg('x@acme.example'));
      expect(info.response).toMatch(/^250/);
    }
    await up.waitForMessages(4);
    const text = await relay.metrics.registry.metrics();
    expect(text).toMatch(/mailplus_relay_trace_dropped_total\{reason="buffer_full"\} 2/);
    expect(text).toMatch(/mailplus_relay_trace_buffer_entries 2/);
    expect(attempts).toBeGreaterThan(0);
  });
});

describe('consent-gated capture through the relay', () => {
  async function captures(store: string, tenantName = 'acme') {
    return withStore(store, async (s) => {
      const out: Buffer[] = [];
      for (const c of await s.listCaptures(tenantName)) {
        const parts: Buffer[] = [];
        for await (const p of (await s.readCapture(tenantName, c.id)) as AsyncIterable<Buffer>) parts.push(p);
        out.push(Buffer.concat(parts));
      }
      return out;
    });
  }

  it('a captured message decrypts byte-identical to what the client sent (dot lines, 8-bit, several chunks)', async () => {
    const { relay, port, store } = await relayWith(relayConfig([acme({ capture: consent() })]));
    const body: string[] = [];
    for (let i = 0; i < 6000; i++)
      body.push(
        i % 7 === 0 ? `.dot line ${i}` : i % 11 === 0 ? '..' : `line ${i} ÄÖÜ ✓ ${'x'.repeat(i % 50)}`,
      );
    const raw = Buffer.from(
      `From: a@sender.example\r\nTo: support@acme.example\r\nSubject: help\r\n\r\n.first\r\n${body.join('\r\n')}\r\n.\r\n`,
    );
    expect(raw.length).toBeGreaterThan(200_000);
    await send(port, 'a@sender.example', ['support@acme.example'], raw);
    const [delivered] = await up.waitForMessages(1);
    await relay.flushTrace();
    const caps = await captures(store);
    expect(caps).toHaveLength(1);
    expect(caps[0].includes(Buffer.from('dot line 7'))).toBe(false); // encrypted at rest
    const plain = decryptCapture(keys.privateKey, caps[0]);
    expect(plain.equals(raw)).toBe(true);
    // delivered: the relay's Received header, then exactly the captured client message
    const { received, rest } = splitReceived(delivered.data);
    expect(received).toMatch(/^Received: from /);
    expect(plain.equals(rest)).toBe(true);
    const text = await relay.metrics.registry.metrics();
    expect(text).toMatch(/mailplus_relay_captures_total\{tenant="acme",result="stored"\} 1/);
  });

  it('captures nothing outside scope, for mixed recipients, or for a tenant without consent', async () => {
    const { relay, port, store } = await relayWith(relayConfig([acme({ capture: consent() }), other()]));
    await send(port, 'a@sender.example', ['sales@acme.example'], msg('sales@acme.example'));
    await send(
      port,
      'a@sender.example',
      ['support@acme.example', 'sales@acme.example'],
      msg('support@acme.example'),
    );
    await send(
      port,
      'a@sender.example',
      ['support@acme.example', 'y@other.example'],
      msg('support@acme.example'),
    );
    await send(port, 'a@sender.example', ['y@other.example'], msg('y@other.example'));
    await up.waitForMessages(4);
    await relay.flushTrace();
    expect(await captures(store)).toHaveLength(0);
    expect(await captures(store, 'other')).toHaveLength(0);
  });

  it('captures nothing before the consent is in the config, and starts with it', async () => {
    const { relay, port, store } = await relayWith(relayConfig([acme()]));
    await send(port, 'a@sender.example', ['support@acme.example'], msg('support@acme.example'));
    await relay.flushTrace();
    expect(await captures(store)).toHaveLength(0);
    expect(relay.applyConfig(relayConfig([acme({ capture: consent() })])).ok).toBe(true);
    await send(port, 'a@sender.example', ['support@acme.example'], msg('support@acme.example'));
    await relay.flushTrace();
    expect(await captures(store)).toHaveLength(1);
  });

  it('stops the moment the consent expires (checked per message, not on reload)', async () => {
    let now = Date.now();
    const c = consent({ expiresAt: new Date(now + 60_000).toISOString() }, now);
    const { relay, port, store } = await relayWith(relayConfig([acme({ capture: c })]), { now: () => now });
    await send(port, 'a@sender.example', ['support@acme.example'], msg('support@acme.example'));
    await relay.flushTrace();
    expect(await captures(store)).toHaveLength(1);
    now += 60_000; // the same config, now past expiresAt
    await send(port, 'a@sender.example', ['support@acme.example'], msg('support@acme.example'));
    await relay.flushTrace();
    expect(await captures(store)).toHaveLength(1);
    await up.waitForMessages(2); // mail itself is unaffected
  });

  it('captures at most maxMessages', async () => {
    const { relay, port, store } = await relayWith(
      relayConfig([acme({ capture: consent({ maxMessages: 2 }) })]),
    );
    for (let i = 0; i < 4; i++)
      await send(port, 'a@sender.example', ['support@acme.example'], msg('support@acme.example'));
    await up.waitForMessages(4);
    await relay.flushTrace();
    expect(await captures(store)).toHaveLength(2);
    expect(await relay.metrics.registry.metrics()).toMatch(
      /mailplus_relay_captures_total\{tenant="acme",result="quota_exhausted"\} 2/,
    );
  });

  it('a message the upstream never got in full (too big) is not kept', async () => {
    const { relay, port, store } = await relayWith(
      relayConfig([acme({ capture: consent(), limits: { maxMessageSize: 1000 } })]),
    );
    await expect(
      send(
        port,
        'a@sender.example',
        ['support@acme.example'],
        msg('support@acme.example') + 'x'.repeat(5000),
      ),
    ).rejects.toThrow(/552|size/i);
    await relay.flushTrace();
    expect(await captures(store)).toHaveLength(0);
  });
});
