// One LIST, then a watch from the LIST's resourceVersion, into a cache by namespace and name:
// the reflector + store of client-go, without the resilience policy (operator/kube/informer.ts
// owns restarts, backoff and the staleness watchdog).
// - a watch the server ends (timeoutSeconds) is resumed from the last resourceVersion seen (event
//   or bookmark); one that ends within a second without an event waits `quietDelay` first, so a
//   proxy that closes every watch at once cannot make a tight loop;
// - 410 Gone (an HTTP answer or an ERROR event) re-LISTs; the cache is replaced by the LIST, with
//   add/update/delete for what differs (an object at the same resourceVersion keeps its cached
//   copy and makes no event);
// - any other error stops the loop and is reported; start() again resumes the watch from the last
//   resourceVersion (no LIST), or LISTs if there never was one.

import { apiStatus, KubeApiError, type WatchEventType } from '../../platform/kube/client.ts';
import { ObjectStore } from './object-store.ts';

export interface KubeObject {
  metadata?: { name?: string; namespace?: string; resourceVersion?: string };
}

export interface ListResult<T> {
  items: T[];
  metadata?: { resourceVersion?: string };
}

export type Verb = 'add' | 'update' | 'delete';

export interface ListWatchOptions<T extends KubeObject> {
  /** A LIST of every object, already in the form the cache keeps. */
  list(): Promise<ListResult<T>>;
  /** Watches from `resourceVersion`; resolves when the server ends the watch. */
  watch(
    resourceVersion: string,
    onEvent: (type: WatchEventType, obj: unknown) => void,
    signal: AbortSignal,
  ): Promise<void>;
  /** What the cache keeps of a watch event's object; `cached`: the object it replaces, if any. */
  compact(obj: T, cached: T | undefined): T;
  /** `before`: the cached object the change replaced or removed, if any. */
  onChange(verb: Verb, obj: T, before: T | undefined): void;
  /** After a LIST has filled the cache (and its events were delivered). */
  onListed(): void;
  /** The loop stopped on an error (not 410 Gone, not stop()). */
  onError(err: unknown): void;
  /** Pause before re-watching after the n-th watch in a row that ended at once without events. */
  quietDelay(n: number): number;
}

export class ListWatch<T extends KubeObject> {
  private cache = new ObjectStore<T>();
  private resourceVersion = '';
  private running = false;
  private abort = new AbortController();
  private quiet = 0;
  private readonly o: ListWatchOptions<T>;

  constructor(o: ListWatchOptions<T>) {
    this.o = o;
  }

  /** A new array of the cached objects. */
  list(): T[] {
    return this.cache.list();
  }

  get size(): number {
    return this.cache.size;
  }

  get(name: string, namespace?: string): T | undefined {
    return this.cache.get(namespace, name);
  }

  /** The cached object with the same namespace and name as `obj`. */
  cachedAs(obj: KubeObject): T | undefined {
    return this.cache.get(obj.metadata?.namespace, obj.metadata?.name);
  }

  /** Starts (or resumes) the loop; a no-op while it runs. */
  start(): void {
    if (this.running) return;
    this.running = true;
    if (this.abort.signal.aborted) this.abort = new AbortController();
    void this.run();
  }

  stop(): void {
    this.abort.abort();
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    try {
      while (!signal.aborted) {
        if (!this.resourceVersion && !(await this.relist(signal))) return;
        const started = Date.now();
        let events = 0;
        try {
          await this.o.watch(
            this.resourceVersion,
            (type, raw) => {
              if (signal.aborted) return;
              if (type === 'ERROR') {
                const status = raw as { code?: number; message?: string };
                throw new KubeApiError(status.code ?? 500, JSON.stringify(raw), 'watch event');
              }
              events++;
              this.apply(type, raw as T);
            },
            signal,
          );
        } catch (err) {
          if (signal.aborted) return;
          if (apiStatus(err) !== 410) throw err;
          // the server no longer has our resourceVersion: LIST again
          this.resourceVersion = '';
          continue;
        }
        if (events === 0 && Date.now() - started < 1000) {
          const delay = this.o.quietDelay(++this.quiet);
          await new Promise<void>((r) => {
            const t = setTimeout(r, delay);
            signal.addEventListener(
              'abort',
              () => {
                clearTimeout(t);
                r();
              },
              { once: true },
            );
          });
        } else {
          this.quiet = 0;
        }
      }
    } catch (err) {
      if (!signal.aborted) this.o.onError(err);
    } finally {
      this.running = false;
    }
  }

  /**
   * LIST into the cache; false when stopped meanwhile. A method of its own so that the LIST's answer
   * dies with it: a local of run() stays in its suspended frame for as long as the watch after it
   * lasts, which kept the first version of every object alive (all 100k MailRoutes once each had its
   * status written: ~20 MB).
   */
  private async relist(signal: AbortSignal): Promise<boolean> {
    const listed = await this.o.list();
    if (signal.aborted) return false;
    this.replace(listed.items);
    this.resourceVersion = listed.metadata?.resourceVersion ?? '';
    this.o.onListed();
    return true;
  }

  private apply(type: WatchEventType, raw: T): void {
    const rv = raw?.metadata?.resourceVersion;
    if (type === 'BOOKMARK') {
      if (rv) this.resourceVersion = rv;
      return;
    }
    const cached = this.cache.get(raw?.metadata?.namespace, raw?.metadata?.name);
    if (type === 'DELETED') {
      this.cache.delete(raw?.metadata?.namespace, raw?.metadata?.name);
      if (rv) this.resourceVersion = rv;
      this.o.onChange('delete', raw, cached);
      return;
    }
    if (rv) this.resourceVersion = rv;
    if (cached && cached.metadata?.resourceVersion === rv) return;
    const obj = this.o.compact(raw, cached);
    this.cache.set(obj);
    this.o.onChange(cached ? 'update' : 'add', obj, cached);
  }

  private replace(items: T[]): void {
    const old = this.cache;
    const next = new ObjectStore<T>();
    const changes: Array<[Verb, T, T | undefined]> = [];
    for (const item of items) {
      const cached = old.get(item.metadata?.namespace, item.metadata?.name);
      if (cached && cached.metadata?.resourceVersion === item.metadata?.resourceVersion) {
        next.set(cached);
        continue;
      }
      next.set(item);
      changes.push([cached ? 'update' : 'add', item, cached]);
    }
    for (const cached of old.list())
      if (!next.get(cached.metadata?.namespace, cached.metadata?.name))
        changes.push(['delete', cached, cached]);
    this.cache = next;
    for (const [verb, obj, before] of changes) this.o.onChange(verb, obj, before);
  }
}
