// Child processes for tests and benchmarks: spawn, capture output lines (JSON log lines
// parsed), wait for a line or a listening port, stop by PID (SIGTERM, then SIGKILL).
// Every process started here is killed when this process exits, even on a crash.
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { connect, createServer } from 'node:net';

export interface OutputLine {
  stream: 'stdout' | 'stderr';
  text: string;
  /** The parsed object when the line is a JSON object (a log line), else undefined. */
  json?: Record<string, unknown>;
  at: number;
}

export interface Managed {
  pid: number;
  child: ChildProcess;
  lines: OutputLine[];
  /** Resolves with the first line (already seen or future) matching the predicate. */
  waitForLine(pred: (l: OutputLine) => boolean, timeoutMs?: number): Promise<OutputLine>;
  /** Resolves once host:port accepts a TCP connection (polls every 25 ms). */
  waitForPort(port: number, host?: string, timeoutMs?: number): Promise<void>;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL after graceMs; resolves when the process is gone. */
  stop(graceMs?: number): Promise<number | string>;
}

export interface StartOptions extends Pick<SpawnOptions, 'cwd' | 'env'> {
  /** Label for error messages; defaults to the command. */
  name?: string;
  /** Keep at most this many lines (oldest dropped); default 10 000. */
  maxLines?: number;
  /** Echo output to this process's stderr (debugging). */
  echo?: boolean;
  /** Start the child in its own process group, so stop() signals its children too. Default true. */
  group?: boolean;
}

const live = new Map<number, { group: boolean }>();
let hooksInstalled = false;

function killNow(pid: number, group: boolean, signal: NodeJS.Signals): void {
  try {
    process.kill(group ? -pid : pid, signal);
  } catch {
    // already gone
  }
}

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  const killAll = () => {
    for (const [pid, { group }] of live) killNow(pid, group, 'SIGKILL');
    live.clear();
  };
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      killAll();
      process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
    });
  }
  // An uncaught exception still emits 'exit', so killAll covers crashes too.
}

/** Registers a PID this module did not spawn (e.g. a daemon's master) to be killed on exit. */
export function killOnExit(pid: number): () => void {
  installExitHooks();
  live.set(pid, { group: false });
  return () => live.delete(pid);
}

export function startProcess(command: string, args: string[], opts: StartOptions = {}): Managed {
  installExitHooks();
  const name = opts.name ?? command;
  const group = opts.group ?? true;
  const child = spawn(command, args, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: group,
  });
  if (child.pid === undefined) {
    // spawn failure (ENOENT...) is reported asynchronously through 'error'
    throw new Error(`${name}: could not spawn ${command} (is it installed? scripts/ci-deps.sh)`);
  }
  const pid = child.pid;
  live.set(pid, { group });
  const lines: OutputLine[] = [];
  const maxLines = opts.maxLines ?? 10_000;
  const watchers = new Set<(l: OutputLine) => void>();

  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => {
      live.delete(pid);
      resolve(code ?? signal ?? 'unknown');
    });
    child.once('error', (err) => {
      live.delete(pid);
      resolve(`error: ${err.message}`);
    });
  });

  for (const stream of ['stdout', 'stderr'] as const) {
    let rest = '';
    child[stream]!.setEncoding('utf8');
    child[stream]!.on('data', (chunk: string) => {
      const parts = (rest + chunk).split('\n');
      rest = parts.pop() ?? '';
      for (const text of parts) {
        let json: Record<string, unknown> | undefined;
        if (text.startsWith('{')) {
          try {
            const v = JSON.parse(text);
            if (v && typeof v === 'object' && !Array.isArray(v)) json = v;
          } catch {
            // not JSON after all
          }
        }
        const line: OutputLine = { stream, text, json, at: Date.now() };
        if (opts.echo) process.stderr.write(`[${name}] ${text}\n`);
        lines.push(line);
        if (lines.length > maxLines) lines.shift();
        for (const w of watchers) w(line);
      }
    });
  }

  const waitForLine = (pred: (l: OutputLine) => boolean, timeoutMs = 10_000): Promise<OutputLine> => {
    const seen = lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const done = () => {
        watchers.delete(watch);
        clearTimeout(timer);
      };
      const watch = (l: OutputLine) => {
        if (pred(l)) {
          done();
          resolve(l);
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new Error(`${name}: no matching output line within ${timeoutMs} ms; last lines:\n${tail(lines)}`),
        );
      }, timeoutMs);
      watchers.add(watch);
      exited.then((code) => {
        if (!watchers.has(watch)) return;
        done();
        reject(new Error(`${name} exited (${code}) before a matching line; last lines:\n${tail(lines)}`));
      });
    });
  };

  const waitForPort = async (port: number, host = '127.0.0.1', timeoutMs = 10_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    let exitCode: number | string | undefined;
    exited.then((c) => {
      exitCode = c;
    });
    for (let i = 0; i < 100_000; i++) {
      if (exitCode !== undefined)
        throw new Error(`${name} exited (${exitCode}); last lines:\n${tail(lines)}`);
      if (await canConnect(port, host)) return;
      if (Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(
      `${name}: ${host}:${port} not accepting within ${timeoutMs} ms; last lines:\n${tail(lines)}`,
    );
  };

  const stop = async (graceMs = 5000): Promise<number | string> => {
    if (live.has(pid)) {
      killNow(pid, group, 'SIGTERM');
      const timer = setTimeout(() => killNow(pid, group, 'SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(timer);
      // children left in the group (if any) go too
      if (group) killNow(pid, true, 'SIGKILL');
      return code;
    }
    return exited;
  };

  return { pid, child, lines, waitForLine, waitForPort, exited, stop };
}

function tail(lines: OutputLine[], n = 20): string {
  return lines
    .slice(-n)
    .map((l) => `  ${l.stream}: ${l.text}`)
    .join('\n');
}

export function canConnect(port: number, host = '127.0.0.1', timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ port, host });
    const finish = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => finish(false));
    sock.once('connect', () => finish(true));
    sock.once('error', () => finish(false));
  });
}

