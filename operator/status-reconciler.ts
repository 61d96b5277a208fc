// One object's status: what it should say (the last compile's verdict, Programmed from what the
// relays report, a held-back tenant's reason) against what it says; written through /status as a
// merge patch carrying the resourceVersion it was computed from (status/writer.ts), with Events on
// transitions. A write the API server refuses for good is reported once per resourceVersion (a
// Warning Event), not retried.
import type { RelayConfig } from '../contract/config/types.gen.ts';
import { MAILPLUS_API_VERSION } from '../contract/kube.ts';
import type { KubeClient } from '../platform/kube/client.ts';
import type { Logger } from '../platform/log.ts';
import { type CompileResult, sourcesOf } from './compile/compile.ts';
import { RunMap } from './compile/run-map.ts';
import {
  type DesiredStatus,
  desiredStatus,
  statusDiffers,
  transitions,
} from './conditions/api-conditions.ts';
import {
  type ConfigHistory,
  generationIn,
  programmedCondition,
  type RelayReport,
  type Sources,
  servingCount,
  withProgrammed,
} from './conditions/programmed.ts';
import type { ResourceStatus, StatusCondition } from './conditions/resource-status.ts';
import type { HeldBack } from './config-publisher.ts';
import type { ReconcileResult } from './controller/controller.ts';
import type { OperatorMetrics } from './metrics.ts';
import { resourceKey, resourceLabel } from './resources/types.ts';
import type { EventRecorder, Regarding } from './status/events.ts';
import { type MailPlusKind, type StatusTarget, writeStatus } from './status/writer.ts';
import type { MailPlusObject, WatchedResources } from './watched-resources.ts';

type StoredStatus = { observedGeneration?: number; conditions?: DesiredStatus['conditions'] } | undefined;

/** What the status rules read besides the object itself. */
export interface StatusInputs {
  /** The last compile; undefined before the first. */
  compiled(): CompileResult | undefined;
  /** The config relays serve (its sources say which generation of each resource is in it). */
  served(): RelayConfig | undefined;
  /** The tenants whose changes are not published, and why. */
  heldBack(): ReadonlyMap<string, HeldBack>;
  history: ConfigHistory;
  /** `namespace/configmap`, for messages. */
  fleet: string;
  /** What every live relay says it serves. */
  reports(): RelayReport[];
}

export interface StatusReconcilerOptions {
  client: KubeClient;
  resources: WatchedResources;
  inputs: StatusInputs;
  events: EventRecorder;
  metrics: OperatorMetrics;
  logger: Logger;
  isLeader(): boolean;
  signal(): AbortSignal | undefined;
  /** The object moved past the last compile, or the write went stale: compile again. */
  requestCompile(): void;
  beforeStatusWrite?(target: StatusTarget, attempt: number): Promise<void>;
}

/** Every minute at least, a sweep visits every object (as an informer's resync). */
const FULL_SWEEP_MS = 60_000;
/** Changed objects remembered between two sweeps; past it the next sweep visits every object. */
const MAX_TOUCHED = 10_000;

/** What decides whether a sweep may visit only what changed (StatusReconciler.changedSince). */
interface SweepState {
  last: CompileResult | undefined;
  sources: Sources;
  liveSig: string;
  hashes: Array<string | undefined>;
  leader: boolean;
  /** The held-back tenants and why. */
  held: string;
  /** ConfigHistory.version. */
  history: number;
}

/** What a sweep reads besides each object. */
interface SweepInputs {
  last: CompileResult;
  live: RelayReport[];
  /** The live relays and why any is unreachable (Programmed's message names them). */
  liveSig: string;
  /** Of the config relays serve: the generation of each resource in it. */
  sources: Sources;
  /** Each live relay's ConfigHistory.generationsOf. */
  served: Array<(key: string) => number | undefined>;
  round: number;
}

/**
 * An object's verdict in a sweep and everything it was computed from but the clock and the object
 * itself (its key in `verdicts`: informer objects are replaced on change, never mutated): the
 * conditions the compile decided for it, the live relays, its tenant's held-back reason, the
 * generation of it in the served config, and how many relays serve its generation.
 */
interface Verdict {
  key: string;
  conditions: ResourceStatus['conditions'];
  liveSig: string;
  held: string;
  served: number | undefined;
  serving: number;
  /** The Ready condition's status. */
  ready: string;
  /**
   * The desired status differs from the stored one: a write is due. Not the desired status itself:
   * after publishing 100k objects every one of them is due, and kept they would be ~70 MB.
   */
  due: boolean;
  /** The sweep that last saw the object (older ones are forgotten: the object is gone). */
  round: number;
}

