/**
 * The relay's one time-bounded cache of DNS answers (DNSBL verdicts, sender-authentication
 * records): each entry lives for the time its caller gives (the answer's TTL, clamped by the
 * caller), and the cache is bounded in entries and, optionally, in bytes. Past a bound the oldest
 * entries go (insertion order; a refreshed entry counts as new), so memory stays bounded whatever
 * names a sender makes the relay look up. Expired entries are dropped when met.
 */
export interface TtlCacheOptions {
  maxEntries: number;
  /** Sum of the sizes given to set(); unbounded when unset. */
  maxBytes?: number;
  /** Milliseconds (Date.now or a test clock). */
  now: () => number;
}

interface Entry<V> {
  value: V;
  expiresAt: number;
  size: number;
}

export class TtlCache<V> {
  private readonly entries = new Map<string, Entry<V>>();
  private readonly opts: TtlCacheOptions;
  private bytes = 0;

  constructor(opts: TtlCacheOptions) {
    this.opts = opts;
  }

  get size(): number {
    return this.entries.size;
  }

  get byteSize(): number {
    return this.bytes;
  }

  get(key: string): V | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expiresAt <= this.opts.now()) {
      this.remove(key, e);
      return undefined;
    }
    return e.value;
  }

  /** Keeps `value` for ttlMs (nothing is kept for 0 or less); `size` counts towards maxBytes. */
  set(key: string, value: V, ttlMs: number, size = 0): void {
    const old = this.entries.get(key);
    if (old) this.remove(key, old);
    if (ttlMs <= 0) return;
    const maxBytes = this.opts.maxBytes ?? Number.POSITIVE_INFINITY;
    if (size > maxBytes) return;
    this.entries.set(key, { value, expiresAt: this.opts.now() + ttlMs, size });
    this.bytes += size;
    while (this.entries.size > this.opts.maxEntries || this.bytes > maxBytes) {
      const [oldestKey, oldest] = this.entries.entries().next().value as [string, Entry<V>];
      this.remove(oldestKey, oldest);
    }
  }

  private remove(key: string, e: Entry<V>): void {
    this.entries.delete(key);
    this.bytes -= e.size;
  }
}
