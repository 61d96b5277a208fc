// The trace store: message-trace entries and (encrypted) troubleshooting captures, in SQLite
// (`mailplus dev`, single node) or PostgreSQL (a fleet). One SQL implementation over a tiny driver
// interface; the two drivers differ only in placeholders, id columns and blob types.
import { randomUUID } from 'node:crypto';
import { entryAddresses, type StoredTraceEntry, type TraceEntry, type TraceRecipient } from './entry.ts';
import type { PurgePlan } from './retention.ts';

export interface Driver {
  readonly kind: 'sqlite' | 'postgres';
  /** DDL (several statements). */
  exec(sql: string): Promise<void>;
  all<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  /** Returns the number of rows changed. */
  run(sql: string, params?: unknown[]): Promise<number>;
  /** Runs fn in one database transaction (fn receives a driver bound to it). */
  tx<T>(fn: (d: Driver) => Promise<T>): Promise<T>;
  /**
   * One statement outside any transaction, without the query time limit: VACUUM, CHECKPOINT and
   * PRAGMA wal_checkpoint cannot run inside one and may take as long as the tables are large.
   */
  maintain<T = Record<string, unknown>>(sql: string): Promise<T[]>;
  close(): Promise<void>;
}

export interface AddressForm {
  /** null: any tenant (the plain address); else only that tenant's entries (its pseudonym). */
  tenant: string | null;
  address: string;
}

export interface TraceQuery {
  addresses?: AddressForm[];
  tenant?: string;
  sinceMs?: number;
  untilMs?: number;
  result?: string;
  /** Default: no limit. */
  limit?: number;
}

export interface EraseReport {
  /** Entries deleted per tenant. */
  entries: Record<string, number>;
  /** Captures deleted per tenant (captures of the erased transactions). */
  captures: Record<string, number>;
  /** What was done so that the deleted rows' bytes are gone from the database files too. */
  disk: DiskReport;
}

export interface DiskReport {
  /**
   * True when no table or index file of the trace store holds a deleted row any more (SQLite:
   * also its -wal file). What a database keeps elsewhere for a while is listed in `remains`.
   */
  scrubbed: boolean;
  /** Steps taken, in order. */
  done: string[];
  /** Where copies of deleted rows remain, until when, and steps that failed (with the error). */
  remains: string[];
}

export interface CaptureMeta {
  id: string;
  tenant: string;
  consentId: string;
  txid: string;
  createdAt: string;
  expiresAt: string;
  /** Ciphertext bytes. */
  size: number;
}

export interface TraceStore {
  readonly kind: 'sqlite' | 'postgres';
  insert(entries: Array<{ entry: TraceEntry; expiresMs: number }>): Promise<void>;
  query(q: TraceQuery): Promise<StoredTraceEntry[]>;
  /** Deletes every entry about the forms and its captures, then scrubs the files (see DiskReport). */
  erase(forms: AddressForm[]): Promise<EraseReport>;
  /** Tenants that have entries or captures. */
  tenants(): Promise<string[]>;
  /**
   * Deletes expired entries and captures, then lets the database reclaim them (SQLite: the rows
   * are overwritten as they are deleted and the WAL is truncated; PostgreSQL: plain VACUUM).
   * `reclaimFailed` says why that last step failed, when it did (the rows are deleted anyway).
   */
  purge(plan: PurgePlan): Promise<{ entries: number; captures: number; reclaimFailed?: string }>;

  /** Takes one of maxMessages slots of a consent, atomically across replicas; false when none is left. */
  reserveCapture(tenant: string, consentId: string, maxMessages: number, expiresMs: number): Promise<boolean>;
  /** Slots used so far. */
  captureCount(tenant: string, consentId: string): Promise<number>;
  beginCapture(meta: {
    tenant: string;
    consentId: string;
    txid: string;
    createdMs: number;
    expiresMs: number;
  }): Promise<string>;
  appendCapture(id: string, seq: number, data: Buffer): Promise<void>;
  completeCapture(id: string): Promise<void>;
  discardCapture(id: string): Promise<void>;
  listCaptures(tenant: string): Promise<CaptureMeta[]>;
  /** The encrypted capture, chunk by chunk (memory stays flat). Undefined when there is none. */
  readCapture(tenant: string, id: string): Promise<AsyncIterable<Buffer> | undefined>;
  close(): Promise<void>;
}

