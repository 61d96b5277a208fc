// Relay benchmark (npm run bench:relay). Postfix's smtp-source drives load through each
// system under test into the fast counting sink (its own process); a latency probe of ours
// runs one extra sequential session alongside. See docs/benchmarks.md.
//
//   node test/bench/relay-bench.ts [--quick] [--only mailplus,postfix,haraka,ceiling] [--out results.json]
//                                  [--abuse-only] [--abuse-pairs N] [--skip-limits-off]
//                                  [--auth-only | --no-auth | --verdicts-only]
//
// The verifying cells (auth=annotate, auth=enforce) run every system with SPF/DKIM/DMARC verification
// against one NSD serving the sender's records, on a corpus DKIM-signed for the run (auth-setup.ts).
//
// The abuse cell (mailplus only) runs the same normal load on fresh relays: quiet and beside hostile
// clients (test/bench/hostile.ts) in alternating pairs, then beside them with the limits switched off.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { FastSinkStats } from '../support/fast-sink.ts';
import { killOnExit, memoryOf, startProcess } from '../support/processes.ts';
import { findBinary } from '../support/smtp-sink.ts';
import {
  type AuthDns,
  type AuthMode,
  type AuthSetup,
  dkimKeyPair,
  FORGED_DOMAIN,
  SENDER_DOMAIN,
  type SignedCorpus,
  signedCorpus,
  startAuthDns,
} from './auth-setup.ts';
import { type HostileStats, startHostile } from './hostile.ts';
import { AUTH_HOLD_BYTES } from './relay-config.ts';
import { ALL_SUTS, mailplus, type RunningSut, type Sut } from './suts.ts';
import { checkVerdicts, type VerdictCheck } from './verdicts.ts';

const REPO = resolve(import.meta.dirname, '../..');
const NODE = join(REPO, 'node_modules/.bin/node');
const KiB = 1024;
const MiB = 1024 * KiB;

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    out: { type: 'string' },
    'abuse-only': { type: 'boolean', default: false },
    /** Quiet/abuse pairs in the abuse cell (default ABUSE_PAIRS; 0: no abuse cell). */
    'abuse-pairs': { type: 'string' },
    /** Leave out the abuse cell's last run (limits off: ~60 s, the relay grows to 300+ MiB). */
    'skip-limits-off': { type: 'boolean', default: false },
    'auth-only': { type: 'boolean', default: false },
    'no-auth': { type: 'boolean', default: false },
    'verdicts-only': { type: 'boolean', default: false },
    /** Only the cells whose label contains this text, e.g. "1KiB c=1 1/conn auth=annotate". */
    cell: { type: 'string' },
  },
});

interface Cell {
  size: number;
  concurrency: number;
  /** 'conn': one message per connection; 'session': smtp-source -d, messages share connections. */
  mode: 'conn' | 'session';
  messages: number;
  /** Verifying cell: every system checks SPF/DKIM/DMARC on the signed corpus, annotating or enforcing. */
  auth?: AuthMode;
}

function cells(quick: boolean): Cell[] {
  const out: Cell[] = [];
  const sizes = [KiB, 100 * KiB, 10 * MiB];
  const concs = quick ? [1, 50] : [1, 10, 50];
  const modes: Cell['mode'][] = quick ? ['conn'] : ['conn', 'session'];
  for (const size of sizes) {
    for (const concurrency of concs) {
      for (const mode of modes) {
        // bounded work per cell: roughly 1-5 s each on 2 cores
        let messages = size === KiB ? 2000 : size === 100 * KiB ? 600 : Math.max(4, concurrency * 2);
        if (concurrency === 1) messages = size === KiB ? 500 : size === 100 * KiB ? 200 : 4;
        if (quick) messages = Math.max(concurrency, Math.ceil(messages / 4));
        out.push({ size, concurrency, mode, messages });
      }
    }
  }
  return out;
}

/**
 * Verifying cells: each size at concurrency 1 and 50, one message per connection (where the per-
 * transaction DNS lookups weigh most), annotate then enforce. Fewer messages than the plain cells:
 * the slowest verifier sets the pace.
 */
function authCells(quick: boolean): Cell[] {
  const out: Cell[] = [];
  for (const auth of ['annotate', 'enforce'] as const) {
    for (const size of [KiB, 100 * KiB, 10 * MiB]) {
      for (const concurrency of [1, 50]) {
        let messages = size === KiB ? 1000 : size === 100 * KiB ? 400 : Math.max(4, concurrency * 2);
        if (concurrency === 1) messages = size === KiB ? 300 : size === 100 * KiB ? 120 : 4;
        if (quick) messages = Math.max(concurrency, Math.ceil(messages / 4));
        out.push({ size, concurrency, mode: 'conn', messages, auth });
      }
    }
  }
  return out;
}

