// Exponential backoff shared by work-queue retries, informer restarts and the relay's watch.

export interface BackoffPolicy {
  baseMs: number;
  /** Cap of the doubling delay, before jitter. */
  maxMs: number;
  /**
   * Random extra share of each delay (0..1): the delay is drawn from [d, d·(1+jitter)], so many
   * clients that failed together (an API-server restart) do not retry in lockstep, at the cap too.
   */
  jitter?: number;
}

/**
 * Retry policy of every list/watch (relay ConfigMap watch, operator informers) after an error or a
 * 410 Gone: 1-1.5 s, then 2-3 s, never more than 3 s. The cap decides how long a watch stays blind
 * after the API server is back (a change must reach relays within a few seconds); a refused
 * connection costs a down server nothing, and a failing one sees each client at most once every
 * 2-3 s.
 */
export const WATCH_RETRY: BackoffPolicy = { baseMs: 1000, maxMs: 2000, jitter: 0.5 };

/** Delay before attempt `failures` (1 = first retry): base·2^(failures-1), capped at max, jittered. */
export function backoffDelay(
  failures: number,
  policy: BackoffPolicy,
  random: () => number = Math.random,
): number {
  if (failures <= 0) return 0;
  // 2^40 already exceeds any sane cap; avoid Infinity for absurd counts
  const d = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(failures - 1, 40));
  const jitter = Math.min(1, Math.max(0, policy.jitter ?? 0));
  return Math.round(d * (1 + jitter * random()));
}

/**
 * A backoff that doubles on every failure and resets on success, e.g. informer restarts:
 * `next()` returns the delay to wait now.
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
