// Erasure that really erases: after `mailplus erase` (the real CLI process) no byte of the erased
// address, and none of its transaction's encrypted capture, is left in the store's files. Read
// raw: the SQLite file with its -wal and -shm, and every file of the PostgreSQL database under the
// test cluster's data directory (heap, index and TOAST files). Each run first proves that the
// bytes were on disk before the erasure, so a test that reads the wrong files cannot pass.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TraceEntry } from '../../relay/trace/entry.ts';
import { openTraceStore } from '../../relay/trace/open.ts';
import type { TraceStore } from '../../relay/trace/store.ts';
import { type PostgresServer, startPostgres } from '../support/postgres.ts';

const root = join(import.meta.dirname, '..', '..');
const MARK = 'erase-me-5a7c@privacy.example';
const KEPT = 'kept-3b9d@privacy.example';
const now = Date.now();

function mailplus(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(root, 'bin', 'mailplus.js'), ...args],
      { cwd: root, env: { ...process.env, MAILPLUS_TRACE_STORE: '' }, timeout: 60_000 },
      (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

function entry(i: number, over: Partial<TraceEntry> = {}): TraceEntry {
  return {
    time: new Date(now - 60_000).toISOString(),
    txid: `tx${i}`,
    tenant: 'a',
    route: 'a/all',
    clientIp: '192.0.2.1',
    tls: true,
    sender: `sender${i}@outside.example`,
    recipients: [{ address: `${KEPT.replace('@', `${i}@`)}`, result: 'accepted', code: 250 }],
    size: 10,
    upstream: 'mx:25',
    result: 'relayed',
    code: 250,
    durationMs: 3,
    ...over,
  };
}

/**
 * 600 entries (enough for many pages and page splits); the erased address as sender in some, as
 * one of several recipients in others, spread over the table; a capture of one of its
 * transactions and one of another transaction.
 */
async function fill(s: TraceStore): Promise<{ erasedChunk: Buffer; keptChunk: Buffer }> {
  const entries: Array<{ entry: TraceEntry; expiresMs: number }> = [];
  for (let i = 0; i < 600; i++) {
    let e = entry(i);
    if (i % 50 === 7) e = entry(i, { sender: MARK });
    if (i % 50 === 31)
      e = entry(i, {
        recipients: [
          { address: `other${i}@a.example`, result: 'accepted', code: 250 },
          { address: MARK.toUpperCase(), result: 'rejected', code: 550, reason: 'no_route' },
        ],
      });
    entries.push({ entry: e, expiresMs: now + 86400_000 });
  }
  entries.push({ entry: entry(600, { sender: MARK }), expiresMs: now + 86400_000 }); // the last row
  await s.insert(entries);
  const erasedChunk = randomBytes(48);
  const keptChunk = randomBytes(48);
  for (const [txid, chunk] of [
    ['tx7', erasedChunk],
    ['tx8', keptChunk],
  ] as const) {
    const id = await s.beginCapture({
      tenant: 'a',
      consentId: 'c',
      txid,
      createdMs: now,
      expiresMs: now + 3600_000,
    });
    await s.appendCapture(id, 0, chunk);
    await s.completeCapture(id);
  }
  return { erasedChunk, keptChunk };
}

const count = (hay: Buffer, needle: Buffer | string): number => {
  const n = typeof needle === 'string' ? Buffer.from(needle) : needle;
  let c = 0;
  for (let i = hay.indexOf(n); i >= 0; i = hay.indexOf(n, i + 1)) c++;
  return c;
};
/** Occurrences in any of the files, case-insensitive for text (addresses are stored lower-cased and as given). */
function onDisk(files: string[], needle: Buffer | string): number {
  let c = 0;
  for (const f of files) {
    if (!existsSync(f)) continue;
    const raw = readFileSync(f);
    c +=
      typeof needle === 'string'
        ? count(Buffer.from(raw.toString('latin1').toLowerCase(), 'latin1'), needle)
        : count(raw, needle);
  }
  return c;
}

let dir: string;
let pgServer: PostgresServer | undefined;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mailplus-erasure-'));
  pgServer = await startPostgres();
});
afterAll(async () => {
  await pgServer?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('erasure on disk: sqlite', () => {
  it('leaves no byte of the erased address or its capture in the db, -wal or -shm file', async () => {
    const file = join(dir, 'trace.db');
    const files = [file, `${file}-wal`, `${file}-shm`];
    // a relay keeps its connection to the store open meanwhile
    const relay = await openTraceStore(`sqlite:${file}`);
    try {
      const { erasedChunk, keptChunk } = await fill(relay);
      expect(onDisk(files, MARK)).toBeGreaterThan(0);
      expect(onDisk(files, erasedChunk)).toBeGreaterThan(0);

      const r = await mailplus(['erase', '--store', `sqlite:${file}`, '--address', MARK, '-o', 'json']);
      expect(r.code, r.stderr).toBe(0);
      expect(onDisk(files, MARK)).toBe(0);
      expect(onDisk(files, erasedChunk)).toBe(0);
      const out = JSON.parse(r.stdout);
      expect(out).toMatchObject({ total: 25, totalCaptures: 1, disk: { scrubbed: true, remains: [] } });
      expect(out.disk.done).toEqual([
        'deleted rows overwritten with zeros (secure_delete)',
        'VACUUM',
        'WAL checkpoint (TRUNCATE)',
      ]);

      // the rest is still there, in the files read
      expect(onDisk(files, keptChunk)).toBe(1);
      expect(onDisk(files, 'kept-3b9d599@privacy.example')).toBeGreaterThan(0);
      // and the relay's connection still works
      expect((await relay.query({})).length).toBe(601 - 25);
    } finally {
      await relay.close();
    }
  });

  it('a retention purge leaves no byte of the purged entries either', async () => {
    const file = join(dir, 'purge.db');
    const files = [file, `${file}-wal`, `${file}-shm`];
    const s = await openTraceStore(`sqlite:${file}`);
    try {
      await s.insert([
        { entry: entry(1, { sender: MARK }), expiresMs: now - 1000 },
        { entry: entry(2), expiresMs: now + 86400_000 },
      ]);
      expect(onDisk(files, MARK)).toBeGreaterThan(0);
      expect(await s.purge({ expiredBeforeMs: now, tenantCutoffs: [] })).toEqual({ entries: 1, captures: 0 });
      expect(onDisk(files, MARK)).toBe(0);
      expect(onDisk(files, 'sender2@outside.example')).toBeGreaterThan(0);
    } finally {
      await s.close();
    }
  });
});

describe('erasure on disk: postgres', () => {
  it('leaves no byte of the erased address or its capture in any file of the database', async () => {
    const server = pgServer as PostgresServer;
    const url = await server.createDatabase();
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    const relay = await openTraceStore(url);
    try {
      const { erasedChunk, keptChunk } = await fill(relay);
      const oid = (await admin.query('SELECT oid FROM pg_database WHERE datname = current_database()'))
        .rows[0].oid as number;
      const dbDir = join(server.dataDir, 'base', String(oid));
      const files = () => readdirSync(dbDir).map((f) => join(dbDir, f));
      // what is in shared buffers reaches the files
      await admin.query('CHECKPOINT');
      expect(onDisk(files(), MARK)).toBeGreaterThan(0);
      expect(onDisk(files(), erasedChunk)).toBeGreaterThan(0);

      const r = await mailplus(['erase', '--store', url, '--address', MARK, '-o', 'json']);
      expect(r.code, r.stderr).toBe(0);
      await admin.query('CHECKPOINT');
      expect(onDisk(files(), MARK)).toBe(0);
      expect(onDisk(files(), erasedChunk)).toBe(0);
      const out = JSON.parse(r.stdout);
      expect(out).toMatchObject({ total: 25, totalCaptures: 1, disk: { scrubbed: true } });
      expect(out.disk.done).toEqual([
        'VACUUM FULL trace_entries, trace_addresses, captures, capture_chunks',
        'CHECKPOINT',
      ]);
      expect(out.disk.remains).toEqual([
        expect.stringMatching(/^PostgreSQL WAL segments written before the erasure hold the deleted rows/),
        expect.stringMatching(/^backups, WAL archives and replicas/),
      ]);

      expect(onDisk(files(), keptChunk)).toBe(1);
      expect(onDisk(files(), 'kept-3b9d599@privacy.example')).toBeGreaterThan(0);
      expect((await relay.query({})).length).toBe(601 - 25);
    } finally {
      await relay.close();
      await admin.end();
    }
  });

  it('a scrub that cannot get its lock exits 1 with the entries deleted; running it again finishes', async () => {
    const url = await (pgServer as PostgresServer).createDatabase();
    const s = await openTraceStore(url);
    const reader = new pg.Client({ connectionString: url });
    await reader.connect();
    try {
      await s.insert([{ entry: entry(1, { sender: MARK }), expiresMs: now + 86400_000 }]);
      // a long read (an operator's report, a backup) holds a lock VACUUM FULL must wait for
      await reader.query('BEGIN');
      await reader.query('LOCK TABLE capture_chunks IN ACCESS SHARE MODE');
      const blocked = await mailplus(['erase', '--store', url, '--address', MARK, '-o', 'json']);
      expect(blocked.code).toBe(1);
      expect(blocked.stderr).toContain('the entries are deleted, but the database files may still hold');
      const out = JSON.parse(blocked.stdout);
      expect(out).toMatchObject({ total: 1, disk: { scrubbed: false } });
      expect(out.disk.remains[0]).toMatch(/^VACUUM FULL .* failed: .*lock timeout/);
      await reader.query('COMMIT');

      const again = await mailplus(['erase', '--store', url, '--address', MARK, '-o', 'json']);
      expect(again.code, again.stderr).toBe(0);
      expect(JSON.parse(again.stdout)).toMatchObject({ total: 0, disk: { scrubbed: true } });
    } finally {
      await reader.end();
      await s.close();
    }
  });

  it('a retention purge vacuums the trace tables', async () => {
    const url = await (pgServer as PostgresServer).createDatabase();
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    const s = await openTraceStore(url);
    try {
      await s.insert([{ entry: entry(1), expiresMs: now - 1000 }]);
      const vacuumed = async () =>
        (await admin.query("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'trace_entries'"))
          .rows[0].vacuum_count as string;
      const before = Number(await vacuumed());
      expect(await s.purge({ expiredBeforeMs: now, tenantCutoffs: [] })).toEqual({ entries: 1, captures: 0 });
      // statistics reach the view asynchronously
      const deadline = Date.now() + 5000;
      while (Number(await vacuumed()) === before && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      expect(Number(await vacuumed())).toBe(before + 1);
    } finally {
      await s.close();
      await admin.end();
    }
  });
});