/**
 * Peak RSS bound of the relay with verification on, as docs/authentication.md states it: the relay's
 * 150 MB, plus up to holdBytes held per session in DATA and, for an instant, one copy of it.
 */
function authRssBoundMB(cell: Cell): number {
  const sessions = cell.concurrency + 1; // smtp-source's and the probe's
  return (150e6 + 2 * AUTH_HOLD_BYTES * sessions) / 1e6;
}

// ------------------------------------------------------------------ sink (own process)
interface SinkProc {
  port: number;
  stats(): Promise<FastSinkStats>;
  ids(): Promise<Record<string, number>>;
  reset(): Promise<void>;
  stop(): Promise<void>;
}

async function startSinkProcess(): Promise<SinkProc> {
  const proc = startProcess(NODE, [join(REPO, 'test/bench/fast-sink-main.ts'), '--port', '0'], {
    name: 'fast-sink',
  });
  const line = await proc.waitForLine((l) => l.json?.event === 'listening', 10_000);
  const port = Number(line.json!.port);
  const control = `http://127.0.0.1:${line.json!.controlPort}`;
  const get = async (path: string, method = 'GET') => (await fetch(control + path, { method })).json();
  return {
    port,
    stats: () => get('/stats') as Promise<FastSinkStats>,
    ids: () => get('/ids') as Promise<Record<string, number>>,
    reset: async () => {
      await get('/reset', 'POST');
    },
    stop: async () => {
      await proc.stop(2000);
    },
  };
}

