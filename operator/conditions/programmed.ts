// Programmed: does every live relay serve this generation? The operator asks each ready relay pod
// which config it loaded (its admin /config endpoint); it remembers which generations each published config
// contained (its `sources`, by hash). Pure: leases are plain data, time is a parameter.
import type { SourceKeyRun } from '../../contract/config/shards.ts';
import { RunMap } from '../compile/run-map.ts';
import { REASONS, type ResourceStatus, type StatusCondition, summarizeReady } from './resource-status.ts';

export interface RelayReport {
  /** The relay's id (its pod name). */
  id: string;
  /** Hash of the config the relay says it serves; undefined when it has none or was not reached. */
  hash?: string;
  /** Why the relay's config is not known (unreachable, timeout, bad answer); undefined when it answered. */
  error?: string;
}

/**
 * A config's `sources`: the record (a config read back from its ConfigMaps) or a map over it
 * (sourcesOf of a compiled config, which does not make the record of every resource).
 */
export type Sources = Readonly<Record<string, number>> | ReadonlyMap<string, number>;

const isMap = (s: Sources): s is ReadonlyMap<string, number> => s instanceof RunMap || s instanceof Map;

/** The generation of `key` in `s`; undefined when it is not in it. */
export function generationIn(s: Sources, key: string): number | undefined {
  if (isMap(s)) return s.get(key);
  return Object.hasOwn(s, key) ? s[key] : undefined;
}

function entriesOf(s: Sources): Iterable<readonly [string, number]> {
  return isMap(s) ? s.entries() : Object.entries(s);
}

/**
 * `sources` of the configs published recently, by hash; bounded (oldest forgotten first), so a
 * relay stuck on an ancient config counts as not serving anything current.
 *
 * Only the newest config's `sources` is kept whole (the very object of that config: no copy);
 * each older one is kept as what it has different from the next newer one. A change of one
 * MailRoute differs in one key, so 64 configs of 100k resources cost one `sources` and a few
 * entries instead of 64 dictionaries of 100k keys (about 6 MB each).
 */
export class ConfigHistory {
  /** Oldest first; the last one holds `full`, each other one its difference to the next. */
  private readonly entries: Array<{ hash: string; diff: Map<string, number | undefined> }> = [];
  private full: Sources = {};
  /** The runs `full` is made of, when it came with them. */
  private fullRuns: ReadonlyArray<SourceKeyRun> | undefined;
  private readonly limit: number;
  /** Changes when an entry is added or forgotten (not when the newest is remembered again). */
  version = 0;
  constructor(limit = 32) {
    this.limit = limit;
  }

  /**
   * `runs`: the sorted runs `sources` is made of, as the compile returns them (compile/key-order.ts).
   * Runs are never mutated, so between two configs that both come with runs only the keys of runs
   * that are not in both can differ: a one-route change compares one namespace's keys, not 100k.
   */
  remember(hash: string, sources: Sources, runs?: ReadonlyArray<SourceKeyRun>): void {
    const last = this.entries.at(-1);
    if (last?.hash === hash) {
      // the same content (its hash says so): runs known for it still describe it
      this.full = sources;
      if (runs) this.fullRuns = runs;
      return;
    }
    const i = this.indexOf(hash);
    if (i >= 0) this.drop(i);
    const newest = this.entries.at(-1);
    if (newest) {
      newest.diff =
        runs && this.fullRuns
          ? differenceByRuns(this.full, this.fullRuns, sources, runs)
          : difference(this.full, sources);
    }
    this.version++;
    this.entries.push({ hash, diff: new Map() });
    this.full = sources;
    this.fullRuns = runs;
    while (this.entries.length > this.limit) this.entries.shift();
  }

  /** The generation of `key` in the config `hash`; undefined when not in it or the hash is not known. */
  generation(hash: string | undefined, key: string): number | undefined {
    return this.generationAt(this.indexOf(hash), key);
  }

  /**
   * generation() of one config for many keys (a sweep over every object): the hash is looked up
   * once, not once per key. Valid until the next remember().
   */
  generationsOf(hash: string | undefined): (key: string) => number | undefined {
    const i = this.indexOf(hash);
    return (key) => this.generationAt(i, key);
  }

