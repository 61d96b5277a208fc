// V8 flags for the long-running commands (`relay`, `dev`, `operator`). Pure: bin/mailplus.js passes
// in what it knows about the process and re-executes itself once with the flags returned here.
//
// Young generation: left alone it grows to 2 x 32 MB semi-spaces under mail load (per-message
// garbage is high), which alone was ~35-60 MB of RSS with 50 sessions of small messages; 4 MB
// semi-spaces cost no measurable throughput.
//
// Old generation: V8 lets the old generation grow to up to 4x its live size before a full GC when
// the heap limit is large (its growing factor scales from 1.3 at a 256 MB old-generation limit to 4
// at 2 GB and more, without pointer compression), and Node sizes that limit from the memory it may
// use: the cgroup limit in a container, else the machine's RAM. In the chart's pod (512 MiB memory
// limit) the limit is 256 MB, factor 1.3. On a host without a memory limit (a VM, a developer
// machine, the benchmark) it is 4 GB, factor 4: sessions that survive two young-generation GCs
// (frequent when the CPU is busy: a session then lasts longer than the GC interval) are promoted,
// die in the old generation and pile up, measured 20 -> 60-80 MB of old space with ~20 MB live and
// RSS 110 -> 150-195 MiB under 1 KiB messages at 10 sessions. Without a memory limit, the relay
// therefore runs with the old-generation limit its default pod gets.
//
// Optimizing compiler: V8 compiles hot functions with TurboFan on its worker threads by default.
// Each job's scratch memory is malloc'd there, in glibc per-thread arenas that keep it resident
// after the job ends: under mail load with sender authentication on (mailauth's hot paths are
// optimized during the first few hundred messages), those arenas grew by ~22 MB and the main heap by
// ~10 MB, RSS 101 -> 143-150 MiB at 1 KiB, one session. Compiling on the main thread frees the
// scratch memory back to the main arena, which returns it: the same cell peaked at 109-116 MiB, with
// throughput unchanged within the benchmark's noise (docs/benchmarks.md).

/** Old-generation limit (MB) Node derives for the chart's default 512 MiB pod: what we use without a limit. */
export const UNCONSTRAINED_OLD_SPACE_MB = 256;

/**
 * @param {{ execArgv: readonly string[], nodeOptions: string | undefined, constrainedMemory: number, totalMemory: number }} p
 *   constrainedMemory: process.constrainedMemory() (0 or more than the machine has: no limit)
 * @returns {string[]} flags to add; empty when the operator already set them (their flags win)
 */
export function relayV8Flags({ execArgv, nodeOptions, constrainedMemory, totalMemory }) {
  const has = given(execArgv, nodeOptions);
  const flags = [];
  if (!has('--max-semi-space-size')) flags.push('--max-semi-space-size=4');
  const limited = constrainedMemory > 0 && constrainedMemory < totalMemory;
  if (!limited && !has('--max-old-space-size', '--max-old-space-size-percentage', '--max-heap-size')) {
    flags.push(`--max-old-space-size=${UNCONSTRAINED_OLD_SPACE_MB}`);
  }
  if (!has('--concurrent-recompilation', '--no-concurrent-recompilation'))
    flags.push('--no-concurrent-recompilation');
  return flags;
}

/**
 * The operator: the same young generation and compiler thread choice, for the same reasons, and
 * measured at 100k MailRoutes (docs/benchmarks.md): without them its RSS was ~300 MB above its V8
 * heap in use (new space grown to 134 MB, TurboFan scratch memory in per-thread arenas), with them
 * 150-260 MB. And the old generation grows by 20 % over what the last full GC kept instead of V8's
 * own factor (up to 4x): the operator's live heap is large and long-lived (its caches) and its
 * garbage comes in bursts (a LIST, a compile, 100k status writes), so V8's factor let the heap hold
 * ~100 MB of garbage after publishing 100k routes (RSS 403 -> 347 MB, 657 -> 452 MB while writing
 * the statuses, at no cost to the change latency). No old-generation limit: the operator's heap
 * grows with the fleet (every MailRoute is in its caches), so it takes what Node derives from the
 * pod's memory limit.
 * @param {{ execArgv: readonly string[], nodeOptions: string | undefined }} p
 * @returns {string[]} flags to add; empty when the operator already set them (their flags win)
 */
export function operatorV8Flags({ execArgv, nodeOptions }) {
  const has = given(execArgv, nodeOptions);
  const flags = [];
  if (!has('--max-semi-space-size')) flags.push('--max-semi-space-size=4');
  if (!has('--concurrent-recompilation', '--no-concurrent-recompilation'))
    flags.push('--no-concurrent-recompilation');
  if (!has('--heap-growing-percent')) flags.push('--heap-growing-percent=20');
  return flags;
}

/**
 * glibc malloc settings for the operator, fixed instead of adaptive. glibc raises its mmap threshold
 * to the size of any large block freed (up to 32 MB) and trims its heap only when twice that is free
 * at the top: after the operator's bursts (a LIST, 100k status writes, TLS reads of watch streams)
 * freed memory stayed resident in the malloc heap. With both at 128 KiB, large blocks are mapped
 * and unmapped on their own and a free top of the heap is returned: measured at 100k routes, RSS
 * after publishing 318 -> 292 and 338 -> 324 MB (docs/benchmarks.md). Ignored by other C libraries.
 * @param {Readonly<Record<string, string | undefined>>} env the process environment
 * @returns {Record<string, string>} variables to set; empty when the operator set both tunables (theirs win)
 */
export function operatorEnv(env) {
  const given = env.GLIBC_TUNABLES ?? '';
  const names = new Set(given.split(':').map((t) => t.split('=')[0]));
  const missing = ['glibc.malloc.trim_threshold', 'glibc.malloc.mmap_threshold'].filter((n) => !names.has(n));
  if (missing.length === 0) return {};
  const ours = missing.map((n) => `${n}=131072`);
  return { GLIBC_TUNABLES: [...(given ? [given] : []), ...ours].join(':') };
}

/** Whether one of the named flags was given (`--name` or `--name=value`), on the command line or in NODE_OPTIONS. */
function given(execArgv, nodeOptions) {
  const all = [...execArgv, ...(nodeOptions ?? '').split(/\s+/)];
  return (...names) => all.some((a) => names.some((n) => a === n || a.startsWith(`${n}=`)));
}