/*
 * Test ports come from below the kernel's ephemeral range (32768-60999 by default), in a slice of
 * their own for each test worker. A port taken from the ephemeral range and released could be
 * handed to any outgoing connection of a parallel test before our server binds it (seen as
 * EADDRINUSE under load); a port below that range is only ever taken by an explicit bind.
 */
const PORT_FLOOR = 20_000;
const PORT_SLICE = 1_000;
const PORT_SLICES = 12;
const worker = Number(process.env.VITEST_POOL_ID ?? process.env.VITEST_WORKER_ID ?? process.pid);
const sliceBase = PORT_FLOOR + (worker % PORT_SLICES) * PORT_SLICE;
let nextOffset = (process.pid * 7) % PORT_SLICE;

/** Free for TCP and for UDP (the DNS rig serves both on one port). */
function bindable(port: number, host: string): Promise<boolean> {
  const tcp = new Promise<boolean>((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
  const udp = new Promise<boolean>((resolve) => {
    const sock = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    sock.unref();
    sock.once('error', () => resolve(false));
    sock.bind(port, host, () => sock.close(() => resolve(true)));
  });
  return Promise.all([tcp, udp]).then(([a, b]) => a && b);
}

/** A port that was free a moment ago, from this worker's slice below the ephemeral range. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let tries = 0; tries < PORT_SLICE; tries++) {
    const port = sliceBase + nextOffset;
    nextOffset = (nextOffset + 1) % PORT_SLICE;
    if (await bindable(port, host)) return port;
  }
  throw new Error(`no free port in ${sliceBase}-${sliceBase + PORT_SLICE - 1} on ${host}`);
}

/**
 * Memory of a PID in bytes from /proc: peak RSS (VmHWM), current RSS, and PSS (proportional
 * set size: shared pages divided among sharers, so summing a process tree does not overcount).
 * Undefined once the process is gone.
 */
export async function memoryOf(pid: number): Promise<{ hwm: number; rss: number; pss: number } | undefined> {
  const { readFile } = await import('node:fs/promises');
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const kb = (text: string, key: string) =>
      Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
    const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => '');
    const rss = kb(status, 'VmRSS');
    return { hwm: kb(status, 'VmHWM'), rss, pss: rollup ? kb(rollup, 'Pss') : rss };
  } catch {
    return undefined;
  }
}
