import { TtlCache } from '../dns/ttl-cache.ts';

/**
 * Bounded cache of DNSBL answers, each kept for its DNS TTL clamped to [minTtl, maxTtl] (postscreen's
 * postscreen_dnsbl_min_ttl / _max_ttl: 60 s and 1 h). A "not listed" answer carries no TTL through
 * node:dns, so it is kept for minTtl. Past maxEntries the oldest entry goes (insertion order).
 */
export class AnswerCache {
  private readonly cache: TtlCache<string[]>;
  private readonly opts: { minTtlS: number; maxTtlS: number };

  constructor(opts: { maxEntries: number; minTtlS: number; maxTtlS: number; now: () => number }) {
    this.opts = opts;
    this.cache = new TtlCache({ maxEntries: opts.maxEntries, now: opts.now });
  }

  get size(): number {
    return this.cache.size;
  }

  get(key: string): string[] | undefined {
    return this.cache.get(key);
  }

  set(key: string, listed: string[], ttlS: number | undefined): void {
    const ttl = Math.min(this.opts.maxTtlS, Math.max(this.opts.minTtlS, ttlS ?? 0));
    this.cache.set(key, listed, ttl * 1000);
  }
}
