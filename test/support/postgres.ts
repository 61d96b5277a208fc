// A real, throwaway PostgreSQL server for tests: initdb into a temp dir, `postgres` on a free
// loopback port with its socket in the temp dir, stopped by PID afterwards (fast shutdown, then
// SIGKILL) and the directory removed. Needs the server binaries (Debian package `postgresql`);
// found through `pg_config --bindir` or /usr/lib/postgresql/<version>/bin. initdb refuses to run as
// root, so as root the server runs as the `postgres` system user (setpriv; the Debian package
// creates that user) — or MAILPLUS_TEST_PG_USER.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort, type Managed, startProcess } from './processes.ts';

export interface PostgresServer {
  /** postgres://mailplus@127.0.0.1:PORT/postgres */
  url: string;
  port: number;
  pid: number;
  /** The cluster's data directory (tests read table files under base/ to prove erasure). */
  dataDir: string;
  /** A fresh, empty database; returns its connection URL. */
  createDatabase(name?: string): Promise<string>;
  stop(): Promise<void>;
}

export function findPostgresBinDir(): string | undefined {
  const has = (dir: string) => existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'postgres'));
  try {
    const dir = execFileSync('pg_config', ['--bindir'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
    if (dir && has(dir)) return dir;
  } catch {
    // no pg_config: look in Debian's layout
  }
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base)
    .filter((v) => /^\d+$/.test(v))
    .sort((a, b) => Number(b) - Number(a));
  for (const v of versions) if (has(join(base, v, 'bin'))) return join(base, v, 'bin');
  return undefined;
}

function idOf(user: string): { uid: number; gid: number } {
  const uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
  return { uid, gid };
}

let dbCounter = 0;

export async function startPostgres(): Promise<PostgresServer> {
  const bin = findPostgresBinDir();
  if (!bin) {
    throw new Error(
      'PostgreSQL server binaries not found (pg_config --bindir, /usr/lib/postgresql/*/bin): install the Debian package postgresql',
    );
  }
  const dir = await mkdtemp(join(tmpdir(), 'mailplus-pg-'));
  const data = join(dir, 'data');
  const asRoot = process.getuid?.() === 0;
  const user = process.env.MAILPLUS_TEST_PG_USER ?? 'postgres';
  // as root: run as an unprivileged user (setpriv execs, so the PID we hold is postgres itself)
  const wrap = (cmd: string, args: string[]): [string, string[]] =>
    asRoot
      ? ['setpriv', [`--reuid=${user}`, `--regid=${user}`, '--init-groups', '--', cmd, ...args]]
      : [cmd, args];
  if (asRoot) {
    const { uid, gid } = idOf(user);
    await chown(dir, uid, gid);
  }
  const [initCmd, initArgs] = wrap(join(bin, 'initdb'), [
    '-D',
    data,
    '-U',
    'mailplus',
    '--auth=trust',
    '-E',
    'UTF8',
    '--no-sync',
    '--no-instructions',
  ]);
  try {
    execFileSync(initCmd, initArgs, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    const e = err as { stderr?: Buffer; message: string };
    throw new Error(`initdb failed: ${e.stderr?.toString() || e.message}`);
  }
  const port = await freePort();
  const [cmd, args] = wrap(join(bin, 'postgres'), [
    '-D',
    data,
    '-k',
    dir,
    '-p',
    String(port),
    '-c',
    'listen_addresses=127.0.0.1',
    '-c',
    'fsync=off',
    '-c',
    'synchronous_commit=off',
    '-c',
    'full_page_writes=off',
  ]);
  const proc: Managed = startProcess(cmd, args, { name: 'postgres', group: false });
  const stop = async () => {
    try {
      process.kill(proc.pid, 'SIGINT'); // fast shutdown: disconnects clients
    } catch {
      // gone already
    }
    const t = setTimeout(() => void proc.stop(0), 10_000);
    await proc.exited;
    clearTimeout(t);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await proc.waitForPort(port, '127.0.0.1', 30_000);
  } catch (err) {
    await stop();
    throw err;
  }
  const url = `postgres://mailplus@127.0.0.1:${port}/postgres`;
  return {
    url,
    port,
    pid: proc.pid,
    dataDir: data,
    async createDatabase(name = `t${process.pid}_${++dbCounter}`) {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE "${name.replace(/"/g, '')}"`);
      } finally {
        await c.end();
      }
      return `postgres://mailplus@127.0.0.1:${port}/${name}`;
    },
    stop,
  };
}