// ------------------------------------------------------------------ memory sampling
function childrenOf(pid: number): number[] {
  try {
    const text = process
      .getBuiltinModule('node:fs')
      .readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8') as string;
    return text.split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * Samples the PSS sum of the process tree every 100 ms (PSS, not RSS: Postfix's processes share
 * most pages); peak = max(sampled sum, the root's VmHWM, which catches spikes between samples).
 * The root's VmHWM is reset to its current RSS first (writing 5 to /proc/PID/clear_refs), so the
 * peak belongs to this cell and not to an earlier one of the same long-running process.
 * `otherPids`: processes of the system outside the root's tree (Postfix's milters), summed with it.
 */
function sampleMemory(rootPid: number, otherPids: number[] = []): { stop(): Promise<number> } {
  try {
    writeFileSync(`/proc/${rootPid}/clear_refs`, '5');
  } catch {
    // not permitted or not Linux: VmHWM stays the lifetime peak (documented in docs/benchmarks.md)
  }
  let peak = 0;
  let stopped = false;
  const loop = (async () => {
    for (let i = 0; i < 100_000 && !stopped; i++) {
      const tree = [rootPid, ...otherPids];
      for (let j = 0; j < tree.length && j < 500; j++) tree.push(...childrenOf(tree[j]));
      let sum = 0;
      for (const p of tree) sum += (await memoryOf(p))?.pss ?? 0;
      peak = Math.max(peak, sum);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      const root = await memoryOf(rootPid);
      return Math.max(peak, root?.hwm ?? 0);
    },
  };
}

// ------------------------------------------------------------------ load: smtp-source
interface SourceResult {
  exitCode: number | string;
  seconds: number;
  stderr: string;
}

function runSmtpSource(
  cell: Cell,
  port: number,
  timeoutMs: number,
  corpus?: SignedCorpus,
): Promise<SourceResult> {
  const bin = findBinary('smtp-source');
  const signed = cell.auth ? corpus?.get(cell.size) : undefined;
  if (cell.auth && !signed) throw new Error(`no signed message of ${cell.size} bytes in the corpus`);
  const flags = [
    '-s',
    String(cell.concurrency),
    '-m',
    String(cell.messages),
    // verifying cells: the signed message as is (-F sends the file's header and body, nothing else)
    ...(signed ? ['-F', signed.path] : ['-l', String(cell.size)]),
    '-N', // per-message recipient <seq>foo@bench.test: the sink's identifier for exactly-once
    '-f',
    `load@${signed ? SENDER_DOMAIN : 'source.test'}`,
    '-t',
    'foo@bench.test',
    '-M',
    signed ? SENDER_DOMAIN : 'source.test',
    ...(cell.mode === 'session' ? ['-d'] : []),
    `127.0.0.1:${port}`,
  ];
  return new Promise((resolvePromise) => {
    const t0 = performance.now();
    const child = spawn(bin, flags, { stdio: ['ignore', 'ignore', 'pipe'] });
    const forget = killOnExit(child.pid!);
    let stderr = '';
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      forget();
      resolvePromise({
        exitCode: code ?? signal ?? 'unknown',
        seconds: (performance.now() - t0) / 1000,
        stderr,
      });
    });
  });
}

// ------------------------------------------------------------------ latency probe
/**
 * One extra session of ours next to smtp-source: sequential transactions of the cell's size,
 * each timed from MAIL FROM to the final reply after the dot (connection setup excluded).
 */
async function probe(
  port: number,
  size: number,
  mode: Cell['mode'],
  until: () => boolean,
  maxMessages: number,
  signed?: Buffer,
) {
  const latencies: number[] = [];
  const acked: string[] = [];
  const body = signed ?? Buffer.alloc(size, 'x');
  if (!signed) for (let i = 76; i < size; i += 78) body.write('\r\n', i);
  const conn = await openSession(port);
  let session = conn;
  for (let n = 0; n < maxMessages && !until(); n++) {
    if (!session) session = await openSession(port);
    if (!session) break;
    const id = `probe-${n}`;
    const t0 = performance.now();
    // a signed message keeps its own header section; X-Bench-Id goes on top, outside the signature
    const header = Buffer.from(
      signed ? `X-Bench-Id: ${id}\r\n` : `X-Bench-Id: ${id}\r\nSubject: probe\r\n\r\n`,
    );
    const ok = await session.transaction(
      `MAIL FROM:<probe@${signed ? SENDER_DOMAIN : 'source.test'}>\r\nRCPT TO:<${id}@bench.test>\r\nDATA\r\n`,
      [header, body, Buffer.from('\r\n.\r\n')],
    );
    if (!ok) break;
    latencies.push(performance.now() - t0);
    acked.push(id);
    if (mode === 'conn') {
      session.close();
      session = undefined;
    }
  }
  session?.close();
  return { latencies, acked };
}

interface Session {
  transaction(cmds: string, data: Buffer[]): Promise<boolean>;
  close(): void;
}

/** A minimal pipelining SMTP client (replies read line by line; bounded by a 60 s timeout per reply). */
async function openSession(port: number): Promise<Session | undefined> {
  const sock = connect(port, '127.0.0.1');
  sock.setNoDelay(true);
  let buf = '';
  let waiting: ((line: string | undefined) => void) | undefined;
  const lines: string[] = [];
  sock.on('data', (d) => {
    buf += d.toString('latin1');
    let i = buf.indexOf('\n');
    while (i !== -1) {
      const line = buf.slice(0, i).replace(/\r$/, '');
      buf = buf.slice(i + 1);
      if (line[3] !== '-') lines.push(line); // final line of a reply
      i = buf.indexOf('\n');
    }
    if (waiting && lines.length) {
      const w = waiting;
      waiting = undefined;
      w(lines.shift());
    }
  });
  const closed = () => {
    if (waiting) {
      const w = waiting;
      waiting = undefined;
      w(undefined);
    }
  };
  sock.on('error', closed);
  sock.on('close', closed);
  const reply = (): Promise<string | undefined> =>
    lines.length
      ? Promise.resolve(lines.shift())
      : new Promise((r) => {
          const timer = setTimeout(() => r(undefined), 60_000);
          waiting = (l) => {
            clearTimeout(timer);
            r(l);
          };
        });
  if (!(await reply())?.startsWith('220')) {
    sock.destroy();
    return undefined;
  }
  sock.write('EHLO probe.test\r\n');
  if (!(await reply())?.startsWith('250')) {
    sock.destroy();
    return undefined;
  }
  return {
    async transaction(cmds, data) {
      sock.write(cmds); // MAIL, RCPT, DATA pipelined
      for (const expect of ['250', '250', '354']) {
        if (!(await reply())?.startsWith(expect)) return false;
      }
      for (const b of data) sock.write(b);
      return (await reply())?.startsWith('250') ?? false;
    },
    close() {
      sock.end('QUIT\r\n');
      setTimeout(() => sock.destroy(), 1000).unref();
    },
  };
}

function percentile(sorted: number[], p: number): number | undefined {
  if (!sorted.length) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

// ------------------------------------------------------------------ one cell
interface CellResult extends Cell {
  sut: string;
  ok: boolean;
  error?: string;
  seconds: number;
  msgsPerSec: number;
  mibPerSec: number;
  p50Ms?: number;
  p99Ms?: number;
  probeMessages: number;
  peakRssMiB?: number;
  acked: number;
  /** Received by the sink (smtp-source + probe) when the wait ended. */
  delivered: number;
  deliverSeconds: number;
  exactlyOnce: boolean;
  missing: number;
  duplicates: number;
}

async function runCell(
  sut: Sut,
  running: RunningSut,
  sink: SinkProc,
  cell: Cell,
  beside?: () => Promise<void>,
  sourceTimeoutMs = 180_000,
  corpus?: SignedCorpus,
): Promise<CellResult> {
  await sink.reset();
  const mem = running.pid ? sampleMemory(running.pid, running.otherPids) : undefined;
  // the abuse cell's hostile clients start (and settle) inside the measured window
  if (beside) await beside();
  let sourceDone = false;
  const t0 = performance.now();
  const signed = cell.auth ? corpus?.get(cell.size)?.wire : undefined;
  const probeRun = probe(running.port, cell.size, cell.mode, () => sourceDone, 10_000, signed);
  const source = await runSmtpSource(cell, running.port, sourceTimeoutMs, corpus);
  sourceDone = true;
  const probed = await probeRun;
  const ackedAt = performance.now();
  const acked = source.exitCode === 0 ? cell.messages : 0;
  const expected = acked + probed.acked.length;
  // wait (bounded) until the sink has everything: a queueing MTA delivers after acknowledging
  let st = await sink.stats();
  const waitLimit = running.queueing ? 120_000 : 10_000;
  for (let i = 0; i < 10_000 && st.messages < expected && performance.now() - ackedAt < waitLimit; i++) {
    await new Promise((r) => setTimeout(r, 50));
    st = await sink.stats();
  }
  const deliveredAt = performance.now();
  const peak = mem ? await mem.stop() : undefined;

  const ids = await sink.ids();
  let missing = 0;
  let duplicates = 0;
  const want = new Set<string>();
  if (acked) for (let i = 1; i <= cell.messages; i++) want.add(`${i}foo@bench.test`);
  for (const id of probed.acked) want.add(id);
  for (const id of want) {
    const c = ids[id] ?? 0;
    if (c === 0) missing++;
    else if (c > 1) duplicates += c - 1;
  }
  const unexpected = Object.keys(ids).filter((id) => !want.has(id)).length;
  const lat = probed.latencies.slice().sort((a, b) => a - b);
  const seconds = source.seconds;
  const ok = source.exitCode === 0;
  return {
    ...cell,
    sut: sut.name,
    ok,
    error: ok ? undefined : `smtp-source exit ${source.exitCode}: ${source.stderr.trim().split('\n').pop()}`,
    seconds,
    msgsPerSec: ok ? cell.messages / seconds : 0,
    mibPerSec: ok ? (cell.messages * cell.size) / MiB / seconds : 0,
    p50Ms: percentile(lat, 50),
    p99Ms: percentile(lat, 99),
    probeMessages: lat.length,
    peakRssMiB: peak === undefined ? undefined : peak / MiB,
    acked: expected,
    delivered: st.messages,
    deliverSeconds: (deliveredAt - t0) / 1000,
    exactlyOnce: ok && missing === 0 && duplicates === 0 && unexpected === 0,
    missing,
    duplicates,
  };
}

// ------------------------------------------------------------------ abuse cell
/** Hostile clients' address: not the load generator's (127.0.0.1, exempt), so the limits apply. */
const HOSTILE_FROM = '127.0.66.1';
// 50 hostile sessions: as many holders as it takes, with the normal load's 10 sessions and the probe,
// to exhaust the relay's 50 upstream connections per target when nothing limits them
const HOLDERS = 45;
const JUNK = 5;
const JUNK_RCPTS = 1000;
/** The trace store is down for the whole cell (nothing listens on port 1): entries pile up in memory. */
const TRACE_DOWN = ['--trace-store', 'postgres://bench@127.0.0.1:1/trace'];
/** What the relay did before the fairness limits: none of them, 10,000 trace entries of any size. */
const LIMITS_OFF = [
  '--soft-error-limit',
  '0',
  '--hard-error-limit',
  '0',
  '--max-connections-per-client',
  '0',
  '--max-connections-per-network',
  '0',
  '--max-upstream-per-client',
  '0',
  '--upstream-hold-timeout',
  '0',
  '--max-recorded-recipients',
  '10000',
  '--trace-buffer-size',
  '4Gi',
];

/** A normal load that has not finished by then is stopped and reported as ended (limits off: starved). */
const ABUSE_SOURCE_TIMEOUT_MS = 60_000;

/**
 * Quiet/abuse pairs: on a shared machine the load of other processes moves between runs, so each
 * abuse run is compared with the quiet run just before it and the target is judged on the median.
 */
const ABUSE_PAIRS = 5;

type AbuseKind = 'quiet' | 'abuse' | 'abuse, limits off';

interface AbuseRun {
  run: string;
  kind: AbuseKind;
  result: CellResult;
  hostile?: HostileStats;
  /** The relay process ended during the run (e.g. its heap limit with the limits off): how. */
  relayGone?: string;
  /** mailplus_relay_limit_hits_total by limit, at the end of the run (non-zero ones). */
  limitHits: Record<string, number>;
  /** The machine's 1-minute load average at the end of the run (the machine may be shared). */
  load: number;
}

function abuseCell(quick: boolean): Cell {
  // a few seconds of load on a quiet machine; the holders settle for 2 s before it starts
  return { size: KiB, concurrency: 10, mode: 'conn', messages: quick ? 4000 : 12_000 };
}

async function limitHits(admin: number | undefined): Promise<Record<string, number>> {
  if (!admin) return {};
  const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^mailplus_relay_limit_hits_total\{limit="([a-z_]+)"\} (\d+)/gm)) {
    if (Number(m[2]) > 0) out[m[1]] = Number(m[2]);
  }
  return out;
}

