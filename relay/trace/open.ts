// Opens a trace store from its location: `sqlite:PATH` (or a path ending in .db/.sqlite) for
// SQLite, `postgres://…` / `postgresql://…` for PostgreSQL.
import { openPostgresDriver } from './postgres.ts';
import { openSqliteDriver } from './sqlite.ts';
import { SqlTraceStore, type TraceStore } from './store.ts';

/** Environment variable read by the relay and the CLI when --trace-store / --store is not given. */
export const TRACE_STORE_ENV = 'MAILPLUS_TRACE_STORE';

export type StoreLocation = { kind: 'sqlite'; path: string } | { kind: 'postgres'; url: string };

export function parseStoreLocation(value: string): StoreLocation {
  const v = value.trim();
  if (/^postgres(ql)?:\/\//.test(v)) return { kind: 'postgres', url: v };
  if (v.startsWith('sqlite:')) {
    const path = v.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, '');
    if (path === '') throw new Error(`"${value}": sqlite: needs a file path, e.g. sqlite:./trace.db`);
    return { kind: 'sqlite', path };
  }
  throw new Error(
    `"${value}" is not a trace store; use sqlite:PATH (e.g. sqlite:./trace.db) or postgres://USER@HOST/DB`,
  );
}

/** Redacts the password of a postgres URL for logs and errors. */
export function describeStore(loc: StoreLocation): string {
  if (loc.kind === 'sqlite') return `sqlite:${loc.path}`;
  try {
    const u = new URL(loc.url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'postgres://(unparseable)';
  }
}

export async function openTraceStore(value: string | StoreLocation): Promise<TraceStore> {
  const loc = typeof value === 'string' ? parseStoreLocation(value) : value;
  const driver = loc.kind === 'sqlite' ? openSqliteDriver(loc.path) : openPostgresDriver(loc.url);
  try {
    return await SqlTraceStore.open(driver);
  } catch (err) {
    await driver.close().catch(() => {});
    throw new Error(`trace store ${describeStore(loc)}: ${(err as Error).message}`);
  }
}
