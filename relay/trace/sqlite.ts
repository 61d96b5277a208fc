// SQLite driver (node:sqlite, built into Node 24) for `mailplus dev` and single-node relays.
// node:sqlite is synchronous; statements are serialised through one queue so that a transaction's
// awaits never let another caller's statements into it.
import { DatabaseSync, type SQLInputValue } from 'node:sqlite';
import type { Driver } from './store.ts';

export function openSqliteDriver(path: string): Driver {
  const db = new DatabaseSync(path);
  // secure_delete: a deleted row is overwritten with zeros, not left in a free page (erasure,
  // retention purge); per connection, so every process that deletes sets it.
  db.exec(
    'PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;',
  );
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = queue.then(fn, fn);
    queue = next.catch(() => {});
    return next;
  };
  const params = (p: unknown[] = []) => p as SQLInputValue[];
  const direct: Driver = {
    kind: 'sqlite',
    exec: async (sql) => {
      db.exec(sql);
    },
    all: async <T>(sql: string, p?: unknown[]) => db.prepare(sql).all(...params(p)) as T[],
    run: async (sql, p) => Number(db.prepare(sql).run(...params(p)).changes),
    tx: async <T>(fn: (d: Driver) => Promise<T>) => {
      db.exec('BEGIN IMMEDIATE');
      try {
        const r = await fn(direct);
        db.exec('COMMIT');
        return r;
      } catch (err) {
        db.exec('ROLLBACK');
        throw err;
      }
    },
    maintain: async <T>(sql: string) => db.prepare(sql).all() as T[],
    close: async () => {
      db.close();
    },
  };
  return {
    kind: 'sqlite',
    exec: (sql) => serial(() => direct.exec(sql)),
    all: <T>(sql: string, p?: unknown[]) => serial(() => direct.all<T>(sql, p)),
    run: (sql, p) => serial(() => direct.run(sql, p)),
    tx: <T>(fn: (d: Driver) => Promise<T>) => serial(() => direct.tx(fn)),
    maintain: <T>(sql: string) => serial(() => direct.maintain<T>(sql)),
    close: () => serial(() => direct.close()),
  };
}
