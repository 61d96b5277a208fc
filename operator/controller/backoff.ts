// Exponential backoff shared by work-queue retries, informer restarts and the relay's watch.

export interface BackoffPolicy {
  baseMs: number;
  maxMs: number;
}

/** Delay before attempt `failures` (1 = first retry): base·2^(failures-1), capped at max. */
export function backoffDelay(failures: number, policy: BackoffPolicy): number {
  if (failures <= 0) return 0;
  // 2^40 already exceeds any sane cap; avoid Infinity for absurd counts
  return Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(failures - 1, 40));
}

/**
 * A backoff that doubles on every failure and resets on success, e.g. informer restarts
 * (1 s → 30 s): `next()` returns the delay to wait now.
 */
export class Backoff {
  private failures = 0;
  private readonly policy: BackoffPolicy;
  constructor(policy: BackoffPolicy) {
    this.policy = policy;
  }
  next(): number {
    this.failures++;
    return backoffDelay(this.failures, this.policy);
  }
  reset(): void {
    this.failures = 0;
  }
  get attempts(): number {
    return this.failures;
  }
}
