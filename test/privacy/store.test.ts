// The trace store against both backends: SQLite (node:sqlite, a temp file) and a real PostgreSQL
// server started for this file (test/support/postgres.ts). Same assertions on both.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TraceEntry } from '../../relay/trace/entry.ts';
import { openTraceStore, parseStoreLocation } from '../../relay/trace/open.ts';
import { addressForms, tenantPseudonym } from '../../relay/trace/pseudonym.ts';
import type { TraceStore } from '../../relay/trace/store.ts';
import { TraceWriter } from '../../relay/trace/writer.ts';
import { type PostgresServer, startPostgres } from '../support/postgres.ts';

const KEY = 'master-key-0123456789abcdef';
const T0 = Date.parse('2025-03-01T12:00:00Z');
const H = 3600_000;

let pgServer: PostgresServer | undefined;
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mailplus-store-'));
  pgServer = await startPostgres();
});
afterAll(async () => {
  await pgServer?.stop();
  await rm(dir, { recursive: true, force: true });
});

let n = 0;
const backends: Array<[string, () => Promise<string>]> = [
  ['sqlite', async () => `sqlite:${join(dir, `t${++n}.db`)}`],
  ['postgres', async () => (pgServer as PostgresServer).createDatabase()],
];

function entry(over: Partial<TraceEntry> = {}): TraceEntry {
  return {
    time: new Date(T0).toISOString(),
    txid: 'tx1',
    tenant: 'a',
    route: 'a/all',
    clientIp: '192.0.2.1',
    tls: false,
    sender: 'alice@outside.example',
    recipients: [{ address: 'bob@a.example', result: 'accepted', code: 250 }],
    size: 42,
    upstream: '127.0.0.1:25',
    result: 'relayed',
    code: 250,
    durationMs: 5,
    ...over,
  };
}

/** What erase() reports about the files when the scrub succeeded, per backend. */
function scrubbed(backend: string) {
  return backend === 'sqlite'
    ? {
        scrubbed: true,
        done: ['deleted rows overwritten with zeros (secure_delete)', 'VACUUM', 'WAL checkpoint (TRUNCATE)'],
        remains: [],
      }
    : {
        scrubbed: true,
        done: ['VACUUM FULL trace_entries, trace_addresses, captures, capture_chunks', 'CHECKPOINT'],
        remains: [expect.stringMatching(/^PostgreSQL WAL segments/), expect.stringMatching(/^backups/)],
      };
}

