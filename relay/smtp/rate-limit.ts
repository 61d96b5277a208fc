/**
 * Token buckets per (tenant, client IP): `messages` per `perSeconds`, bursting up to `messages`.
 * Counted once per transaction per tenant. PER POD: every relay replica counts on its own, so a
 * tenant's effective limit is N x the configured one behind N pods (a shared store would add a
 * network round trip to every RCPT; the operator can divide by the replica count if needed).
 *
 * Bounded memory: a bucket idle long enough to be full again carries no information and is dropped
 * by a lazy sweep; past `maxKeys` the least recently used bucket is dropped (Map keeps insertion
 * order and a used key is re-inserted), which only ever makes the limiter more lenient.
 */
export interface RateSpec {
  messages: number;
  perSeconds: number;
}

interface Bucket {
  tokens: number;
  updatedMs: number;
  fullAfterMs: number;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly maxKeys: number;
  private readonly now: () => number;
  private lastSweepMs = 0;

  constructor(opts: { maxKeys?: number; now?: () => number } = {}) {
    this.maxKeys = opts.maxKeys ?? 100_000;
    this.now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.buckets.size;
  }

  /** Takes one token; false when the bucket is empty. */
  take(key: string, spec: RateSpec): boolean {
    const now = this.now();
    this.sweep(now);
    const ratePerMs = spec.messages / (spec.perSeconds * 1000);
    let b = this.buckets.get(key);
    if (b) {
      this.buckets.delete(key);
      b.tokens = Math.min(spec.messages, b.tokens + (now - b.updatedMs) * ratePerMs);
      b.updatedMs = now;
    } else {
      b = { tokens: spec.messages, updatedMs: now, fullAfterMs: now };
    }
    const ok = b.tokens >= 1;
    if (ok) b.tokens -= 1;
    b.fullAfterMs = now + (spec.messages - b.tokens) / ratePerMs;
    this.buckets.set(key, b);
    while (this.buckets.size > this.maxKeys) {
      const oldest = this.buckets.keys().next().value as string;
      this.buckets.delete(oldest);
    }
    return ok;
  }

  private sweep(now: number): void {
    if (now - this.lastSweepMs < 10_000) return;
    this.lastSweepMs = now;
    for (const [key, b] of this.buckets) if (b.fullAfterMs <= now) this.buckets.delete(key);
  }
}
