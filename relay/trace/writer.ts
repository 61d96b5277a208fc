// Batching trace writer: the relay hands over entries synchronously and never waits for the store.
// Entries wait in a bounded in-memory buffer and are written in batches; while the store is down
// (or not yet reachable at start) mail keeps flowing, the buffer fills, and what does not fit is
// dropped and counted (mailplus_relay_trace_dropped_total). A periodic purge enforces retention.
import type { TraceEntry } from './entry.ts';
import type { PurgePlan } from './retention.ts';
import type { TraceStore } from './store.ts';

export interface TraceWriterMetrics {
  written(n: number): void;
  dropped(n: number, reason: 'buffer_full' | 'shutdown'): void;
  buffered(n: number): void;
}

export interface TraceWriterLogger {
  warn(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
}

export interface TraceWriterOptions {
  /** Opens the store; retried with backoff until it succeeds. */
  open: () => Promise<TraceStore>;
  metrics?: TraceWriterMetrics;
  logger?: TraceWriterLogger;
  /** Default 10 000 entries. */
  maxBuffer?: number;
  /**
   * Bytes (about the JSON size, entrySize) the buffered entries may take; entries are of any size
   * (recipients), so a count alone does not bound memory while the store is down. Default 8 MiB.
   */
  maxBufferBytes?: number;
  /** Default 500 entries per write. */
  batchSize?: number;
  /** Default 1000 ms. */
  flushIntervalMs?: number;
  /** First retry delay after a failure (doubles up to maxRetryMs). Default 500 ms. */
  retryMs?: number;
  /** Default 30 s. */
  maxRetryMs?: number;
  /** Retention enforcement: how often (default 10 min) and what (the plan from the current config). */
  purge?: { intervalMs?: number; plan: () => PurgePlan };
}

interface Pending {
  entry: TraceEntry;
  expiresMs: number;
  bytes: number;
}

/**
 * About the JSON size of an entry, computed without serialising it (record() runs once per
 * transaction on the mail path): the fields' text plus a fixed allowance for keys and numbers.
 */
export function entrySize(e: TraceEntry): number {
  // record() must never throw: tolerate entries with fields missing
  const len = (v: string | undefined) => v?.length ?? 0;
  let n = 200 + len(e.time) + len(e.txid) + len(e.tenant) + len(e.route) + len(e.clientIp);
  n += len(e.sender) + len(e.upstream);
  for (const r of e.recipients ?? []) n += 60 + len(r.address) + len(r.reason);
  return n;
}

export class TraceWriter {
  private readonly o: Required<Omit<TraceWriterOptions, 'metrics' | 'logger' | 'purge'>> &
    Pick<TraceWriterOptions, 'metrics' | 'logger' | 'purge'>;
  private buffer: Pending[] = [];
  private bufferBytes = 0;
  private store: TraceStore | undefined;
  private opening: Promise<TraceStore | undefined> | undefined;
  private flushing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private purgeTimer: NodeJS.Timeout | undefined;
  private retryDelay: number;
  private nextAttemptAt = 0;
  private closed = false;
  private failing = false;

  constructor(opts: TraceWriterOptions) {
    this.o = {
      maxBuffer: 10_000,
      maxBufferBytes: 8 * 1024 * 1024,
      batchSize: 500,
      flushIntervalMs: 1000,
      retryMs: 500,
      maxRetryMs: 30_000,
      ...opts,
    };
    this.retryDelay = this.o.retryMs;
    this.timer = setInterval(() => void this.flush(), this.o.flushIntervalMs);
    this.timer.unref();
    if (opts.purge) {
      const every = opts.purge.intervalMs ?? 600_000;
      this.purgeTimer = setInterval(() => void this.purgeNow(), every);
      this.purgeTimer.unref();
    }
    void this.connect();
  }

  /** Entries waiting to be written. */
  get buffered(): number {
    return this.buffer.length;
  }

  /** JSON bytes of the entries waiting to be written. */
  get bufferedBytes(): number {
    return this.bufferBytes;
  }

  /** The store once it is open (captures use the same one). */
  current(): TraceStore | undefined {
    return this.store;
  }

