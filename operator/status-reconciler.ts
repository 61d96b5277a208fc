// One object's status: what it should say (the last compile's verdict, Programmed from what the
// relays report, a held-back tenant's reason) against what it says; written through /status as a
// merge patch carrying the resourceVersion it was computed from (status/writer.ts), with Events on
// transitions. A write the API server refuses for good is reported once per resourceVersion (a
// Warning Event), not retried.
import type { RelayConfig } from '../contract/config/types.gen.ts';
import { MAILPLUS_API_VERSION } from '../contract/kube.ts';
import type { k8s } from '../platform/kube-client.ts';
import type { Logger } from '../platform/log.ts';
import type { CompileResult } from './compile/compile.ts';
import {
  type DesiredStatus,
  desiredStatus,
  statusDiffers,
  transitions,
} from './conditions/api-conditions.ts';
import {
  type ConfigHistory,
  programmedCondition,
  type RelayReport,
  withProgrammed,
} from './conditions/programmed.ts';
import type { StatusCondition } from './conditions/resource-status.ts';
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
            currentSources: (inputs.served() ?? last.config).sources ?? {},
            live,
            history: inputs.history,
            fleet: inputs.fleet,
          });
    return desiredStatus(withProgrammed(st, programmed), generation, current, new Date());
  }

  /**
   * Desired against stored status for every object (cheap; the leader queues a write only where
   * they differ and it has not just written the same); counts them by Ready for the metrics.
   */
  sweep(live: RelayReport[], leader: boolean, enqueue: (key: string) => void): void {
    const { resources, metrics } = this.o;
    const counts = new Map<string, number>();
    for (const [kind, inf] of [
      ['TenantPolicy', resources.tenantPolicies],
      ['MailRoute', resources.mailRoutes],
    ] as const) {
      for (const s of ['True', 'False', 'Unknown']) counts.set(`${kind}|${s}`, 0);
      for (const obj of inf.list() as MailPlusObject[]) {
        const key = resourceKey(kind, obj.metadata.namespace, obj.metadata.name);
        const d = this.desiredFor(key, obj, obj.status, live);
        if (!d) continue;
        const ready = d.conditions.find((c) => c.type === 'Ready')?.status ?? 'Unknown';
        counts.set(`${kind}|${ready}`, (counts.get(`${kind}|${ready}`) ?? 0) + 1);
        if (leader && statusDiffers(obj.status, d) && !this.alreadyWritten(key, obj, d)) enqueue(key);
      }
    }
    for (const [k, n] of counts) {
      const [kind, status] = k.split('|');
      metrics.resources.set({ kind, condition: 'Ready', status }, n);
    }
  }

  /** Writes one object's status when it differs from what it should be (the status controller's reconcile). */
  async reconcile(key: string): Promise<ReconcileResult> {
    if (!this.o.isLeader()) return;
    const { kind, obj } = this.o.resources.objectOf(key);
    if (!obj) {
      this.written.delete(key);
      return;
    }
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

  private alreadyWritten(key: string, obj: MailPlusObject, d: DesiredStatus): boolean {
    const w = this.written.get(key);
    return w !== undefined && w.sig === sig(d) && w.basedOnRv === obj.metadata.resourceVersion;
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