const DDL = (d: 'sqlite' | 'postgres') => {
  const id = d === 'sqlite' ? 'INTEGER PRIMARY KEY AUTOINCREMENT' : 'BIGSERIAL PRIMARY KEY';
  const blob = d === 'sqlite' ? 'BLOB' : 'BYTEA';
  return `
CREATE TABLE IF NOT EXISTS trace_entries (
  id ${id},
  time_ms BIGINT NOT NULL,
  expires_ms BIGINT NOT NULL,
  txid TEXT NOT NULL,
  tenant TEXT NOT NULL,
  route TEXT NOT NULL,
  client_ip TEXT NOT NULL,
  tls INTEGER NOT NULL,
  sender TEXT NOT NULL,
  recipients TEXT NOT NULL,
  size BIGINT NOT NULL,
  upstream TEXT NOT NULL,
  result TEXT NOT NULL,
  code INTEGER NOT NULL,
  duration_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS trace_entries_tenant_time ON trace_entries (tenant, time_ms);
CREATE INDEX IF NOT EXISTS trace_entries_expires ON trace_entries (expires_ms);
CREATE INDEX IF NOT EXISTS trace_entries_time ON trace_entries (time_ms);
CREATE TABLE IF NOT EXISTS trace_addresses (
  entry_id BIGINT NOT NULL REFERENCES trace_entries (id) ON DELETE CASCADE,
  tenant TEXT NOT NULL,
  address TEXT NOT NULL,
  role TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS trace_addresses_address ON trace_addresses (address);
CREATE INDEX IF NOT EXISTS trace_addresses_entry ON trace_addresses (entry_id);
CREATE TABLE IF NOT EXISTS captures (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  consent_id TEXT NOT NULL,
  txid TEXT NOT NULL,
  created_ms BIGINT NOT NULL,
  expires_ms BIGINT NOT NULL,
  size BIGINT NOT NULL,
  complete INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS captures_tenant ON captures (tenant, created_ms);
CREATE INDEX IF NOT EXISTS captures_expires ON captures (expires_ms);
CREATE TABLE IF NOT EXISTS capture_chunks (
  capture_id TEXT NOT NULL REFERENCES captures (id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  data ${blob} NOT NULL,
  PRIMARY KEY (capture_id, seq)
);
CREATE TABLE IF NOT EXISTS capture_quota (
  tenant TEXT NOT NULL,
  consent_id TEXT NOT NULL,
  used INTEGER NOT NULL,
  expires_ms BIGINT NOT NULL,
  PRIMARY KEY (tenant, consent_id)
);
${d === 'postgres' ? NO_SAMPLED_ADDRESSES : ''}`;
};

/**
 * PostgreSQL's ANALYZE (autovacuum runs it) copies frequent column values into pg_statistic, a
 * system catalog no erasure can rewrite: addresses and client IPs must never be sampled there.
 */
const NO_SAMPLED_ADDRESSES = `
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_attribute
             WHERE (attrelid, attname) IN (('trace_entries'::regclass, 'sender'),
               ('trace_entries'::regclass, 'recipients'), ('trace_entries'::regclass, 'client_ip'),
               ('trace_addresses'::regclass, 'address'))
               AND COALESCE(attstattarget, -1) <> 0) THEN
    ALTER TABLE trace_entries ALTER COLUMN sender SET STATISTICS 0,
      ALTER COLUMN recipients SET STATISTICS 0, ALTER COLUMN client_ip SET STATISTICS 0;
    ALTER TABLE trace_addresses ALTER COLUMN address SET STATISTICS 0;
  END IF;
EXCEPTION WHEN insufficient_privilege THEN
  RAISE WARNING 'mailplus: not the owner of the trace tables; run as their owner once: ALTER TABLE ... SET STATISTICS 0 (PRIVACY.md)';
END $$;
`;

