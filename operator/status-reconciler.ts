// One object's status: what it should say (the last compile's verdict, Programmed from what the
// relays report, a held-back tenant's reason) against what it says; written through /status as a
// merge patch carrying the resourceVersion it was computed from (status/writer.ts), with Events on
// transitions. A write the API server refuses for good is reported once per resourceVersion (a
// Warning Event), not retried.
import type { RelayConfig } from '../contract/config/types.gen.ts';
import { MAILPLUS_API_VERSION } from '../contract/kube.ts';
import type { k8s } from '../platform/kube-client.ts';
import type { Logger } from '../platform/log.ts';
import { type CompileResult, sourcesOf } from './compile/compile.ts';
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
  /** Why a tenant's changes are not published, if they are not. */
  heldBack(tenant: string): HeldBack | undefined;
  history: ConfigHistory;
  /** `namespace/configmap`, for messages. */
  fleet: string;
  /** What every live relay says it serves. */
  reports(): RelayReport[];
}

export interface StatusReconcilerOptions {
  co: k8s.CustomObjectsApi;
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
  private readonly verdicts = new Map<MailPlusObject, Verdict>();
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
    const held = inputs.heldBack(obj.metadata.namespace ?? 'default');
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
    const { resources, metrics } = this.o;
    const last = this.o.inputs.compiled();
    const round = ++this.sweepRound;
    const before = this.evaluated;
    const liveSig = live.map((r) => `${r.id}\t${r.error ?? ''}`).join('\n');
    const sources = last ? sourcesOf(this.o.inputs.served() ?? last.config) : {};
    const served = live.map((r) => this.o.inputs.history.generationsOf(r.hash));
    const at: SweepInputs | undefined = last && { last, live, liveSig, sources, served, round };
    let kept = 0;
    for (const [kind, inf] of [
      ['TenantPolicy', resources.tenantPolicies],
      ['MailRoute', resources.mailRoutes],
    ] as const) {
      const counts: Record<string, number> = { True: 0, False: 0, Unknown: 0 };
      for (const obj of at ? (inf.list() as MailPlusObject[]) : []) {
        const before = this.verdicts.get(obj);
        const key = before?.key ?? resourceKey(kind, obj.metadata.namespace, obj.metadata.name);
        const v = this.verdict(key, obj, before, at as SweepInputs);
        if (!v) continue;
        kept++;
        counts[v.ready] = (counts[v.ready] ?? 0) + 1;
        if (leader && v.due && !this.alreadyWritten(key, obj, live)) enqueue(key);
      }
      for (const [status, n] of Object.entries(counts))
        metrics.resources.set({ kind, condition: 'Ready', status }, n);
    }
    // every verdict kept was seen this round: none to forget (most sweeps; 100k entries to visit)
    if (kept !== this.verdicts.size)
      for (const [obj, v] of this.verdicts) if (v.round !== round) this.verdicts.delete(obj);
    metrics.statusEvaluationsTotal.inc(this.evaluated - before);
    return this.evaluated - before;
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
    const heldBack = this.o.inputs.heldBack(obj.metadata.namespace ?? 'default');
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
      key,
      conditions,
      liveSig: at.liveSig,
      held,
      served,
      serving,
      ready,
      due,
      round: at.round,
    };
    this.verdicts.set(obj, fresh);
    return fresh;
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
    const { co, metrics, beforeStatusWrite } = this.o;
    let wrote: DesiredStatus | undefined;
    let refusal = '';
    const result = await writeStatus(
      {
        api: co,
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
