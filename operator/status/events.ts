// Kubernetes Events (events.k8s.io/v1) for status transitions, with our own dedupe (as client-go's
// event correlator has): the same reason and note for the same object at most once per window,
// and at most `burst` events per object per window, so a flapping object cannot spam.

import { apiErrorText, type KubeClient, microTime } from '../../platform/kube/client.ts';
import type { KubeEvent } from '../../platform/kube/objects.ts';
import type { Logger } from '../../platform/log.ts';
import type { Transition } from '../conditions/api-conditions.ts';

export const REPORTING_CONTROLLER = 'mailplus.io/operator';

export class EventDeduper {
  private readonly seen = new Map<string, number>();
  private readonly perObject = new Map<string, number[]>();
  private readonly windowMs: number;
  private readonly burst: number;
  constructor(windowMs = 10 * 60_000, burst = 5) {
    this.windowMs = windowMs;
    this.burst = burst;
  }

  /** True when this event should be emitted now (and records it). */
  allow(objectKey: string, t: Transition, now: number): boolean {
    const key = `${objectKey}|${t.type}|${t.reason}|${t.note}`;
    const last = this.seen.get(key);
    if (last !== undefined && now - last < this.windowMs) return false;
    const recent = (this.perObject.get(objectKey) ?? []).filter((at) => now - at < this.windowMs);
    if (recent.length >= this.burst) {
      this.perObject.set(objectKey, recent);
      return false;
    }
    recent.push(now);
    this.perObject.set(objectKey, recent);
    this.seen.set(key, now);
    if (this.seen.size > 10_000) {
      for (const [k, at] of this.seen) if (now - at >= this.windowMs) this.seen.delete(k);
    }
    return true;
  }
}

let lastNanos = 0n;
/** '<name>.<hex unix nanoseconds>', strictly increasing within the process. */
export function eventName(objectName: string): string {
  let nanos = BigInt(Date.now()) * 1_000_000n;
  if (nanos <= lastNanos) nanos = lastNanos + 1n;
  lastNanos = nanos;
  return `${objectName.slice(0, 253 - 17)}.${nanos.toString(16)}`;
}

export interface Regarding {
  apiVersion: string;
  kind: string;
  namespace: string;
  name: string;
  uid?: string;
  resourceVersion?: string;
}

export interface EventRecorderOptions {
  client: KubeClient;
  /** reportingInstance (the operator's identity). */
  instance: string;
  logger: Logger;
  dedupe?: EventDeduper;
  count?(type: 'Normal' | 'Warning' | 'suppressed'): void;
}

export class EventRecorder {
  private readonly o: EventRecorderOptions;
  private readonly dedupe: EventDeduper;
  constructor(opts: EventRecorderOptions) {
    this.o = opts;
    this.dedupe = opts.dedupe ?? new EventDeduper();
  }

  /** Best effort: an Event that cannot be written is logged, never fails the reconcile. */
  async emit(regarding: Regarding, t: Transition, signal?: AbortSignal): Promise<void> {
    const objectKey = `${regarding.kind}/${regarding.namespace}/${regarding.name}`;
    if (!this.dedupe.allow(objectKey, t, Date.now())) {
      this.o.count?.('suppressed');
      return;
    }
    this.o.count?.(t.type);
    const body: KubeEvent = {
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      // client-go's naming: <object>.<unix nanos in hex> (events.k8s.io/v1 refuses a generateName
      // ending in '.' on 1.20)
      metadata: { name: eventName(regarding.name), namespace: regarding.namespace },
      eventTime: microTime(),
      reportingController: REPORTING_CONTROLLER,
      reportingInstance: this.o.instance.slice(0, 128),
      action: 'Reconcile',
      reason: t.reason,
      note: t.note,
      type: t.type,
      regarding: {
        apiVersion: regarding.apiVersion,
        kind: regarding.kind,
        namespace: regarding.namespace,
        name: regarding.name,
        uid: regarding.uid,
        resourceVersion: regarding.resourceVersion,
      },
    };
    try {
      await this.o.client.request(
        'POST',
        `/apis/events.k8s.io/v1/namespaces/${encodeURIComponent(regarding.namespace)}/events`,
        { body, signal, timeoutMs: 10_000 },
      );
    } catch (err) {
      this.o.logger.warn('could not record event', {
        regarding: objectKey,
        reason: t.reason,
        error: apiErrorText(err),
      });
    }
  }
}
