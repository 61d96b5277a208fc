// A ListWatch (kube/list-watch.ts) made safe to run for weeks (docs/operator.md, "How a change flows",
// step 1):
// - any non-410 error leaves ListWatch stopped: restart it after a jittered backoff (WATCH_RETRY,
//   the relay's policy too), one pending restart at a time, ignoring the AbortError our own stop()
//   causes. The backoff resets after an event or a minute without errors, not on a LIST alone:
//   LIST ok + watch failing (RBAC without watch, a proxy) must not become a LIST loop;
// - 410 Gone is handled by ListWatch itself: it re-LISTs and watches from the LIST's
//   resourceVersion (never an object's); every LIST is counted;
// - a watch that ends at once without events is retried after WATCH_RETRY's jittered delay, never
//   in a loop;
// - resync: every resyncMs the owner is told to reconcile everything (level-triggered), and when
//   nothing was seen for staleAfterMs a LIST is compared with the cache: resourceVersions the
//   cache does not have (and still lacks after a grace period) mean a silently dead watch, so the
//   informer is recreated. The old cache keeps serving until the new one has listed.
// Health: mailplus_operator_informer_{last_sync_timestamp_seconds,errors_total,restarts_total,relists_total}.

import { Backoff, type BackoffPolicy, backoffDelay, WATCH_RETRY } from '../../platform/backoff.ts';
import type { KubeClient } from '../../platform/kube/client.ts';
import type { Logger } from '../../platform/log.ts';
import type { OperatorMetrics } from '../metrics.ts';
import { type KubeObject, type ListResult, ListWatch } from './list-watch.ts';

export type { KubeObject, ListResult };

export interface InformerOptions<T extends KubeObject> {
  /** Metrics label and log field: 'MailRoute', 'Service', ... */
  kind: string;
  client: KubeClient;
  /** Watch path, e.g. /apis/mailplus.io/v1alpha1/mailroutes. */
  path: string;
  /**
   * A LIST of every object; a paginated one passes each page's items through `each` as it comes,
   * so that the raw objects of a 100k LIST are never all alive at once (the process keeps the
   * memory of that peak).
   */
  list(each?: (item: T) => T): Promise<ListResult<T>>;
  labelSelector?: string;
  fieldSelector?: string;
  metrics: OperatorMetrics;
  logger: Logger;
  /**
   * An object was added, updated or deleted (handlers enqueue keys only); `before`: the cached
   * object it replaced or removed (from the cache still serving, when the informer was recreated).
   */
  onChange(verb: 'add' | 'update' | 'delete', obj: T, before: T | undefined): void;
  /** Periodic level-triggered resync. */
  onResync?(): void;
  resyncMs?: number;
  staleAfterMs?: number;
  /** Grace before a LIST/cache disagreement counts as stale (events may be in flight). */
  staleGraceMs?: number;
  /** Default WATCH_RETRY. */
  restartBackoff?: BackoffPolicy;
  /**
   * What the cache keeps of each object from a LIST or a watch event, before anything sees it;
   * `previous`: the cached object it replaces, if any. Default: the object without
   * metadata.managedFields.
   */
  compact?(obj: T, previous: T | undefined): T;
}

/** Items per LIST request of listPaginated (client-go's reflector uses 500 as well). */
export const LIST_PAGE_SIZE = 500;

/**
 * A LIST in pages of `limit` (continue tokens: one consistent snapshot), joined into one list with
 * the resourceVersion of that snapshot. One LIST of 100k custom resources does not finish within
 * the API server's request timeout (60 s) on a busy server, so the informer would never sync.
 */
export async function listPaginated<T>(
  page: (opts: { limit: number; continue?: string }) => Promise<unknown>,
  limit = LIST_PAGE_SIZE,
  each: (item: T) => T = (item) => item,
): Promise<{ apiVersion?: string; kind?: string; metadata: { resourceVersion?: string }; items: T[] }> {
  const items: T[] = [];
  let token: string | undefined;
  let first: { apiVersion?: string; kind?: string; metadata?: { resourceVersion?: string } } | undefined;
  do {
    const res = (await page({ limit, ...(token ? { continue: token } : {}) })) as {
      apiVersion?: string;
      kind?: string;
      metadata?: { resourceVersion?: string; continue?: string };
      items?: T[];
    };
    first ??= res;
    for (const item of res.items ?? []) items.push(each(item));
    token = res.metadata?.continue || undefined;
  } while (token);
  return {
    apiVersion: first?.apiVersion,
    kind: first?.kind,
    metadata: { resourceVersion: first?.metadata?.resourceVersion },
    items,
  };
}