  private generationAt(i: number, key: string): number | undefined {
    if (i < 0) return undefined;
    for (; i < this.entries.length - 1; i++) {
      const d = this.entries[i].diff;
      if (d.has(key)) return d.get(key);
    }
    return generationIn(this.full, key);
  }

  /**
   * The keys whose generation may differ between the configs `a` and `b` (every key that differs
   * is among them); undefined when either is not known.
   */
  changedKeys(a: string | undefined, b: string | undefined): Set<string> | undefined {
    const i = this.indexOf(a);
    const j = this.indexOf(b);
    if (i < 0 || j < 0) return undefined;
    const keys = new Set<string>();
    for (let k = Math.min(i, j); k < Math.max(i, j); k++)
      for (const key of this.entries[k].diff.keys()) keys.add(key);
    return keys;
  }

  has(hash: string | undefined): boolean {
    return this.indexOf(hash) >= 0;
  }

  /** The whole `sources` of the config `hash`, as a new record. */
  sources(hash: string | undefined): Record<string, number> | undefined {
    const i = this.indexOf(hash);
    if (i < 0) return undefined;
    const out: Record<string, number> = {};
    for (const [k, g] of entriesOf(this.full)) out[k] = g;
    for (let j = this.entries.length - 2; j >= i; j--) {
      for (const [k, g] of this.entries[j].diff) {
        if (g === undefined) delete out[k];
        else out[k] = g;
      }
    }
    return out;
  }

  get size(): number {
    return this.entries.length;
  }

  /** Index of `hash`, newest first (relays mostly serve the newest); -1 if not known. */
  private indexOf(hash: string | undefined): number {
    if (hash === undefined) return -1;
    for (let i = this.entries.length - 1; i >= 0; i--) if (this.entries[i].hash === hash) return i;
    return -1;
  }

  /** Forgets entry i (not the newest); the one before it then differs from the one after it by both differences. */
  private drop(i: number): void {
    const [gone] = this.entries.splice(i, 1);
    const before = this.entries[i - 1];
    if (before) for (const [k, g] of gone.diff) if (!before.diff.has(k)) before.diff.set(k, g);
  }
}

/** What `older` has different from `newer`: its value of each key that differs (undefined: absent). */
function difference(older: Sources, newer: Sources): Map<string, number | undefined> {
  const d = new Map<string, number | undefined>();
  if (older === newer) return d;
  for (const [k, g] of entriesOf(older)) if (generationIn(newer, k) !== g) d.set(k, g);
  for (const [k] of entriesOf(newer)) if (generationIn(older, k) === undefined) d.set(k, undefined);
  return d;
}

/** difference() where only the keys of runs not in both lists can differ. */
function differenceByRuns(
  older: Sources,
  olderRuns: ReadonlyArray<SourceKeyRun>,
  newer: Sources,
  newerRuns: ReadonlyArray<SourceKeyRun>,
): Map<string, number | undefined> {
  const d = new Map<string, number | undefined>();
  const inOlder = new Set(olderRuns);
  const inNewer = new Set(newerRuns);
  for (const run of olderRuns) {
    if (inNewer.has(run)) continue;
    for (const k of run.keys) {
      const g = generationIn(older, k);
      if (generationIn(newer, k) !== g) d.set(k, g);
    }
  }
  for (const run of newerRuns) {
    if (inOlder.has(run)) continue;
    for (const k of run.keys) if (generationIn(older, k) === undefined) d.set(k, undefined);
  }
  return d;
}

export interface ProgrammedInput {
  /** 'Kind/ns/name'. */
  key: string;
  /** The object's current metadata.generation. */
  generation: number;
  /** Sources of the config compiled from the current objects: absent key = not accepted. */
  currentSources: Sources;
  live: RelayReport[];
  history: ConfigHistory;
  /** Fleet name for messages (the ConfigMap). */
  fleet: string;
}

