import type { Answer } from 'dns-packet';
import { TtlCache } from './ttl-cache.ts';
import { type DnsServerAddress, queryServer, type WireResponse } from './wire.ts';

/**
 * Answers to sender authentication's lookups (TXT for SPF, DKIM keys and DMARC; A, AAAA, MX, PTR for
 * SPF mechanisms), asked on the wire and cached within their TTL: the same sender's records are
 * otherwise fetched again for every message (four or more queries each). Positive answers live for
 * the smallest TTL of their records, capped at maxTtlS; NXDOMAIN and NODATA for the SOA's negative
 * TTL (RFC 2308 §5: min(SOA TTL, SOA MINIMUM)), capped at negativeMaxTtlS, and not at all without an
 * SOA; failures (timeout, SERVFAIL, REFUSED) are never cached. Concurrent lookups of the same name
 * share one query. Answers have node:dns resolve()'s shapes and failures its error codes.
 */

export interface RecordCacheOptions {
  /** Default 10 000. */
  maxEntries?: number;
  /** Approximate bytes of the cached records. Default 4 MiB. */
  maxBytes?: number;
  /** Default 3600 s. */
  maxTtlS?: number;
  /** Default 900 s. */
  negativeMaxTtlS?: number;
}

export type CachedType = 'TXT' | 'A' | 'AAAA' | 'MX' | 'PTR' | 'CNAME' | 'NS';
export const CACHED_TYPES: ReadonlySet<string> = new Set<CachedType>([
  'TXT',
  'A',
  'AAAA',
  'MX',
  'PTR',
  'CNAME',
  'NS',
]);

type Records = unknown[];
type Cached = { records: Records } | { code: 'ENOTFOUND' | 'ENODATA' };

/** The outcome of a query, before caching: records, a negative answer with its TTL, or a failure. */
export type Outcome =
  | { records: Records; ttlS: number; bytes: number }
  | { code: 'ENOTFOUND' | 'ENODATA'; ttlS: number }
  | { code: string; failed: true };

const RCODE_ERRORS: Record<string, string> = {
  SERVFAIL: 'ESERVFAIL',
  REFUSED: 'EREFUSED',
  FORMERR: 'EFORMERR',
  NOTIMP: 'ENOTIMP',
};

/** One record's data as node:dns resolve() gives it (TXT chunks as latin1, as c-ares does). */
function nodeShape(a: Answer): unknown {
  switch (a.type) {
    case 'TXT':
      return (Array.isArray(a.data) ? a.data : [a.data]).map((c) =>
        typeof c === 'string' ? c : c.toString('latin1'),
      );
    case 'MX':
      return { exchange: a.data.exchange, priority: a.data.preference, type: 'MX' };
    case 'OPT':
      return undefined;
    default:
      return a.data;
  }
}

function negativeTtl(authorities: Answer[]): number {
  const soa = authorities.find((a) => a.type === 'SOA');
  if (soa?.type !== 'SOA') return 0; // RFC 2308 §5: without an SOA, not cached
  return Math.min(soa.ttl ?? 0, soa.data.minimum ?? 0);
}

/** What a response means for `type`; pure, so the classification is tested without a server. */
export function outcomeOf(r: WireResponse, type: CachedType): Outcome {
  if (r.rcode === 'NXDOMAIN') return { code: 'ENOTFOUND', ttlS: negativeTtl(r.authorities) };
  if (r.rcode !== 'NOERROR') return { code: RCODE_ERRORS[r.rcode] ?? 'ESERVFAIL', failed: true };
  const own = r.answers.filter((a) => a.type === type);
  if (!own.length) return { code: 'ENODATA', ttlS: negativeTtl(r.authorities) };
  // the answer's CNAMEs, if any, bound it too
  const ttlS = Math.min(...r.answers.filter((a) => a.type !== 'OPT').map((a) => a.ttl ?? 0));
  const records = own.map(nodeShape);
  return { records, ttlS, bytes: JSON.stringify(records).length };
}

function dnsError(code: string, type: string, name: string): NodeJS.ErrnoException {
  const syscall = `query${type.charAt(0)}${type.slice(1).toLowerCase()}`;
  // a cached "no such record" is thrown for every message that asks: without a stack (capturing
  // one cost more than the rest of the lookup, and it would only show this function)
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  const err = new Error(`${syscall} ${code} ${name}`);
  Error.stackTraceLimit = limit;
  return Object.assign(err, { code, syscall, hostname: name });
}

/** Fresh arrays for every caller: the cached ones are never handed out to be changed. */
const copy = (records: Records): Records =>
  records.map((r) => (Array.isArray(r) ? [...r] : r && typeof r === 'object' ? { ...r } : r));

export interface RecordResolverOptions {
  servers: DnsServerAddress[];
  timeoutMs: number;
  tries: number;
  cache: RecordCacheOptions;
  now: () => number;
  /** Every lookup sent to the servers (not cache hits), with its error code (undefined: records). */
  onQuery?: (code: string | undefined, type: string) => void;
}

/** Asks the servers in turn (round-robin, `tries` rounds) until one answers other than SERVFAIL/REFUSED. */
async function ask(opts: RecordResolverOptions, name: string, type: CachedType): Promise<Outcome> {
  let last: Outcome = { code: 'ETIMEOUT', failed: true };
  const attempts = Math.max(1, opts.tries) * opts.servers.length;
  for (let i = 0; i < attempts; i++) {
    try {
      last = outcomeOf(
        await queryServer(opts.servers[i % opts.servers.length], name, type, opts.timeoutMs),
        type,
      );
    } catch (err) {
      last = { code: (err as NodeJS.ErrnoException).code ?? 'ECONNREFUSED', failed: true };
    }
    if (!('failed' in last)) break;
  }
  // one count per lookup, whatever the tries it took (as c-ares's answers are counted)
  opts.onQuery?.('records' in last ? undefined : last.code, type);
  return last;
}

export interface RecordResolver {
  resolve(name: string, type: CachedType): Promise<Records>;
  readonly entries: number;
}

export function createRecordResolver(opts: RecordResolverOptions): RecordResolver {
  const c = opts.cache;
  const maxTtlS = c.maxTtlS ?? 3600;
  const negativeMaxTtlS = c.negativeMaxTtlS ?? 900;
  const cache = new TtlCache<Cached>({
    maxEntries: c.maxEntries ?? 10_000,
    maxBytes: c.maxBytes ?? 4 * 1024 * 1024,
    now: opts.now,
  });
  const inflight = new Map<string, Promise<Cached | Outcome>>();
  const lookup = (key: string, name: string, type: CachedType): Promise<Cached | Outcome> => {
    const hit = cache.get(key);
    if (hit) return Promise.resolve(hit);
    let pending = inflight.get(key);
    if (!pending) {
      pending = ask(opts, name, type).then((o) => {
        inflight.delete(key);
        if ('records' in o)
          cache.set(key, { records: o.records }, Math.min(o.ttlS, maxTtlS) * 1000, o.bytes + key.length);
        else if (!('failed' in o))
          cache.set(key, { code: o.code }, Math.min(o.ttlS, negativeMaxTtlS) * 1000, key.length);
        return o;
      });
      inflight.set(key, pending);
    }
    return pending;
  };
  return {
    get entries() {
      return cache.size;
    },
    async resolve(name, type) {
      const canonical = name.replace(/\.$/, '');
      const r = await lookup(`${type} ${canonical.toLowerCase()}`, canonical, type);
      if ('records' in r) return copy(r.records);
      throw dnsError(r.code, type, canonical);
    },
  };
}
