// Kubernetes Events (events.k8s.io/v1) for status transitions, with our own dedupe (as client-go's
// event correlator has): the same reason and note for the same object at most once per window,
// and at most `burst` events per object per window, so a flapping object cannot spam.

import { apiErrorText, type KubeClient, microTime } from '../../platform/kube/client.ts';
import type { KubeEvent } from '../../platform/kube/objects.ts';
import type { Logger } from '../../platform/log.ts';
import type { Transition } from '../conditions/api-conditions.ts';

export const REPORTING_CONTROLLER = 'mailplus.io/operator';

/**
 * The recent events of the objects that had one, least recently used first, for at most
 * `maxObjects` objects (client-go's correlator keeps 4,096). Unbounded, the first status write of
 * every object after publishing 100k routes left two entries per object (one keyed by the whole
 * note) for the window, and one per object for good.
 */
export class EventDeduper {
  private readonly recent = new Map<string, Array<{ at: number; sig: string }>>();
  private readonly windowMs: number;
  private readonly burst: number;
  private readonly maxObjects: number;
  constructor(windowMs = 10 * 60_000, burst = 5, maxObjects = 4096) {
    this.windowMs = windowMs;
    this.burst = burst;
    this.maxObjects = maxObjects;
  }

  /** True when this event should be emitted now (and records it). */
  allow(objectKey: string, t: Transition, now: number): boolean {
    const sig = `${t.type}|${t.reason}|${t.note}`;
    const kept = (this.recent.get(objectKey) ?? []).filter((e) => now - e.at < this.windowMs);
    // re-inserted: the map's order is the order of use
    this.recent.delete(objectKey);
    const allowed = kept.length < this.burst && !kept.some((e) => e.sig === sig);
    if (allowed) kept.push({ at: now, sig });
    if (kept.length > 0) this.recent.set(objectKey, kept);
    if (this.recent.size > this.maxObjects) {
      const oldest = this.recent.keys().next();
      if (!oldest.done) this.recent.delete(oldest.value);
    }
    return allowed;
  }

  /** Objects with recent events remembered (tests, metrics). */
  get size(): number {
    return this.recent.size;
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