/** Equal compile conditions: mostly the very same (shared, frozen) array, else equal one by one. */
function sameConditions(a: StatusCondition[], b: StatusCondition[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  return a.every(
    (c, i) =>
      c.type === b[i].type &&
      c.status === b[i].status &&
      c.reason === b[i].reason &&
      c.message === b[i].message,
  );
}

const sig = (d: DesiredStatus) =>
  JSON.stringify([d.observedGeneration, d.conditions.map((c) => [c.type, c.status, c.reason, c.message])]);

function regardingOf(kind: MailPlusKind, obj: MailPlusObject): Regarding {
  return {
    apiVersion: MAILPLUS_API_VERSION,
    kind,
    namespace: obj.metadata.namespace ?? 'default',
    name: obj.metadata.name,
    uid: obj.metadata.uid,
    resourceVersion: obj.metadata.resourceVersion,
  };
}

export class StatusReconciler {
  /** key → what we last wrote and on which resourceVersion (skip until the cache shows it). */
  private readonly written = new Map<string, { sig: string; basedOnRv: string | undefined }>();
  /**
   * Object → its verdict in the last sweep (see verdict). By identity: an unchanged object is found
   * without making its key.
   */
  private verdicts = new Map<MailPlusObject, Verdict>();
  /**
   * Verdicts added to `verdicts` since it was made. A Map with more than half its room in use that
   * keeps replacing entries doubles its room, and never shrinks: after the status writes of 100k
   * objects (each replaced by its echo) it had room for 262,144 (7 MB). A full sweep after a
   * quarter of the entries were added copies it into one sized for what it holds.
   */
  private verdictsAdded = 0;
  /**
   * Objects the caches added, replaced or removed since the last sweep: key → the object the last
   * sweep may have a verdict for (the one before the first change).
   */
  private readonly touchedSince = new Map<string, MailPlusObject | undefined>();
  /** What the last sweep read (see changedSince), and when it last visited every object. */
  private lastSweep: (SweepState & { fullAt: number }) | undefined;
  /** More than MAX_TOUCHED objects changed since the last sweep: the next one visits every object. */
  private touchedOverflow = false;
  /** Ready counts of the verdicts by kind (the metric), kept by sweeps that visit only some objects. */
  private readonly readyCounts = new Map<MailPlusKind, Record<string, number>>();
  private sweepRound = 0;
  /** Objects whose desired status sweeps computed afresh (the rest reused their verdict). */
  private evaluated = 0;
  private readonly o: StatusReconcilerOptions;

  constructor(o: StatusReconcilerOptions) {
    this.o = o;
  }

  /** A new leader: nothing it wrote yet. */
  forgetWrites(): void {
    this.written.clear();
  }

  /** The cache added, replaced or removed the object `key`; `before` is the object it had. */
  touched(key: string, before: MailPlusObject | undefined): void {
    if (this.touchedOverflow || this.touchedSince.has(key)) return;
    if (this.touchedSince.size < MAX_TOUCHED) this.touchedSince.set(key, before);
    else {
      // many changes and no sweep (no live relay requeues one): the next sweep visits every
      // object, and the replaced objects are not kept for it meanwhile
      this.touchedSince.clear();
      this.touchedOverflow = true;
    }
  }

  /** The status `obj` should have; undefined when the last compile has not seen its generation. */
  desiredFor(
    key: string,
    obj: MailPlusObject,
    current: StoredStatus,
    live: RelayReport[],
  ): DesiredStatus | undefined {
    const { inputs } = this.o;
    const last = inputs.compiled();
    if (!last) return undefined;
    const st = last.statuses.get(key);
    const generation = obj.metadata.generation ?? 0;
    if (!st || (st.generation ?? 0) !== generation) return undefined;
    const held = inputs.heldBack().get(obj.metadata.namespace ?? 'default');
    const accepted = st.conditions.find((c) => c.type === 'Accepted')?.status === 'True';
    const programmed: StatusCondition =
      held && accepted
        ? { type: 'Programmed', status: 'False', reason: held.reason, message: held.message }
        : programmedCondition({
            key,
            generation,
            currentSources: sourcesOf(inputs.served() ?? last.config),
            live,
            history: inputs.history,
            fleet: inputs.fleet,
          });
    return desiredStatus(withProgrammed(st, programmed), generation, current, new Date());
  }

  /**
   * Desired against stored status for every object (the leader queues a write only where they
   * differ and it has not just written the same); counts them by Ready for the metrics. Runs on
   * every aggregate reconcile, so at 100k objects it must not recompute 100k statuses each time:
   * an object's verdict is reused while everything it is computed from is the same (see Verdict).
   * Returns how many objects were evaluated afresh.
   */
  sweep(live: RelayReport[], leader: boolean, enqueue: (key: string) => void): number {
    const { inputs, metrics } = this.o;
    const last = inputs.compiled();
    const round = ++this.sweepRound;
    const before = this.evaluated;
    const liveSig = live.map((r) => `${r.id}\t${r.error ?? ''}`).join('\n');
    const sources = last ? sourcesOf(inputs.served() ?? last.config) : {};
    const served = live.map((r) => inputs.history.generationsOf(r.hash));
    const at: SweepInputs | undefined = last && { last, live, liveSig, sources, served, round };
    const state: SweepState = {
      last,
      sources,
      liveSig,
      hashes: live.map((r) => r.hash),
      leader,
      held: [...inputs.heldBack()].map(([t, h]) => `${t}\t${h.reason}\t${h.message}`).join('\n'),
      history: inputs.history.version,
    };
    const now = Date.now();
    const keys = at ? this.changedSince(state, now) : undefined;
    if (at && keys) this.sweepKeys(keys, at, leader, enqueue);
    else this.sweepAll(at, leader, enqueue);
    this.touchedSince.clear();
    this.touchedOverflow = false;
    this.lastSweep = { ...state, fullAt: at && keys ? (this.lastSweep?.fullAt ?? now) : now };
    for (const kind of ['TenantPolicy', 'MailRoute'] as const)
      for (const [status, n] of Object.entries(this.readyCounts.get(kind) ?? {}))
        metrics.resources.set({ kind, condition: 'Ready', status }, n);
    metrics.statusEvaluationsTotal.inc(this.evaluated - before);
    return this.evaluated - before;
  }

  /**
   * The keys whose verdict may have changed since the last sweep, or undefined when every object
   * must be visited: the first sweep, another compile, served config, set of live relays (or their
   * errors), leadership or held-back tenant, a config history that changed, a relay whose config
   * the history cannot compare, or a minute since every object was last visited (as a resync).
   * Otherwise: the objects the caches changed and the keys whose generation differs between the
   * config each relay served and the one it serves now (the relay-report sweep after a change).
   */
  private changedSince(state: SweepState, now: number): Set<string> | undefined {
    const prev = this.lastSweep;
    if (
      !prev ||
      prev.last !== state.last ||
      prev.sources !== state.sources ||
      prev.liveSig !== state.liveSig ||
      prev.leader !== state.leader ||
      prev.held !== state.held ||
      prev.history !== state.history ||
      this.touchedOverflow ||
      now - prev.fullAt >= FULL_SWEEP_MS
    )
      return undefined;
    const keys = new Set(this.touchedSince.keys());
    for (const [i, hash] of state.hashes.entries()) {
      if (prev.hashes[i] === hash) continue;
      const changed = this.o.inputs.history.changedKeys(prev.hashes[i], hash);
      if (!changed) return undefined;
      for (const k of changed) keys.add(k);
    }
    return keys;
  }

  /** Every object: its verdict (reused where nothing it is computed from changed), Ready counts anew. */
  private sweepAll(at: SweepInputs | undefined, leader: boolean, enqueue: (key: string) => void): void {
    const { resources } = this.o;
    let kept = 0;
    for (const [kind, inf] of [
      ['TenantPolicy', resources.tenantPolicies],
      ['MailRoute', resources.mailRoutes],
    ] as const) {
      const counts: Record<string, number> = { True: 0, False: 0, Unknown: 0 };
      const objects = at ? (inf.list() as MailPlusObject[]) : [];
      // indexed: for...of makes an iterator result per object in unoptimized code (100k per sweep)
      for (let i = 0; i < objects.length; i++) {
        const obj = objects[i];
        const before = this.verdicts.get(obj);
        const key = before?.key ?? resourceKey(kind, obj.metadata.namespace, obj.metadata.name);
        const v = this.verdict(key, obj, before, at as SweepInputs);
        if (!v) continue;
        kept++;
        counts[v.ready] = (counts[v.ready] ?? 0) + 1;
        // the verdict's key is the compile's string: the queue holds no copy of 100k keys
        if (leader && v.due && !this.alreadyWritten(key, obj, at?.live ?? [])) enqueue(v.key);
      }
      this.readyCounts.set(kind, counts);
    }
    // every verdict kept was seen this round: none to forget (most sweeps; 100k entries to visit)
    if (kept !== this.verdicts.size)
      for (const [obj, v] of this.verdicts) if (v.round !== at?.round) this.verdicts.delete(obj);
    if (this.verdictsAdded > this.verdicts.size / 4 + 1024) {
      this.verdicts = new Map(this.verdicts);
      this.verdictsAdded = 0;
    }
  }

  /**
   * Only `keys`: each one's verdict afresh or reused, the Ready counts moved by what changed. An
   * object due a write that none of its inputs changed for was queued by the sweep that found it
   * due (the status controller retries failed writes itself).
   */
  private sweepKeys(
    keys: Set<string>,
    at: SweepInputs,
    leader: boolean,
    enqueue: (key: string) => void,
  ): void {
    for (const key of keys) {
      const { kind, obj } = this.o.resources.objectOf(key);
      const was = this.touchedSince.has(key) ? this.touchedSince.get(key) : obj;
      const old = was && this.verdicts.get(was);
      if (old) this.count(kind, old.ready, -1);
      if (was && was !== obj) this.verdicts.delete(was);
      // verdict() keeps a fresh verdict in `verdicts` itself (a reused one is there already)
      const v = obj && this.verdict(key, obj, was === obj ? old : undefined, at);
      if (!v) {
        if (obj) this.verdicts.delete(obj);
        continue;
      }
      this.count(kind, v.ready, 1);
      if (leader && v.due && !this.alreadyWritten(key, obj, at.live)) enqueue(v.key);
    }
  }

  private count(kind: MailPlusKind, ready: string, by: number): void {
    const counts = this.readyCounts.get(kind) ?? { True: 0, False: 0, Unknown: 0 };
    counts[ready] = (counts[ready] ?? 0) + by;
    this.readyCounts.set(kind, counts);
  }

  /**
   * The object's verdict: the last sweep's while the object, its compile status, the relays (who
   * is live and unreachable), its tenant's held-back reason and the generations served of it are
   * all the same; else computed afresh. Undefined while the last compile has not seen its generation.
   */
  private verdict(
    key: string,
    obj: MailPlusObject,
    v: Verdict | undefined,
    at: SweepInputs,
  ): Verdict | undefined {
    const st = at.last.statuses.get(key);
    const generation = obj.metadata.generation ?? 0;
    if (!st || (st.generation ?? 0) !== generation) return undefined;
    const heldBack = this.o.inputs.heldBack().get(obj.metadata.namespace ?? 'default');
    const held = heldBack ? `${heldBack.reason}\n${heldBack.message}` : '';
    const served = generationIn(at.sources, key);
    const serving = servingCount(at.served, key, generation);
    if (
      v !== undefined &&
      sameConditions(v.conditions, st.conditions) &&
      v.liveSig === at.liveSig &&
      v.held === held &&
      v.served === served &&
      v.serving === serving
    ) {
      v.round = at.round;
      return v;
    }
    const d = this.desiredFor(key, obj, obj.status, at.live);
    if (!d) return undefined;
    this.evaluated++;
    const ready = d.conditions.find((c) => c.type === 'Ready')?.status ?? 'Unknown';
    const due = statusDiffers(obj.status, d);
    const { conditions } = st;
    const fresh = {
      // the compile's own string for the key, kept with its statuses anyway, where there is one
      key: (at.last.statuses instanceof RunMap && at.last.statuses.keyOf(key)) || key,
      conditions,
      liveSig: at.liveSig,
      held,
      served,
      serving,
      ready,
      due,
      round: at.round,
    };
    const size = this.verdicts.size;
    this.verdicts.set(obj, fresh);
    if (this.verdicts.size > size) this.verdictsAdded++;
    return fresh;
  }

  /**
   * The cache shows a version of `key` whose compile inputs are unchanged: whether it needs a
   * reconcile. Not the echo of this leader's own write when the status is still what it should be:
   * that write is forgotten here (the cache moved past the version it was based on). Every echo used
   * to be queued, so after publishing each object was reconciled twice (its echo behind 100k other
   * keys) and what was written stayed remembered until then (~35 MB at 100k). Anything else (another
   * writer's change) is reconciled, as before.
   */
  statusChanged(key: string, obj: MailPlusObject): boolean {
    const w = this.written.get(key);
    if (w === undefined || w.basedOnRv === obj.metadata.resourceVersion) return true;
    this.written.delete(key);
    if (!this.o.isLeader()) return true;
    const d = this.desiredFor(key, obj, obj.status, this.o.inputs.reports());
    return d === undefined || sig(d) !== w.sig || statusDiffers(obj.status, d);
  }

  /** Writes one object's status when it differs from what it should be (the status controller's reconcile). */
  async reconcile(key: string): Promise<ReconcileResult> {
    if (!this.o.isLeader()) return;
    const { kind, obj } = this.o.resources.objectOf(key);
    if (!obj) {
      this.written.delete(key);
      return;
    }
    // the cache moved past the version we wrote on (our write's echo, typically): what we wrote is
    // no longer needed (alreadyWritten only trusts it on that version); 100k MailRoutes written in
    // a burst kept ~35 MB of them otherwise
    if (this.written.get(key)?.basedOnRv !== obj.metadata.resourceVersion) this.written.delete(key);
    const live = this.o.inputs.reports();
    const d0 = this.desiredFor(key, obj, obj.status, live);
    if (!d0) {
      // the object moved past the last compile: recompile first
      this.o.requestCompile();
      return;
    }
    if (!statusDiffers(obj.status, d0)) return;
    const before = obj.status?.conditions;
    const { result, wrote, refusal } = await this.write(key, kind, obj, live);
    if (result === 'gone') {
      this.o.metrics.statusWritesTotal.inc({ result: 'gone' });
      this.written.delete(key);
      return;
    }
    if (result === 'refused' && wrote) {
      await this.refused(key, kind, obj, wrote, refusal);
      return;
    }
    if (result === 'stale' || !wrote) {
      this.o.requestCompile();
      return;
    }
    this.o.metrics.statusWritesTotal.inc({ result: 'success' });
    // unless the echo of the write came first (statusChanged has seen it): the cache is past it
    if (this.o.resources.objectOf(key).obj === obj)
      this.written.set(key, { sig: sig(wrote), basedOnRv: obj.metadata.resourceVersion });
    const label = resourceLabel(kind, obj.metadata.namespace, obj.metadata.name);
    for (const t of transitions(label, before, wrote.conditions)) {
      await this.o.events.emit(regardingOf(kind, obj), t, this.o.signal());
    }
  }

  /** This leader just wrote the status `obj` should have, on this resourceVersion (the cache lags). */
  private alreadyWritten(key: string, obj: MailPlusObject, live: RelayReport[]): boolean {
    const w = this.written.get(key);
    if (w === undefined || w.basedOnRv !== obj.metadata.resourceVersion) return false;
    const d = this.desiredFor(key, obj, obj.status, live);
    return d !== undefined && w.sig === sig(d);
  }

  /** The write, its desired status recomputed on the status it is based on (re-read on conflict). */
  private async write(key: string, kind: MailPlusKind, obj: MailPlusObject, live: RelayReport[]) {
    const { client, metrics, beforeStatusWrite } = this.o;
    let wrote: DesiredStatus | undefined;
    let refusal = '';
    const result = await writeStatus(
      {
        client,
        signal: () => this.o.signal(),
        beforeWrite: beforeStatusWrite,
        onConflict: () => metrics.statusWritesTotal.inc({ result: 'conflict' }),
        onRefused: (message) => {
          refusal = message;
        },
      },
      {
        kind,
        namespace: obj.metadata.namespace ?? 'default',
        name: obj.metadata.name,
        generation: obj.metadata.generation ?? 0,
        resourceVersion: obj.metadata.resourceVersion,
      },
      (current) => {
        const status = (current?.status ?? obj.status) as MailPlusObject['status'];
        wrote = this.desiredFor(key, obj, status, live);
        return wrote;
      },
      obj as unknown as Record<string, unknown>,
    );
    return { result, wrote: wrote as DesiredStatus | undefined, refusal };
  }

  /**
   * Retrying cannot help until the object changes: remember it as handled for this
   * resourceVersion and say why where people look.
   */
  private async refused(
    key: string,
    kind: MailPlusKind,
    obj: MailPlusObject,
    wrote: DesiredStatus,
    refusal: string,
  ): Promise<void> {
    this.o.metrics.statusWritesTotal.inc({ result: 'refused' });
    this.written.set(key, { sig: sig(wrote), basedOnRv: obj.metadata.resourceVersion });
    const label = resourceLabel(kind, obj.metadata.namespace, obj.metadata.name);
    this.o.logger.warn('status write refused by the API server', { resource: label, error: refusal });
    await this.o.events.emit(
      regardingOf(kind, obj),
      {
        type: 'Warning',
        reason: 'StatusRefused',
        note: `the API server refuses this object's status (${refusal.slice(0, 600)}); the stored spec fails the installed CRD schema (created under an older one?): fix the spec`,
      },
      this.o.signal(),
    );
  }
}
