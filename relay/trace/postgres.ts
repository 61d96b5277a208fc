// PostgreSQL driver (node-postgres) for a relay fleet: every replica writes to the same database,
// the CLI (trace, erase, capture) reads it. The connection string comes from --trace-store or
// MAILPLUS_TRACE_STORE (the chart fills it from a Secret).
import pg from 'pg';
import type { Driver } from './store.ts';

/** `?` placeholders (the store's SQL) to `$1..$n`. The store's SQL has no '?' in literals. */
export function numberPlaceholders(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

type Queryable = Pick<pg.PoolClient, 'query'>;

/** VACUUM FULL rewrites whole tables: no query time limit short of this. */
const MAINTENANCE_TIMEOUT_MS = 6 * 3600_000;
const MAINTENANCE_LOCK_TIMEOUT = '10s';

function driverOn(q: Queryable, pool: pg.Pool | undefined): Driver {
  const d: Driver = {
    kind: 'postgres',
    exec: async (sql) => {
      await q.query(sql);
    },
    all: async <T>(sql: string, p: unknown[] = []) => (await q.query(numberPlaceholders(sql), p)).rows as T[],
    run: async (sql, p = []) => (await q.query(numberPlaceholders(sql), p)).rowCount ?? 0,
    tx: async <T>(fn: (d: Driver) => Promise<T>) => {
      if (!pool) return fn(d); // already inside a transaction
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        const r = await fn(driverOn(client, undefined));
        await client.query('COMMIT');
        return r;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        throw err;
      } finally {
        client.release();
      }
    },
    maintain: async <T>(sql: string) => {
      if (!pool) throw new Error(`${sql.split(' ')[0]} cannot run inside a transaction`);
      const client = await pool.connect();
      try {
        // Waiting long for the table lock would stall the relays' trace writes queued behind it.
        await client.query(`SET lock_timeout = '${MAINTENANCE_LOCK_TIMEOUT}'`);
        // per-query query_timeout is read by pg's Client.query, though its types omit it
        const query = { text: sql, query_timeout: MAINTENANCE_TIMEOUT_MS } as pg.QueryConfig;
        return (await client.query(query)).rows as T[];
      } finally {
        await client.query('RESET lock_timeout').catch(() => {});
        client.release();
      }
    },
    close: async () => {
      await pool?.end();
    },
  };
  return d;
}

export function openPostgresDriver(
  connectionString: string,
  opts: { max?: number; connectionTimeoutMillis?: number } = {},
): Driver {
  const pool = new pg.Pool({
    connectionString,
    max: opts.max ?? 4,
    connectionTimeoutMillis: opts.connectionTimeoutMillis ?? 5000,
    // a query must never hang a trace flush forever
    query_timeout: 30_000,
  });
  // an idle client losing its connection must not crash the relay; the next query reconnects
  pool.on('error', () => {});
  const d = driverOn(pool as unknown as Queryable, pool);
  return {
    ...d,
    // replicas starting together: serialise the CREATE ... IF NOT EXISTS
    exec: (sql) =>
      d.tx(async (t) => {
        await t.all('SELECT pg_advisory_xact_lock(7262001)');
        await t.exec(sql);
      }),
  };
}