describe.each(backends)('trace store: %s', (backend, location) => {
  let store: TraceStore;
  const open = async () => {
    store = await openTraceStore(await location());
    return store;
  };
  const cleanup = async () => store?.close();

  it('stores, finds by address in any role, filters, and erases with per-tenant counts', async () => {
    await open();
    try {
      const p = (a: string) => tenantPseudonym(KEY, 'p', a);
      await store.insert([
        { entry: entry(), expiresMs: T0 + 720 * H },
        {
          entry: entry({
            txid: 'tx2',
            tenant: 'b',
            sender: 'Bob@A.example',
            recipients: [{ address: 'carol@b.example', result: 'accepted', code: 250 }],
            time: new Date(T0 + H).toISOString(),
            result: 'deferred',
            code: 451,
          }),
          expiresMs: T0 + 720 * H,
        },
        {
          entry: entry({
            txid: 'tx3',
            tenant: 'p',
            sender: p('alice@outside.example'),
            recipients: [{ address: p('bob@a.example'), result: 'rejected', code: 550, reason: 'no_route' }],
          }),
          expiresMs: T0 + 720 * H,
        },
        {
          entry: entry({
            txid: 'tx4',
            sender: '<>',
            recipients: [{ address: 'dave@a.example', result: 'accepted', code: 250 }],
          }),
          expiresMs: T0 + 720 * H,
        },
      ]);
      const all = await store.query({});
      expect(all.map((e) => e.txid)).toEqual(['tx1', 'tx3', 'tx4', 'tx2']);
      expect(all[0]).toMatchObject({ ...entry(), expiresAt: new Date(T0 + 720 * H).toISOString() });
      expect(typeof all[0].id).toBe('number');
      expect(all[2].recipients).toEqual([{ address: 'dave@a.example', result: 'accepted', code: 250 }]);

      // bob: recipient in tx1, sender in tx2 (case-insensitive), and pseudonymised in tx3 (only with the key)
      const plain = addressForms('BOB@a.example', [], undefined);
      expect((await store.query({ addresses: plain })).map((e) => e.txid)).toEqual(['tx1', 'tx2']);
      const keyed = addressForms('bob@a.example', await store.tenants(), KEY);
      expect((await store.query({ addresses: keyed })).map((e) => e.txid)).toEqual(['tx1', 'tx3', 'tx2']);
      // a pseudonym only counts for its own tenant
      expect(await store.query({ addresses: [{ tenant: 'a', address: p('bob@a.example') }] })).toEqual([]);

      expect((await store.query({ tenant: 'b' })).map((e) => e.txid)).toEqual(['tx2']);
      expect((await store.query({ result: 'deferred' })).map((e) => e.txid)).toEqual(['tx2']);
      expect((await store.query({ sinceMs: T0 + 1 })).map((e) => e.txid)).toEqual(['tx2']);
      expect((await store.query({ untilMs: T0 + 1 })).map((e) => e.txid)).toEqual(['tx1', 'tx3', 'tx4']);
      expect(await store.query({ limit: 1 })).toHaveLength(1);
      expect(await store.tenants()).toEqual(['a', 'b', 'p']);

      const report = await store.erase(keyed);
      expect(report).toEqual({ entries: { a: 1, b: 1, p: 1 }, captures: {}, disk: scrubbed(backend) });
      expect((await store.query({})).map((e) => e.txid)).toEqual(['tx4']);
      expect(await store.query({ addresses: keyed })).toEqual([]);
      expect(await store.erase(keyed)).toEqual({ entries: {}, captures: {}, disk: scrubbed(backend) });
    } finally {
      await cleanup();
    }
  });

  it('purges by stored expiry and by each tenant’s current retention', async () => {
    await open();
    try {
      await store.insert([
        {
          entry: entry({ txid: 'old-a', time: new Date(T0 - 3 * H).toISOString() }),
          expiresMs: T0 + 100 * H,
        },
        { entry: entry({ txid: 'new-a' }), expiresMs: T0 + 100 * H },
        { entry: entry({ txid: 'expired-x', tenant: 'x' }), expiresMs: T0 - 1 },
        { entry: entry({ txid: 'keep-x', tenant: 'x' }), expiresMs: T0 + 1 },
      ]);
      const r = await store.purge({
        expiredBeforeMs: T0,
        tenantCutoffs: [{ tenant: 'a', beforeMs: T0 - 2 * H }],
      });
      expect(r.entries).toBe(2);
      expect((await store.query({})).map((e) => e.txid).sort()).toEqual(['keep-x', 'new-a']);
      // the address index went with them
      expect(
        await store.query({ addresses: [{ tenant: null, address: 'alice@outside.example' }] }),
      ).toHaveLength(2);
    } finally {
      await cleanup();
    }
  });

  it('captures: maxMessages is atomic across concurrent reservations; chunks round-trip; purge at expiry', async () => {
    await open();
    try {
      const results = await Promise.all(
        Array.from({ length: 20 }, () => store.reserveCapture('a', 'c1', 7, T0 + H)),
      );
      expect(results.filter(Boolean)).toHaveLength(7);
      expect(await store.captureCount('a', 'c1')).toBe(7);
      expect(await store.reserveCapture('a', 'c2', 0, T0 + H)).toBe(false);

      const id = await store.beginCapture({
        tenant: 'a',
        consentId: 'c1',
        txid: 'tx1',
        createdMs: T0,
        expiresMs: T0 + H,
      });
      await store.appendCapture(id, 0, Buffer.from('hello '));
      await store.appendCapture(id, 1, Buffer.from([0, 1, 2, 255]));
      expect(await store.listCaptures('a')).toEqual([]); // not complete yet
      await store.completeCapture(id);
      const list = await store.listCaptures('a');
      expect(list).toEqual([
        {
          id,
          tenant: 'a',
          consentId: 'c1',
          txid: 'tx1',
          createdAt: new Date(T0).toISOString(),
          expiresAt: new Date(T0 + H).toISOString(),
          size: 10,
        },
      ]);
      expect(await store.listCaptures('b')).toEqual([]);
      expect(await store.readCapture('b', id)).toBeUndefined(); // another tenant cannot read it
      const parts: Buffer[] = [];
      for await (const c of (await store.readCapture('a', id)) as AsyncIterable<Buffer>) parts.push(c);
      expect(Buffer.concat(parts)).toEqual(
        Buffer.concat([Buffer.from('hello '), Buffer.from([0, 1, 2, 255])]),
      );

      const gone = await store.beginCapture({
        tenant: 'a',
        consentId: 'c1',
        txid: 'tx9',
        createdMs: T0,
        expiresMs: T0 + H,
      });
      await store.discardCapture(gone);
      expect((await store.listCaptures('a')).map((c) => c.id)).toEqual([id]);

      // erasing the transaction's trace entry takes its captures along
      await store.insert([{ entry: entry(), expiresMs: T0 + H }]);
      const keep = await store.beginCapture({
        tenant: 'a',
        consentId: 'c1',
        txid: 'other',
        createdMs: T0,
        expiresMs: T0 + 2 * H,
      });
      await store.completeCapture(keep);
      expect(await store.erase([{ tenant: null, address: 'bob@a.example' }])).toEqual({
        entries: { a: 1 },
        captures: { a: 1 },
        disk: scrubbed(backend),
      });
      expect((await store.listCaptures('a')).map((c) => c.id)).toEqual([keep]);

      // expiry purges captures and the quota rows
      const r = await store.purge({ expiredBeforeMs: T0 + 2 * H, tenantCutoffs: [] });
      expect(r.captures).toBe(1);
      expect(await store.listCaptures('a')).toEqual([]);
      expect(await store.captureCount('a', 'c1')).toBe(0);
    } finally {
      await cleanup();
    }
  });

  it('concurrent reservations from separate connections (two relays) never exceed maxMessages', async () => {
    const where = await location();
    const a = await openTraceStore(where);
    const b = await openTraceStore(where);
    try {
      const rs = await Promise.all(
        Array.from({ length: 30 }, (_, i) => (i % 2 ? a : b).reserveCapture('t', 'c', 10, T0 + H)),
      );
      expect(rs.filter(Boolean)).toHaveLength(10);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('the batching writer writes what relays record', async () => {
    const where = await location();
    const written: number[] = [];
    const w = new TraceWriter({
      open: () => openTraceStore(where),
      flushIntervalMs: 20,
      metrics: { written: (k) => written.push(k), dropped: () => {}, buffered: () => {} },
    });
    for (let i = 0; i < 25; i++) w.record(entry({ txid: `w${i}` }), T0 + H);
    await w.flush();
    await w.close();
    expect(written.reduce((x, y) => x + y, 0)).toBe(25);
    const s = await openTraceStore(where);
    expect(await s.query({})).toHaveLength(25);
    await s.close();
  });
});

describe('store locations', () => {
  it('parses sqlite: and postgres:// and refuses anything else', () => {
    expect(parseStoreLocation('sqlite:./trace.db')).toEqual({ kind: 'sqlite', path: './trace.db' });
    expect(parseStoreLocation('postgresql://u@h/db')).toEqual({
      kind: 'postgres',
      url: 'postgresql://u@h/db',
    });
    expect(() => parseStoreLocation('mysql://x')).toThrow(/sqlite:PATH/);
    expect(() => parseStoreLocation('sqlite:')).toThrow(/file path/);
  });
});