  /** Never throws, never waits: mail must not depend on the trace. */
  record(entry: TraceEntry, expiresMs: number): void {
    if (this.closed) {
      this.o.metrics?.dropped(1, 'shutdown');
      return;
    }
    const bytes = entrySize(entry);
    if (this.buffer.length >= this.o.maxBuffer || this.bufferBytes + bytes > this.o.maxBufferBytes) {
      this.o.metrics?.dropped(1, 'buffer_full');
      return;
    }
    this.buffer.push({ entry, expiresMs, bytes });
    this.bufferBytes += bytes;
    this.o.metrics?.buffered(this.buffer.length);
    if (this.buffer.length >= this.o.batchSize) void this.flush();
  }

  private connect(): Promise<TraceStore | undefined> {
    if (this.store) return Promise.resolve(this.store);
    if (this.opening) return this.opening;
    if (Date.now() < this.nextAttemptAt) return Promise.resolve(undefined);
    this.opening = this.o.open().then(
      (s) => {
        this.opening = undefined;
        if (this.closed) {
          void s.close();
          return undefined;
        }
        this.store = s;
        this.recovered();
        return s;
      },
      (err: Error) => {
        this.opening = undefined;
        this.failed('trace store unavailable, buffering entries', err);
        return undefined;
      },
    );
    return this.opening;
  }

  private failed(msg: string, err: Error): void {
    this.nextAttemptAt = Date.now() + this.retryDelay;
    this.retryDelay = Math.min(this.o.maxRetryMs, this.retryDelay * 2);
    if (!this.failing) this.o.logger?.warn(msg, { error: err.message, buffered: this.buffer.length });
    this.failing = true;
  }

  private recovered(): void {
    this.retryDelay = this.o.retryMs;
    this.nextAttemptAt = 0;
    if (this.failing) this.o.logger?.info('trace store reachable again', { buffered: this.buffer.length });
    this.failing = false;
  }

  /** Writes what is buffered (one batch at a time); resolves when done or when the store failed. */
  flush(): Promise<void> {
    if (this.flushing) return this.flushing;
    this.flushing = this.flushLoop().finally(() => {
      this.flushing = undefined;
    });
    return this.flushing;
  }

  private async flushLoop(): Promise<void> {
    while (this.buffer.length > 0) {
      if (Date.now() < this.nextAttemptAt) return;
      const store = await this.connect();
      if (!store) return;
      const batch = this.buffer.slice(0, this.o.batchSize);
      try {
        await store.insert(batch);
      } catch (err) {
        this.failed('trace store write failed, buffering entries', err as Error);
        return;
      }
      this.recovered();
      for (const p of this.buffer.splice(0, batch.length)) this.bufferBytes -= p.bytes;
      this.o.metrics?.written(batch.length);
      this.o.metrics?.buffered(this.buffer.length);
    }
  }

  async purgeNow(): Promise<{ entries: number; captures: number } | undefined> {
    const store = await this.connect();
    if (!store || !this.o.purge) return undefined;
    try {
      const r = await store.purge(this.o.purge.plan());
      if (r.entries > 0 || r.captures > 0) this.o.logger?.info('trace purged', r);
      return r;
    } catch (err) {
      this.o.logger?.warn('trace purge failed', { error: (err as Error).message });
      return undefined;
    }
  }

  /** Final flush (bounded by timeoutMs); what is left is counted as dropped. */
  async close(timeoutMs = 5000): Promise<void> {
    if (this.closed) return;
    clearInterval(this.timer);
    clearInterval(this.purgeTimer);
    this.nextAttemptAt = 0;
    let t: NodeJS.Timeout | undefined;
    await Promise.race([
      this.flush(),
      new Promise<void>((r) => {
        t = setTimeout(r, timeoutMs);
      }),
    ]);
    clearTimeout(t);
    this.closed = true;
    if (this.buffer.length > 0) {
      this.o.metrics?.dropped(this.buffer.length, 'shutdown');
      this.o.logger?.warn('trace entries dropped at shutdown', { dropped: this.buffer.length });
      this.buffer = [];
      this.bufferBytes = 0;
      this.o.metrics?.buffered(0);
    }
    await this.flushing?.catch(() => {});
    const s = this.store;
    this.store = undefined;
    await s?.close().catch(() => {});
    await this.opening;
  }
}