/** Every table that holds what an erasure deletes (rows, index entries, encrypted chunks). */
const ERASED_TABLES = 'trace_entries, trace_addresses, captures, capture_chunks';

/** Incomplete captures (a relay died mid-message) are removed after this long. */
const INCOMPLETE_CAPTURE_MS = 3600_000;

interface EntryRow {
  id: number | string;
  time_ms: number | string;
  expires_ms: number | string;
  txid: string;
  tenant: string;
  route: string;
  client_ip: string;
  tls: number;
  sender: string;
  recipients: string;
  size: number | string;
  upstream: string;
  result: string;
  code: number;
  duration_ms: number;
}

function fromRow(r: EntryRow): StoredTraceEntry {
  return {
    id: Number(r.id),
    time: new Date(Number(r.time_ms)).toISOString(),
    expiresAt: new Date(Number(r.expires_ms)).toISOString(),
    txid: r.txid,
    tenant: r.tenant,
    route: r.route,
    clientIp: r.client_ip,
    tls: Number(r.tls) === 1,
    sender: r.sender,
    recipients: JSON.parse(r.recipients) as TraceRecipient[],
    size: Number(r.size),
    upstream: r.upstream,
    result: r.result as StoredTraceEntry['result'],
    code: Number(r.code),
    durationMs: Number(r.duration_ms),
  };
}

/** WHERE fragment selecting entry ids that mention any of the address forms. */
function addressFilter(forms: AddressForm[]): { sql: string; params: unknown[] } {
  const plain = forms.filter((f) => f.tenant === null).map((f) => f.address);
  const scoped = forms.filter((f) => f.tenant !== null);
  const parts: string[] = [];
  const params: unknown[] = [];
  if (plain.length) {
    parts.push(`address IN (${plain.map(() => '?').join(', ')})`);
    params.push(...plain);
  }
  for (const f of scoped) {
    parts.push('(tenant = ? AND address = ?)');
    params.push(f.tenant, f.address);
  }
  return {
    sql: `SELECT DISTINCT entry_id FROM trace_addresses WHERE ${parts.join(' OR ') || '1 = 0'}`,
    params,
  };
}

const bump = (m: Record<string, number>, k: string, n = 1) => {
  m[k] = (m[k] ?? 0) + n;
};

export class SqlTraceStore implements TraceStore {
  readonly kind: 'sqlite' | 'postgres';
  private readonly d: Driver;

  private constructor(d: Driver) {
    this.d = d;
    this.kind = d.kind;
  }

  static async open(d: Driver): Promise<SqlTraceStore> {
    await d.exec(DDL(d.kind));
    return new SqlTraceStore(d);
  }