async function runAbuse(
  sink: SinkProc,
  quick: boolean,
  pairs: number,
  limitsOff: boolean,
): Promise<AbuseRun[]> {
  const cell = abuseCell(quick);
  const plan: Array<[string, AbuseKind, string[], boolean]> = [];
  for (let i = 1; i <= pairs; i++) {
    plan.push([`quiet ${i}`, 'quiet', TRACE_DOWN, false], [`abuse ${i}`, 'abuse', TRACE_DOWN, true]);
  }
  if (limitsOff) {
    plan.push(['abuse, limits off', 'abuse, limits off', [...TRACE_DOWN, ...LIMITS_OFF], true]);
  }
  const out: AbuseRun[] = [];
  for (const [run, kind, relayArgs, hostileOn] of plan) {
    const running = await mailplus.start(sink.port, relayArgs);
    let hostile: ReturnType<typeof startHostile> | undefined;
    try {
      const result = await runCell(
        mailplus,
        running,
        sink,
        cell,
        hostileOn
          ? async () => {
              hostile = startHostile({
                port: running.port,
                from: HOSTILE_FROM,
                holders: HOLDERS,
                junk: JUNK,
                rcptsPerJunkTransaction: JUNK_RCPTS,
                servedDomain: 'bench.test',
              });
              // the holders take their upstream connections before the normal load starts
              await new Promise((r) => setTimeout(r, 2000));
            }
          : undefined,
        ABUSE_SOURCE_TIMEOUT_MS,
      );
      const stats = hostile ? await hostile.stop() : undefined;
      // a relay that died (its heap limit, with the limits off) has no /metrics left to read
      const relayGone = running.gone?.();
      const hits = relayGone ? {} : await limitHits(running.admin);
      const load = loadavg()[0];
      out.push({ run, kind, result, hostile: stats, relayGone, limitHits: hits, load });
      console.error(
        `abuse     ${run.padEnd(20)} ${result.ok ? `${result.msgsPerSec.toFixed(1)} msg/s` : result.error}` +
          ` p99=${fmt(result.p99Ms)}ms rss=${fmt(result.peakRssMiB)}MiB delivered=${result.delivered}/${result.acked}` +
          `${result.exactlyOnce ? '' : ' NOT-EXACTLY-ONCE'}${stats ? ` hostile=${JSON.stringify(stats)}` : ''}` +
          `${relayGone ? ` relay ${relayGone}` : ''}` +
          ` limits=${JSON.stringify(hits)} load=${load.toFixed(1)}`,
      );
    } finally {
      await hostile?.stop();
      await running.stop();
    }
  }
  return out;
}

