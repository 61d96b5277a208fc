// A work queue with client-go semantics: keys, not objects; a key is queued at most once (adds
// while queued are deduplicated); a key being processed is never handed to a second worker (adds
// meanwhile mark it dirty and it is queued again when done()); delayed adds (addAfter) keep the
// earliest deadline, which is what coalesces bursts into one batch; per-key exponential backoff
// for retries (addRateLimited / forget).
import { type BackoffPolicy, backoffDelay } from '../../platform/backoff.ts';

export interface WorkQueueMetrics {
  depth(n: number): void;
  add(): void;
  retry(): void;
  /** Seconds an item waited in the queue before a worker took it. */
  queueDuration(seconds: number): void;
  /** Seconds a worker spent on an item. */
  workDuration(seconds: number): void;
}

export interface WorkQueueOptions {
  retry?: BackoffPolicy;
  metrics?: WorkQueueMetrics;
  /** Clock (tests). */
  now?: () => number;
}

export const DEFAULT_RETRY: BackoffPolicy = { baseMs: 100, maxMs: 60_000 };

export class WorkQueue<K = string> {
  private readonly queue: K[] = [];
  /**
   * Keys that need processing (queued, or re-added while processing) → when each was first added
   * since it was last handed out (queue duration). One map for both: at 100k queued status keys a
   * set beside it was 2.5 MB.
   */
  private readonly dirty = new Map<K, number>();
  /** Key → processing start (ms). */
  private readonly processing = new Map<K, number>();
  private readonly delayed = new Map<K, { at: number; timer: NodeJS.Timeout }>();
  private readonly failures = new Map<K, number>();
  private waiters: Array<(key: K | undefined) => void> = [];
  private shuttingDown = false;
  private readonly retryPolicy: BackoffPolicy;
  private readonly metrics?: WorkQueueMetrics;
  private readonly now: () => number;

  constructor(opts: WorkQueueOptions = {}) {
    this.retryPolicy = opts.retry ?? DEFAULT_RETRY;
    this.metrics = opts.metrics;
    this.now = opts.now ?? (() => performance.now());
  }

  get length(): number {
    return this.queue.length;
  }

  /** Keys handed out and not done yet. */
  get working(): number {
    return this.processing.size;
  }

  get shutdown(): boolean {
    return this.shuttingDown;
  }

  add(key: K): void {
    if (this.shuttingDown || this.dirty.has(key)) return;
    this.metrics?.add();
    this.dirty.set(key, this.now());
    if (this.processing.has(key)) return;
    const waiter = this.waiters.shift();
    if (waiter) {
      this.handOut(key, waiter);
      return;
    }
    this.queue.push(key);
    this.metrics?.depth(this.queue.length);
  }

  /** Adds after ms; an earlier pending deadline for the key wins (bursts coalesce). */
  addAfter(key: K, ms: number): void {
    if (this.shuttingDown) return;
    if (ms <= 0) {
      this.add(key);
      return;
    }
    const at = this.now() + ms;
    const pending = this.delayed.get(key);
    if (pending && pending.at <= at) return;
    if (pending) clearTimeout(pending.timer);
    const timer = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, ms);
    timer.unref?.();
    this.delayed.set(key, { at, timer });
  }

  /** Retry with per-key exponential backoff. */
  addRateLimited(key: K): void {
    const n = (this.failures.get(key) ?? 0) + 1;
    this.failures.set(key, n);
    this.metrics?.retry();
    this.addAfter(key, backoffDelay(n, this.retryPolicy));
  }

  /** The key succeeded: its next failure starts the backoff from the beginning. */
  forget(key: K): void {
    this.failures.delete(key);
  }

  retries(key: K): number {
    return this.failures.get(key) ?? 0;
  }

  /** Waits for a key; undefined once the queue is shut down. Call done(key) when finished. */
  get(): Promise<K | undefined> {
    if (this.shuttingDown) return Promise.resolve(undefined);
    if (this.queue.length > 0) {
      const key = this.queue.shift() as K;
      this.metrics?.depth(this.queue.length);
      return new Promise((resolve) => this.handOut(key, resolve));
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private handOut(key: K, to: (key: K) => void): void {
    const now = this.now();
    const added = this.dirty.get(key);
    this.dirty.delete(key);
    if (added !== undefined) this.metrics?.queueDuration((now - added) / 1000);
    this.processing.set(key, now);
    to(key);
  }

  done(key: K): void {
    const started = this.processing.get(key);
    if (started === undefined) return;
    this.processing.delete(key);
    this.metrics?.workDuration((this.now() - started) / 1000);
    if (!this.dirty.has(key) || this.shuttingDown) return;
    const waiter = this.waiters.shift();
    if (waiter) this.handOut(key, waiter);
    else {
      this.queue.push(key);
      this.metrics?.depth(this.queue.length);
    }
  }

  /** Seconds of work in progress: total and longest (workqueue_unfinished_work_seconds / longest_running). */
  inProgress(): { unfinishedSeconds: number; longestSeconds: number; count: number } {
    const now = this.now();
    let total = 0;
    let longest = 0;
    for (const started of this.processing.values()) {
      const s = (now - started) / 1000;
      total += s;
      if (s > longest) longest = s;
    }
    return { unfinishedSeconds: total, longestSeconds: longest, count: this.processing.size };
  }

  isPending(key: K): boolean {
    return this.dirty.has(key) || this.delayed.has(key) || this.processing.has(key);
  }

  shutDown(): void {
    this.shuttingDown = true;
    for (const d of this.delayed.values()) clearTimeout(d.timer);
    this.delayed.clear();
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w(undefined);
  }
}