/**
 * Nothing here reads metadata.managedFields, and they are about half of a custom resource's size:
 * dropped from the cached objects (100k MailRoutes: tens of MB of operator memory).
 */
function dropManagedFields<T>(obj: T): T {
  const md = (obj as { metadata?: { managedFields?: unknown } } | undefined)?.metadata;
  if (md?.managedFields !== undefined) delete md.managedFields;
  return obj;
}

/** What an owner of informers of several kinds starts, waits for and stops. */
export type InformerLifecycle = Pick<
  ResilientInformer<KubeObject>,
  'kind' | 'synced' | 'start' | 'waitForSync' | 'stop'
>;

export class ResilientInformer<T extends KubeObject> {
  readonly kind: string;
  private readonly opts: InformerOptions<T>;
  private serving: ListWatch<T> | undefined;
  private current: ListWatch<T> | undefined;
  private stopping = false;
  private pendingRestart: NodeJS.Timeout | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private readonly backoff: Backoff;
  private lastSeen = Date.now();
  private syncedFlag = false;
  private syncWaiters: Array<() => void> = [];
  private checking = false;
  private lastError = 0;

  constructor(opts: InformerOptions<T>) {
    this.opts = opts;
    this.kind = opts.kind;
    this.backoff = new Backoff(opts.restartBackoff ?? WATCH_RETRY);
    opts.metrics.informerSynced.set({ kind: opts.kind }, 0);
    opts.metrics.informerRestarts.inc({ kind: opts.kind }, 0);
    opts.metrics.informerRelists.inc({ kind: opts.kind }, 0);
    opts.metrics.informerErrors.inc({ kind: opts.kind }, 0);
  }

  get synced(): boolean {
    return this.syncedFlag;
  }

  start(): void {
    this.stopping = false;
    this.create();
    const resyncMs = this.opts.resyncMs ?? 600_000;
    this.resyncTimer = setInterval(() => void this.resync(), resyncMs);
    this.resyncTimer.unref();
  }

  waitForSync(timeoutMs: number): Promise<boolean> {
    if (this.syncedFlag) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.syncWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  list(): T[] {
    // a new array of the cached objects on every call: no second copy of the objects
    return this.serving?.list() ?? [];
  }

  get(name: string, namespace?: string): T | undefined {
    return this.serving?.get(name, namespace);
  }

  /**
   * What `lw` does not have cached of `obj` but the cache still serving does: a recreated informer
   * lists into an empty cache while the old one serves, and its changes replace the old objects.
   */
  private fromServing(lw: ListWatch<T>, obj: KubeObject): T | undefined {
    return lw === this.serving ? undefined : this.serving?.cachedAs(obj);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.pendingRestart);
    this.pendingRestart = undefined;
    clearInterval(this.resyncTimer);
    this.current?.stop();
    this.serving?.stop();
    const waiters = this.syncWaiters;
    this.syncWaiters = [];
    for (const w of waiters) w();
  }

  private create(): void {
    const { kind, metrics, client, path, labelSelector, fieldSelector } = this.opts;
    const compact = this.opts.compact ?? dropManagedFields;
    const lw: ListWatch<T> = new ListWatch<T>({
      list: async () => {
        metrics.informerRelists.inc({ kind });
        // what list() compacted page by page is not compacted again; the rest is compacted here
        const done = new WeakSet<object>();
        const previous = (item: T) => lw.cachedAs(item) ?? this.fromServing(lw, item);
        const each = (item: T): T => {
          const c = compact(item, previous(item));
          if (typeof c === 'object' && c !== null) done.add(c);
          return c;
        };
        const result = await this.opts.list(each);
        result.items = result.items.map((item) =>
          done.has(item as object) ? item : compact(item, previous(item)),
        );
        this.markSynced();
        return result;
      },
      // how long a watch lasts is the API server's choice (--min-request-timeout: 30-60 min by
      // default); a watch that went silently dead is the staleness watchdog's to find (resync)
      watch: (resourceVersion, onEvent, signal) =>
        client.watch(path, onEvent, {
          query: { resourceVersion, allowWatchBookmarks: true, labelSelector, fieldSelector },
          signal,
        }),
      compact: (obj, cached) => compact(obj, cached ?? this.fromServing(lw, obj)),
      quietDelay: (n) => backoffDelay(n, this.opts.restartBackoff ?? WATCH_RETRY),
      onChange: (verb, obj, before) => {
        if (lw !== this.current || this.stopping) return;
        this.markSynced();
        this.backoff.reset();
        metrics.informerLastEvent.set({ kind }, Date.now() / 1000);
        this.opts.onChange(verb, obj, before ?? this.fromServing(lw, obj));
      },
      onListed: () => this.listed(lw),
      onError: (err) => {
        if (lw !== this.current || this.stopping || this.pendingRestart) return;
        metrics.informerErrors.inc({ kind });
        // a minute without errors was healthy: start the backoff again from its first step
        if (Date.now() - this.lastError > 60_000) this.backoff.reset();
        this.lastError = Date.now();
        const delay = this.backoff.next();
        metrics.informerRestarts.inc({ kind });
        this.opts.logger.warn('informer stopped on an error, restarting', {
          kind,
          error: (err as Error)?.message ?? String(err),
          delayMs: delay,
        });
        this.pendingRestart = setTimeout(() => {
          this.pendingRestart = undefined;
          if (this.stopping || lw !== this.current) return;
          lw.start();
        }, delay);
        this.pendingRestart.unref();
      },
    });
    this.current = lw;
    lw.start();
  }