function median(xs: number[]): number | undefined {
  const s = xs.slice().sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : undefined;
}

function abuseReport(runs: AbuseRun[]): string {
  const cell = runs[0]?.result;
  /** Ratios of a run against the quiet run just before it. */
  const ratios = (i: number) => {
    const quiet = runs
      .slice(0, i)
      .reverse()
      .find((x) => x.kind === 'quiet')?.result;
    const r = runs[i].result;
    return {
      tput: quiet?.ok && r.ok ? r.msgsPerSec / quiet.msgsPerSec : undefined,
      p99: quiet?.p99Ms && r.p99Ms !== undefined ? r.p99Ms / quiet.p99Ms : undefined,
    };
  };
  const rows = [
    `Abuse cell: normal load ${cell ? label(cell) : ''} from 127.0.0.1 (+ probe); hostile from ${HOSTILE_FROM}: ${HOLDERS} idle holders (MAIL + RCPT, then NOOP every second, reconnecting) and ${JUNK} junk senders (MAIL + ${JUNK_RCPTS} RCPTs to unserved domains, RSET, again, reconnecting); trace store unreachable throughout.`,
    '',
    '| run | normal msg/s | vs quiet | p99 ms | vs quiet | peak RSS MiB | delivered/acked | exactly once | hostile clients: what the relay did | limit hits | load | target |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | ---: | --- |',
  ];
  const pass = (b: boolean) => (b ? 'PASS' : 'FAIL');
  const rssOk = (r: CellResult) => r.peakRssMiB !== undefined && r.peakRssMiB * MiB < 150e6;
  for (const [i, { run, kind, result: r, hostile, relayGone, limitHits: hits, load }] of runs.entries()) {
    const { tput, p99 } = kind === 'quiet' ? { tput: 1, p99: 1 } : ratios(i);
    const target = kind === 'abuse' ? `RSS<150MB ${pass(rssOk(r))}` : '';
    const h = hostile
      ? [
          `${hostile.connections} connections`,
          `${hostile.holdsTaken} upstream holds`,
          ...Object.entries(hostile.holdsRefused).map(([k, v]) => `${v}x RCPT ${k}`),
          ...Object.entries(hostile.closedBy).map(([k, v]) => `${v}x closed ${k}`),
          `${hostile.junkRcpts} junk RCPTs in ${hostile.junkTransactions} transactions`,
        ].join('; ')
      : '-';
    const limits = relayGone
      ? `relay ${relayGone}`
      : Object.entries(hits)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ');
    // a normal load that did not finish (killed at the bound, or aborted on a refusal) is reported as
    // ended; for it, exactly once covers what was acknowledged (the probe's messages)
    const ended = r.error?.includes('SIGKILL')
      ? `ended: not done after ${ABUSE_SOURCE_TIMEOUT_MS / 1000} s`
      : `ended: ${r.error}`;
    const once = r.ok
      ? r.exactlyOnce
        ? 'yes'
        : 'NO'
      : `${r.missing + r.duplicates === 0 ? 'yes' : 'NO'} (acked ones)`;
    rows.push(
      `| ${run} | ${r.ok ? fmt(r.msgsPerSec) : ended} | ${tput === undefined ? '-' : `${tput.toFixed(2)}x`} | ${fmt(r.p99Ms)} | ${p99 === undefined ? '-' : `${p99.toFixed(2)}x`} | ${fmt(r.peakRssMiB)} | ${r.delivered}/${r.acked} | ${once} | ${h} | ${limits || '-'} | ${load.toFixed(1)} | ${target} |`,
    );
  }
  const abused = [...runs.entries()].filter(([, x]) => x.kind === 'abuse');
  const tputs = abused.map(([i]) => ratios(i).tput).filter((x) => x !== undefined);
  const p99s = abused.map(([i]) => ratios(i).p99).filter((x) => x !== undefined);
  const mt = median(tputs);
  const mp = median(p99s);
  rows.push(
    '',
    `Abuse target, medians over ${abused.length} pairs: normal msg/s ${mt === undefined ? '-' : `${mt.toFixed(2)}x`} of quiet (>= 0.8x: ${pass(mt !== undefined && mt >= 0.8)}), p99 ${mp === undefined ? '-' : `${mp.toFixed(2)}x`} (<= 1.2x: ${pass(mp !== undefined && mp <= 1.2)}), peak RSS < 150 MB in every abuse run: ${pass(abused.every(([, x]) => rssOk(x.result)))}.`,
  );
  return rows.join('\n');
}