  async insert(entries: Array<{ entry: TraceEntry; expiresMs: number }>): Promise<void> {
    if (entries.length === 0) return;
    await this.d.tx(async (d) => {
      for (const { entry: e, expiresMs } of entries) {
        const [row] = await d.all<{ id: number | string }>(
          `INSERT INTO trace_entries (time_ms, expires_ms, txid, tenant, route, client_ip, tls, sender,
             recipients, size, upstream, result, code, duration_ms)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
          [
            Date.parse(e.time),
            expiresMs,
            e.txid,
            e.tenant,
            e.route,
            e.clientIp,
            e.tls ? 1 : 0,
            e.sender,
            JSON.stringify(e.recipients),
            e.size,
            e.upstream,
            e.result,
            e.code,
            e.durationMs,
          ],
        );
        for (const a of entryAddresses(e)) {
          await d.run('INSERT INTO trace_addresses (entry_id, tenant, address, role) VALUES (?, ?, ?, ?)', [
            row.id,
            e.tenant,
            a.address,
            a.role,
          ]);
        }
      }
    });
  }

  async query(q: TraceQuery): Promise<StoredTraceEntry[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (q.addresses) {
      const f = addressFilter(q.addresses);
      where.push(`id IN (${f.sql})`);
      params.push(...f.params);
    }
    if (q.tenant !== undefined) {
      where.push('tenant = ?');
      params.push(q.tenant);
    }
    if (q.sinceMs !== undefined) {
      where.push('time_ms >= ?');
      params.push(q.sinceMs);
    }
    if (q.untilMs !== undefined) {
      where.push('time_ms < ?');
      params.push(q.untilMs);
    }
    if (q.result !== undefined) {
      where.push('result = ?');
      params.push(q.result);
    }
    let sql = `SELECT * FROM trace_entries${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY time_ms, id`;
    if (q.limit !== undefined) {
      sql += ' LIMIT ?';
      params.push(q.limit);
    }
    return (await this.d.all<EntryRow>(sql, params)).map(fromRow);
  }

  async erase(forms: AddressForm[]): Promise<EraseReport> {
    const deleted = await this.deleteAbout(forms);
    // Always, even when nothing matched now: a rerun finishes an earlier erasure whose scrub failed.
    return { ...deleted, disk: await this.scrub() };
  }

  private async deleteAbout(forms: AddressForm[]): Promise<Omit<EraseReport, 'disk'>> {
    const report: Omit<EraseReport, 'disk'> = { entries: {}, captures: {} };
    if (forms.length === 0) return report;
    return this.d.tx(async (d) => {
      const f = addressFilter(forms);
      const rows = await d.all<{ id: number | string; tenant: string; txid: string }>(
        `SELECT id, tenant, txid FROM trace_entries WHERE id IN (${f.sql})`,
        f.params,
      );
      for (const r of rows) {
        await d.run('DELETE FROM trace_addresses WHERE entry_id = ?', [r.id]);
        await d.run('DELETE FROM trace_entries WHERE id = ?', [r.id]);
        bump(report.entries, r.tenant);
        const caps = await d.all<{ id: string }>('SELECT id FROM captures WHERE tenant = ? AND txid = ?', [
          r.tenant,
          r.txid,
        ]);
        for (const c of caps) {
          await d.run('DELETE FROM capture_chunks WHERE capture_id = ?', [c.id]);
          await d.run('DELETE FROM captures WHERE id = ?', [c.id]);
          bump(report.captures, r.tenant);
        }
      }
      return report;
    });
  }

  /**
   * Makes deleted rows unrecoverable from the database files. SQLite overwrites them with zeros as
   * they are deleted (secure_delete, sqlite.ts); VACUUM rebuilds the file so that no older free
   * page or slack space keeps a copy either, and the checkpoint copies the WAL into the file and
   * truncates it. PostgreSQL marks deleted rows dead and a plain VACUUM leaves their bytes in the
   * pages (seen in tests), so VACUUM FULL rewrites the tables and their indexes into new files and
   * drops the old ones; its WAL keeps the rows until the segments are recycled (PRIVACY.md).
   */
  private async scrub(): Promise<DiskReport> {
    const done: string[] = [];
    const remains: string[] = [];
    let scrubbed = true;
    const step = async (label: string, sql: string, required: boolean): Promise<unknown[] | undefined> => {
      try {
        const rows = await this.d.maintain(sql);
        done.push(label);
        return rows;
      } catch (err) {
        if (required) scrubbed = false;
        remains.push(`${label} failed: ${(err as Error).message}`);
        return undefined;
      }
    };
    if (this.kind === 'sqlite') {
      done.push('deleted rows overwritten with zeros (secure_delete)');
      await step('VACUUM', 'VACUUM', true);
      const cp = await step('WAL checkpoint (TRUNCATE)', 'PRAGMA wal_checkpoint(TRUNCATE)', true);
      const busy = Number((cp?.[0] as { busy?: number } | undefined)?.busy ?? 0);
      if (busy !== 0) {
        scrubbed = false;
        done.pop();
        remains.push(
          'WAL not truncated: another connection (a relay) was reading the store; run the erasure again',
        );
      }
      return { scrubbed, done, remains };
    }
    await step(`VACUUM FULL ${ERASED_TABLES}`, `VACUUM FULL ${ERASED_TABLES}`, true);
    const checkpointed = await step('CHECKPOINT', 'CHECKPOINT', false);
    remains.push(
      `PostgreSQL WAL segments written before the erasure hold the deleted rows until the server deletes them or overwrites them with new WAL, which it may do after ${checkpointed ? 'this' : 'its next'} checkpoint (reuse follows write volume, up to max_wal_size; longer with wal_keep_size, replication slots or WAL archiving)`,
      'backups, WAL archives and replicas that are not streaming keep them for their own retention',
    );
    return { scrubbed, done, remains };
  }

  async tenants(): Promise<string[]> {
    const rows = await this.d.all<{ tenant: string }>(
      'SELECT DISTINCT tenant FROM trace_entries UNION SELECT DISTINCT tenant FROM captures',
    );
    return rows.map((r) => r.tenant).sort();
  }

  async purge(plan: PurgePlan): Promise<{ entries: number; captures: number; reclaimFailed?: string }> {
    const r = await this.d.tx(async (d) => {
      const doomed = 'SELECT id FROM trace_entries WHERE expires_ms <= ?';
      let entries = 0;
      await d.run(`DELETE FROM trace_addresses WHERE entry_id IN (${doomed})`, [plan.expiredBeforeMs]);
      entries += await d.run('DELETE FROM trace_entries WHERE expires_ms <= ?', [plan.expiredBeforeMs]);
      for (const c of plan.tenantCutoffs) {
        await d.run(
          'DELETE FROM trace_addresses WHERE entry_id IN (SELECT id FROM trace_entries WHERE tenant = ? AND time_ms < ?)',
          [c.tenant, c.beforeMs],
        );
        entries += await d.run('DELETE FROM trace_entries WHERE tenant = ? AND time_ms < ?', [
          c.tenant,
          c.beforeMs,
        ]);
      }
      const capDoomed = 'SELECT id FROM captures WHERE expires_ms <= ? OR (complete = 0 AND created_ms < ?)';
      const capParams = [plan.expiredBeforeMs, plan.expiredBeforeMs - INCOMPLETE_CAPTURE_MS];
      await d.run(`DELETE FROM capture_chunks WHERE capture_id IN (${capDoomed})`, capParams);
      const captures = await d.run(
        'DELETE FROM captures WHERE expires_ms <= ? OR (complete = 0 AND created_ms < ?)',
        capParams,
      );
      await d.run('DELETE FROM capture_quota WHERE expires_ms <= ?', [plan.expiredBeforeMs]);
      return { entries, captures };
    });
    if (r.entries === 0 && r.captures === 0) return r;
    // Cheap, non-blocking reclaim for the periodic purge; the full rewrite is for erasure requests.
    try {
      await this.d.maintain(
        this.kind === 'sqlite' ? 'PRAGMA wal_checkpoint(TRUNCATE)' : `VACUUM ${ERASED_TABLES}, capture_quota`,
      );
    } catch (err) {
      return { ...r, reclaimFailed: (err as Error).message };
    }
    return r;
  }

  async reserveCapture(
    tenant: string,
    consentId: string,
    maxMessages: number,
    expiresMs: number,
  ): Promise<boolean> {
    if (maxMessages < 1) return false;
    // One statement, so concurrent replicas cannot both take the last slot: the upsert's WHERE is
    // evaluated on the locked row (PostgreSQL) / under the database write lock (SQLite).
    const rows = await this.d.all(
      `INSERT INTO capture_quota (tenant, consent_id, used, expires_ms) VALUES (?, ?, 1, ?)
       ON CONFLICT (tenant, consent_id) DO UPDATE SET used = capture_quota.used + 1
       WHERE capture_quota.used < ? RETURNING used`,
      [tenant, consentId, expiresMs, maxMessages],
    );
    return rows.length === 1;
  }

  async captureCount(tenant: string, consentId: string): Promise<number> {
    const rows = await this.d.all<{ used: number }>(
      'SELECT used FROM capture_quota WHERE tenant = ? AND consent_id = ?',
      [tenant, consentId],
    );
    return rows.length ? Number(rows[0].used) : 0;
  }

  async beginCapture(m: {
    tenant: string;
    consentId: string;
    txid: string;
    createdMs: number;
    expiresMs: number;
  }): Promise<string> {
    const id = randomUUID();
    await this.d.run(
      `INSERT INTO captures (id, tenant, consent_id, txid, created_ms, expires_ms, size, complete)
       VALUES (?, ?, ?, ?, ?, ?, 0, 0)`,
      [id, m.tenant, m.consentId, m.txid, m.createdMs, m.expiresMs],
    );
    return id;
  }

  async appendCapture(id: string, seq: number, data: Buffer): Promise<void> {
    await this.d.tx(async (d) => {
      await d.run('INSERT INTO capture_chunks (capture_id, seq, data) VALUES (?, ?, ?)', [id, seq, data]);
      await d.run('UPDATE captures SET size = size + ? WHERE id = ?', [data.length, id]);
    });
  }

  async completeCapture(id: string): Promise<void> {
    await this.d.run('UPDATE captures SET complete = 1 WHERE id = ?', [id]);
  }

  async discardCapture(id: string): Promise<void> {
    await this.d.tx(async (d) => {
      await d.run('DELETE FROM capture_chunks WHERE capture_id = ?', [id]);
      await d.run('DELETE FROM captures WHERE id = ?', [id]);
    });
  }

  async listCaptures(tenant: string): Promise<CaptureMeta[]> {
    const rows = await this.d.all<{
      id: string;
      tenant: string;
      consent_id: string;
      txid: string;
      created_ms: number | string;
      expires_ms: number | string;
      size: number | string;
    }>('SELECT * FROM captures WHERE tenant = ? AND complete = 1 ORDER BY created_ms, id', [tenant]);
    return rows.map((r) => ({
      id: r.id,
      tenant: r.tenant,
      consentId: r.consent_id,
      txid: r.txid,
      createdAt: new Date(Number(r.created_ms)).toISOString(),
      expiresAt: new Date(Number(r.expires_ms)).toISOString(),
      size: Number(r.size),
    }));
  }

  async readCapture(tenant: string, id: string): Promise<AsyncIterable<Buffer> | undefined> {
    const rows = await this.d.all<{ n: number | string }>(
      'SELECT COUNT(*) AS n FROM capture_chunks WHERE capture_id = (SELECT id FROM captures WHERE id = ? AND tenant = ? AND complete = 1)',
      [id, tenant],
    );
    const head = await this.d.all('SELECT id FROM captures WHERE id = ? AND tenant = ? AND complete = 1', [
      id,
      tenant,
    ]);
    if (head.length === 0) return undefined;
    const n = Number(rows[0]?.n ?? 0);
    const d = this.d;
    return {
      async *[Symbol.asyncIterator]() {
        for (let seq = 0; seq < n; seq++) {
          const [c] = await d.all<{ data: Uint8Array }>(
            'SELECT data FROM capture_chunks WHERE capture_id = ? AND seq = ?',
            [id, seq],
          );
          if (!c) throw new Error(`capture ${id}: chunk ${seq} is missing`);
          yield Buffer.from(c.data);
        }
      },
    };
  }

  close(): Promise<void> {
    return this.d.close();
  }
}