  private listed(lw: ListWatch<T>): void {
    if (lw !== this.current || this.stopping) return;
    if (this.serving && this.serving !== lw) {
      const old = this.serving;
      this.serving = lw;
      old.stop();
    } else {
      this.serving = lw;
    }
    if (!this.syncedFlag) {
      this.syncedFlag = true;
      this.opts.metrics.informerSynced.set({ kind: this.kind }, 1);
      this.opts.logger.info('informer synced', { kind: this.kind, objects: lw.size });
      const waiters = this.syncWaiters;
      this.syncWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** Resync tick: tell the owner, and look for a silently dead watch. */
  async resync(): Promise<void> {
    if (this.stopping) return;
    this.opts.onResync?.();
    const staleAfter = this.opts.staleAfterMs ?? 5 * 60_000;
    if (Date.now() - this.lastSeen < staleAfter || this.checking || !this.serving) return;
    this.checking = true;
    try {
      if (await this.cacheIsStale()) {
        this.opts.metrics.informerRestarts.inc({ kind: this.kind });
        this.opts.logger.warn(
          'informer cache is stale (LIST has versions the watch never delivered), recreating',
          {
            kind: this.kind,
          },
        );
        const old = this.current;
        this.create();
        // the serving cache stays until the new informer has listed; the old watch can go now
        if (old && old !== this.serving) old.stop();
      } else {
        this.markSynced();
      }
    } catch (err) {
      this.opts.metrics.informerErrors.inc({ kind: this.kind });
      this.opts.logger.warn('informer staleness check failed', {
        kind: this.kind,
        error: (err as Error).message,
      });
    } finally {
      this.checking = false;
    }
  }

  private async cacheIsStale(): Promise<boolean> {
    this.opts.metrics.informerRelists.inc({ kind: this.kind });
    // only what is compared, page by page: the whole answer of a 100k LIST (hundreds of MB parsed) would
    // grow the heap for good, on a quiet cluster every staleAfterMs
    const listed = await this.opts.list(
      (item) =>
        ({
          metadata: {
            namespace: item.metadata?.namespace,
            name: item.metadata?.name,
            resourceVersion: item.metadata?.resourceVersion,
          },
        }) as T,
    );
    const differing = (): string[] => {
      const cache = new Map(
        this.list().map((o) => [
          `${o.metadata?.namespace ?? ''}/${o.metadata?.name}`,
          o.metadata?.resourceVersion,
        ]),
      );
      const out: string[] = [];
      for (const item of listed.items) {
        const k = `${item.metadata?.namespace ?? ''}/${item.metadata?.name}`;
        if (cache.get(k) !== item.metadata?.resourceVersion) out.push(k);
        cache.delete(k);
      }
      // objects the cache has but the LIST does not: deletes never delivered
      return out.concat([...cache.keys()]);
    };
    const first = differing();
    if (first.length === 0) return false;
    const before = new Map(first.map((k) => [k, this.versionOf(k)]));
    await new Promise((r) => setTimeout(r, this.opts.staleGraceMs ?? 5000));
    // still disagreeing and the cache did not move for those keys: the watch is dead
    return differing().some((k) => before.has(k) && before.get(k) === this.versionOf(k));
  }

  /** The cache is known to be current now (LIST answered, event delivered, staleness check passed). */
  private markSynced(): void {
    this.lastSeen = Date.now();
    this.opts.metrics.informerLastSync.set({ kind: this.kind }, this.lastSeen / 1000);
  }

  private versionOf(key: string): string | undefined {
    const [ns, name] = key.split('/');
    return this.get(name, ns || undefined)?.metadata?.resourceVersion;
  }
}
