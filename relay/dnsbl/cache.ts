/**
 * Bounded cache of DNSBL answers, each kept for its DNS TTL clamped to [minTtl, maxTtl] (postscreen's
 * postscreen_dnsbl_min_ttl / _max_ttl: 60 s and 1 h). A "not listed" answer carries no TTL through
 * node:dns, so it is kept for minTtl. Past maxEntries the oldest entry goes (insertion order).
 */
export interface CachedAnswer {
  listed: string[];
  expiresAt: number;
}

export class AnswerCache {
  private readonly entries = new Map<string, CachedAnswer>();

  private readonly opts: { maxEntries: number; minTtlS: number; maxTtlS: number; now: () => number };

  constructor(opts: { maxEntries: number; minTtlS: number; maxTtlS: number; now: () => number }) {
    this.opts = opts;
  }

  get size(): number {
    return this.entries.size;
  }

  get(key: string): string[] | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expiresAt <= this.opts.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return e.listed;
  }

  set(key: string, listed: string[], ttlS: number | undefined): void {
    const ttl = Math.min(this.opts.maxTtlS, Math.max(this.opts.minTtlS, ttlS ?? 0));
    this.entries.delete(key);
    this.entries.set(key, { listed, expiresAt: this.opts.now() + ttl * 1000 });
    while (this.entries.size > this.opts.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }
}