// ------------------------------------------------------------------ main
function label(c: Cell): string {
  const size = c.size >= MiB ? `${c.size / MiB}MiB` : `${c.size / KiB}KiB`;
  return `${size} c=${c.concurrency} ${c.mode === 'conn' ? '1/conn' : 'n/conn'}${c.auth ? ` auth=${c.auth}` : ''}`;
}

/** The run's DNS server and signed corpus for the verifying cells; stop() removes both. */
async function authFixtures(): Promise<{
  dns: AuthDns;
  corpus: SignedCorpus;
  privateKey: string;
  stop(): Promise<void>;
}> {
  const dir = await mkdtemp(join(tmpdir(), 'mailplus-bench-auth-'));
  try {
    const key = dkimKeyPair();
    const dns = await startAuthDns(dir, key.publicKeyBase64);
    const corpus = await signedCorpus(dir, [KiB, 100 * KiB, 10 * MiB], key.privateKey).catch(async (e) => {
      await dns.stop();
      throw e;
    });
    return {
      dns,
      corpus,
      privateKey: key.privateKey,
      async stop() {
        await dns.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

async function runOne(sut: Sut, sink: SinkProc, cell: Cell, auth?: AuthSetup): Promise<CellResult> {
  const running = await sut.start(sink.port, [], auth);
  try {
    const r = await runCell(sut, running, sink, cell, undefined, 180_000, auth?.corpus);
    console.error(
      `${sut.name.padEnd(9)} ${label(cell).padEnd(34)} ${r.ok ? `${r.msgsPerSec.toFixed(1)} msg/s` : r.error}` +
        ` p50=${fmt(r.p50Ms)}ms p99=${fmt(r.p99Ms)}ms rss=${fmt(r.peakRssMiB)}MiB` +
        ` delivered=${r.delivered}/${r.acked}${r.exactlyOnce ? '' : ' NOT-EXACTLY-ONCE'}`,
    );
    return r;
  } finally {
    await running.stop();
  }
}

async function main(): Promise<number> {
  const only = args.only?.split(',').map((s) => s.trim());
  const verdictsOnly = args['verdicts-only'] ?? false;
  const authOnly = (args['auth-only'] || verdictsOnly) ?? false;
  const suts = ALL_SUTS.filter((s) => !only || only.includes(s.name));
  const chosen = (c: Cell) => !args.cell || label(c).includes(args.cell);
  const plan = args['abuse-only'] || authOnly ? [] : cells(args.quick ?? false).filter(chosen);
  const authPlan = args['abuse-only'] || args['no-auth'] ? [] : authCells(args.quick ?? false).filter(chosen);
  const pairs = Number(args['abuse-pairs'] ?? ABUSE_PAIRS);
  if (!Number.isInteger(pairs) || pairs < 0 || pairs > 20) {
    throw new Error(`--abuse-pairs must be a whole number from 0 to 20, got "${args['abuse-pairs']}"`);
  }
  // --abuse-pairs 0: no abuse cell
  const withAbuse = !authOnly && (!only || only.includes('mailplus')) && !mailplus.unavailable() && pairs > 0;
  let abuse: AbuseRun[] = [];
  const sink = await startSinkProcess();
  const results: CellResult[] = [];
  const verdicts: VerdictCheck[] = [];
  const skipped: Record<string, string> = {};
  const started = Date.now();
  const load: string[] = [`start: ${loadAverage()}`];
  try {
    const runnable = suts.filter((sut) => {
      const why = sut.unavailable();
      if (why) {
        skipped[sut.name] = why;
        console.error(`skip ${sut.name}: ${why}`);
      }
      return !why;
    });
    // A fresh instance per cell: each cell's peak memory and behaviour are its own, not what an
    // earlier cell left behind in a long-running process.
    for (const sut of runnable) for (const cell of plan) results.push(await runOne(sut, sink, cell));
    if (plan.length) load.push(`after the plain cells: ${loadAverage()}`);
    if (authPlan.length && runnable.length) {
      const fixtures = await authFixtures();
      try {
        for (const mode of ['annotate', 'enforce'] as const) {
          const auth: AuthSetup = { mode, ...fixtures };
          const verifying: Sut[] = [];
          for (const sut of runnable) {
            const key = `${sut.name} auth=${mode}`;
            // the ceiling verifies nothing: it shows what the load generator and sink do with the corpus
            if (!sut.authUnavailable) {
              if (sut.name === 'ceiling') verifying.push(sut);
              continue;
            }
            const why = sut.authUnavailable();
            if (why) {
              skipped[key] = why;
              console.error(`skip ${key}: ${why}`);
              continue;
            }
            // before measuring: the system really verifies (a pass annotated, forgeries caught)
            const check = await checkVerdicts(sut, auth);
            verdicts.push(check);
            console.error(`verdicts ${key}: ${check.ok ? 'ok' : `FAILED: ${check.problems.join('; ')}`}`);
            if (check.ok) verifying.push(sut);
            else skipped[key] = `verdict check failed: ${check.problems.join('; ')}`;
          }
          if (verdictsOnly) continue;
          // cell by cell, every system in turn: on a shared machine the load moves within minutes, and
          // systems compared in one cell should meet about the same load
          for (const cell of authPlan.filter((c) => c.auth === mode)) {
            for (const sut of verifying) results.push(await runOne(sut, sink, cell, auth));
          }
          load.push(`after auth=${mode}: ${loadAverage()}`);
        }
      } finally {
        await fixtures.stop();
      }
    }
    if (withAbuse) abuse = await runAbuse(sink, args.quick ?? false, pairs, !args['skip-limits-off']);
  } finally {
    await sink.stop();
  }
  const table = report(results, [...plan, ...authPlan]);
  if (results.length) console.log(table);
  if (verdicts.length) console.log(`\n${verdictReport(verdicts)}`);
  for (const [name, why] of Object.entries(skipped)) console.log(`skipped ${name}: ${why}`);
  if (abuse.length) console.log(`\n${abuseReport(abuse)}`);
  console.log(`load average (1, 5, 15 min): ${load.join('; ')}; end: ${loadAverage()}`);
  console.log(`total ${((Date.now() - started) / 1000).toFixed(0)} s`);
  if (args.out) {
    await writeFile(
      args.out,
      `${JSON.stringify({ date: new Date().toISOString(), quick: args.quick, load, skipped, results, verdicts, abuse }, null, 2)}\n`,
    );
  }
  // pass-through systems must deliver every acknowledged message exactly once
  // in the abuse cell, a normal load ended by a reply (limits off: the starved pool's 451) is
  // reported as such in the table; what was acknowledged must still have arrived exactly once
  const abuseBroken = abuse.filter((a) => a.result.missing + a.result.duplicates > 0);
  const broken = [
    ...results.filter((r) => !r.exactlyOnce && r.sut !== 'postfix'),
    ...abuseBroken.map((a) => a.result),
  ];
  const postfixLost = results.filter((r) => r.sut === 'postfix' && r.ok && r.missing + r.duplicates > 0);
  if (broken.length || postfixLost.length) {
    console.error(`exactly-once check FAILED in ${broken.length + postfixLost.length} cell(s)`);
    return 1;
  }
  return 0;
}

function loadAverage(): string {
  return loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');
}

function verdictReport(checks: VerdictCheck[]): string {
  const rows = [
    `Verdict check before the verifying cells: a message signed by ${SENDER_DOMAIN}; a forgery from ${FORGED_DOMAIN} (SPF fail, DMARC p=reject); a From: forgery (envelope ${SENDER_DOMAIN}, SPF and DKIM pass, From: ${FORGED_DOMAIN}: only DMARC fails):`,
    '',
    '| system | mode | signed message | forgery | From: forgery | Authentication-Results on the signed message | ok |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const c of checks) {
    rows.push(
      `| ${c.sut} | ${c.mode} | ${c.signed} | ${c.forged} | ${c.fromForged} | ${c.authResults.join(' / ').replaceAll('|', '\\|') || '-'} | ${c.ok ? 'yes' : `NO: ${c.problems.join('; ')}`} |`,
    );
  }
  return rows.join('\n');
}

function fmt(v: number | undefined, digits = 1): string {
  return v === undefined ? '-' : v.toFixed(digits);
}

function report(results: CellResult[], plan: Cell[]): string {
  const rows: string[] = [];
  rows.push(
    '| cell | system | msg/s | MiB/s | p50 ms | p99 ms | peak RSS MiB | delivered/acked | exactly once | vs best(postfix,haraka) | vs ceiling | target |',
  );
  rows.push('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |');
  for (const cell of plan) {
    const inCell = results.filter(
      (r) =>
        r.size === cell.size &&
        r.concurrency === cell.concurrency &&
        r.mode === cell.mode &&
        r.auth === cell.auth,
    );
    const rate = (name: string) => inCell.find((r) => r.sut === name)?.msgsPerSec;
    const best = Math.max(rate('postfix') ?? 0, rate('haraka') ?? 0);
    const ceil = rate('ceiling');
    for (const r of inCell) {
      let target = '';
      if (r.sut === 'mailplus') {
        const fast = best ? (r.msgsPerSec >= best ? 'PASS' : 'FAIL') : 'n/a';
        target = `throughput ${fast}`;
        if (cell.auth) {
          const bound = authRssBoundMB(cell);
          const under = r.peakRssMiB !== undefined && r.peakRssMiB * MiB < bound * 1e6;
          target += `, RSS<${bound.toFixed(1)}MB ${under ? 'PASS' : 'FAIL'}`;
        } else if (cell.size === 10 * MiB && cell.concurrency === 50) {
          target += `, RSS<150MB ${r.peakRssMiB !== undefined && r.peakRssMiB * MiB < 150e6 ? 'PASS' : 'FAIL'}`;
        }
      }
      rows.push(
        `| ${label(cell)} | ${r.sut} | ${r.ok ? fmt(r.msgsPerSec) : 'error'} | ${fmt(r.mibPerSec)} | ${fmt(r.p50Ms)} | ${fmt(r.p99Ms)} | ${fmt(r.peakRssMiB)} | ${r.delivered}/${r.acked} | ${r.exactlyOnce ? 'yes' : 'NO'} | ${best && r.ok ? `${(r.msgsPerSec / best).toFixed(2)}x` : '-'} | ${ceil && r.ok ? `${(r.msgsPerSec / ceil).toFixed(2)}x` : '-'} | ${target} |`,
      );
    }
  }
  return rows.join('\n');
}

process.exitCode = await main();