export function programmedCondition(input: ProgrammedInput): StatusCondition {
  const { key, generation, live, history } = input;
  const served = generationIn(input.currentSources, key);
  if (served === undefined) {
    return {
      type: 'Programmed',
      status: 'False',
      reason: REASONS.invalid,
      message: 'not part of the relay config: see the Accepted condition',
    };
  }
  if (served < generation) {
    // an invalid generation: the last valid one stays in force (see compile/carry-over.ts)
    return {
      type: 'Programmed',
      status: 'False',
      reason: REASONS.invalid,
      message: `generation ${generation} is not programmed (see Accepted); relays keep serving generation ${served}, the last valid one`,
    };
  }
  if (live.length === 0) {
    return {
      type: 'Programmed',
      status: 'False',
      reason: REASONS.noRelays,
      message: `no ready relay pod for fleet ${input.fleet}; start relays with --configmap, or check the operator's --relay-selector and that relay pods pass their readiness probe`,
    };
  }
  const serving = servingCount(
    live.map((r) => history.generationsOf(r.hash)),
    key,
    generation,
  );
  if (serving === live.length) {
    return {
      type: 'Programmed',
      status: 'True',
      reason: REASONS.programmed,
      message: `generation ${generation} is served by all ${live.length} live relay${live.length === 1 ? '' : 's'}`,
    };
  }
  return {
    type: 'Programmed',
    status: 'False',
    reason: REASONS.pending,
    message: `${serving} of ${live.length} live relays serve generation ${generation}; waiting for the others to load the new config${unreachableNote(live)}`,
  };
}

/**
 * How many relays serve `key` at `generation` or newer, given each relay's generationsOf (from
 * ConfigHistory) for the config it serves.
 */
export function servingCount(
  served: Array<(key: string) => number | undefined>,
  key: string,
  generation: number,
): number {
  let serving = 0;
  for (const generationIn of served) {
    const g = generationIn(key);
    if (g !== undefined && g >= generation) serving++;
  }
  return serving;
}

/**
 * kstatus (Argo CD, Flux, `kubectl wait`): Stalled=True when this generation cannot become Ready
 * without someone changing something (Ready=False for any reason but Pending: an invalid or
 * refused spec, a missing reference, no live relays); Reconciling=True while it is on its way
 * (relays loading it, or not known yet). Both False once Ready. The same verdict as the Argo CD
 * health check's Degraded and Progressing (charts/mail-plus/files/argocd-health.lua).
 */
export function kstatusConditions(ready: StatusCondition): StatusCondition[] {
  const stalled = ready.status === 'False' && ready.reason !== REASONS.pending;
  const reconciling = !stalled && ready.status !== 'True';
  return [
    reconciling
      ? { type: 'Reconciling', status: 'True', reason: ready.reason, message: ready.message }
      : {
          type: 'Reconciling',
          status: 'False',
          reason: REASONS.reconciled,
          message: stalled ? 'stalled: see Stalled' : 'served by every live relay',
        },
    stalled
      ? { type: 'Stalled', status: 'True', reason: ready.reason, message: ready.message }
      : { type: 'Stalled', status: 'False', reason: REASONS.notStalled, message: 'not stalled' },
  ];
}

/** "; not reachable: a (timeout), b (HTTP 500)" for relays the operator could not ask, at most 3 named. */
function unreachableNote(live: RelayReport[]): string {
  const failed = live.filter((r) => r.error !== undefined);
  if (failed.length === 0) return '';
  const named = failed.slice(0, 3).map((r) => `${r.id} (${r.error})`);
  const more = failed.length > 3 ? ` and ${failed.length - 3} more` : '';
  return `; not reachable: ${named.join(', ')}${more}`;
}

/**
 * The compile status with Programmed added, Ready recomputed and the kstatus conditions:
 * Accepted, ResolvedRefs, Programmed, Ready, Reconciling, Stalled.
 */
export function withProgrammed(status: ResourceStatus, programmed: StatusCondition): ResourceStatus {
  const base = status.conditions.filter((c) => c.type === 'Accepted' || c.type === 'ResolvedRefs');
  const conditions = [...base, programmed];
  const ready = summarizeReady(conditions);
  conditions.push(ready, ...kstatusConditions(ready));
  return { ...status, conditions };
}
