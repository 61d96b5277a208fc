import type { DnsLookup } from '../dns/resolver.ts';
import { cidrMatcher } from '../smtp/cidr.ts';
import { AnswerCache } from './cache.ts';
import {
  type DnsblPolicy,
  type DnsblVerdict,
  decideDnsbl,
  dnsblQueryName,
  type ZoneAnswer,
} from './policy.ts';

export type DnsblScope = 'relay' | 'tenant';

export interface DnsblMetrics {
  verdict(scope: DnsblScope, tenant: string, verdict: DnsblVerdict['verdict']): void;
  /** result: listed | not_listed | error; source: dns | cache. */
  lookup(zone: string, result: 'listed' | 'not_listed' | 'error', source: 'dns' | 'cache'): void;
  cacheEntries(n: number): void;
}

export interface DnsblCheckerOptions {
  lookup: DnsLookup;
  metrics?: DnsblMetrics;
  now?: () => number;
  /** Default 100 000 answers (about 10 MB). */
  cacheEntries?: number;
  minTtlS?: number;
  maxTtlS?: number;
}

/**
 * Looks a client up in a policy's zones (in parallel, through the answer cache, one query in flight
 * per name however many sessions ask) and decides. Shared by the connect-time gate (relay-wide
 * policy) and RCPT (tenant policies), so both see the same cache.
 */
export class DnsblChecker {
  private readonly cache: AnswerCache;
  private readonly inflight = new Map<string, Promise<ZoneAnswer>>();
  private readonly allowMatchers = new WeakMap<DnsblPolicy, (ip: string | undefined) => boolean>();

  private readonly opts: DnsblCheckerOptions;

  constructor(opts: DnsblCheckerOptions) {
    this.opts = opts;
    this.cache = new AnswerCache({
      maxEntries: opts.cacheEntries ?? 100_000,
      minTtlS: opts.minTtlS ?? 60,
      maxTtlS: opts.maxTtlS ?? 3600,
      now: opts.now ?? Date.now,
    });
  }

  async check(ip: string, policy: DnsblPolicy, scope: DnsblScope, tenant = ''): Promise<DnsblVerdict> {
    const out = await this.evaluate(ip, policy);
    this.opts.metrics?.verdict(scope, tenant, out.verdict);
    return out;
  }

  private async evaluate(ip: string, policy: DnsblPolicy): Promise<DnsblVerdict> {
    let allowed = this.allowMatchers.get(policy);
    if (!allowed) {
      allowed = cidrMatcher(policy.allow);
      this.allowMatchers.set(policy, allowed);
    }
    if (allowed(ip)) return { verdict: 'allowlisted' };
    const answers = new Map<string, ZoneAnswer>();
    await Promise.all(
      policy.zones.map(async (z) => {
        answers.set(z.zone, await this.answer(dnsblQueryName(ip, z.zone), z.zone));
      }),
    );
    return decideDnsbl(policy, answers);
  }

  private answer(name: string, zone: string): Promise<ZoneAnswer> {
    const cached = this.cache.get(name);
    if (cached) {
      this.opts.metrics?.lookup(zone, cached.length ? 'listed' : 'not_listed', 'cache');
      return Promise.resolve({ listed: cached });
    }
    const pending = this.inflight.get(name);
    if (pending) return pending;
    const p = this.opts.lookup.resolve4(name).then((r): ZoneAnswer => {
      this.inflight.delete(name);
      if (r.result === 'ok' || r.result === 'nxdomain' || r.result === 'nodata') {
        const listed = r.result === 'ok' ? r.addresses : [];
        this.cache.set(name, listed, r.result === 'ok' ? r.ttl : undefined);
        this.opts.metrics?.cacheEntries(this.cache.size);
        this.opts.metrics?.lookup(zone, listed.length ? 'listed' : 'not_listed', 'dns');
        return { listed };
      }
      // failures are not cached: the next client asks again
      this.opts.metrics?.lookup(zone, 'error', 'dns');
      return { error: 'detail' in r ? r.detail : r.result };
    });
    this.inflight.set(name, p);
    return p;
  }
}
