import { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import {
  CACHED_TYPES,
  type CachedType,
  createRecordResolver,
  type RecordCacheOptions,
} from './record-cache.ts';
import { serverAddress } from './wire.ts';

/**
 * Every DNS lookup the relay makes goes through one DnsLookup: the servers from --dns-server
 * (default: the system resolver's, /etc/resolv.conf), a per-try timeout and a bounded number of
 * tries (c-ares retries a timed-out query up to `tries` times, round-robin over the servers). Answers
 * are classified into a fixed set of results, so callers decide on failure without parsing errors
 * and the result doubles as a metric label.
 */
export interface DnsOptions {
  /** 'IP', 'IP:PORT' or '[IPv6]:PORT'; empty or unset: the system resolver's servers. */
  servers?: string[];
  /** Per-try timeout. Default 2000 ms. */
  timeoutMs?: number;
  /** Tries per query (the first one included). Default 2. */
  tries?: number;
  /**
   * resolve()'s answers (sender authentication's records) are cached within their TTL (see
   * record-cache.ts); false asks every time. resolve4 (DNSBL) has its own cache in relay/dnsbl.
   */
  cache?: RecordCacheOptions | false;
  /** Clock of the cache, milliseconds. Default Date.now. */
  now?: () => number;
}

export type DnsFailure = 'timeout' | 'servfail' | 'refused' | 'error';
export type DnsResult = 'ok' | 'nxdomain' | 'nodata' | DnsFailure;

export type ALookup =
  | { result: 'ok'; addresses: string[]; ttl: number }
  | { result: 'nxdomain' | 'nodata' }
  | { result: DnsFailure; detail: string };

export interface DnsLookup {
  /** A records of `name` with the smallest TTL among them. */
  resolve4(name: string): Promise<ALookup>;
  /**
   * Any record type, answered as node:dns resolve() answers (TXT: string[][]) and failing with its
   * error codes (ENOTFOUND, ENODATA, ETIMEOUT, ESERVFAIL…): the form mailauth's custom resolver
   * takes, so sender authentication asks the same servers with the same timeouts and tries.
   * TXT, A, AAAA, MX, PTR, CNAME and NS answers come from the cache while their TTL lasts.
   */
  resolve(name: string, rrtype: string): Promise<unknown>;
  readonly servers: string[];
}

/** Validates one --dns-server value; returns the form node:dns setServers takes, or throws why not. */
export function parseDnsServer(value: string): string {
  const v = value.trim();
  const bracketed = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(v);
  let host: string;
  let port: string | undefined;
  if (bracketed) {
    host = bracketed[1];
    port = bracketed[2];
  } else if (isIP(v) === 6) {
    host = v;
  } else {
    const i = v.lastIndexOf(':');
    host = i < 0 ? v : v.slice(0, i);
    port = i < 0 ? undefined : v.slice(i + 1);
  }
  if (!isIP(host)) {
    throw new Error(
      `"${value}" is not a DNS server address; use an IP with an optional port, e.g. 10.0.0.10:53 or [fd00::a]:53`,
    );
  }
  if (port !== undefined && (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535)) {
    throw new Error(`"${value}": port must be 1-65535`);
  }
  const p = port ?? '53';
  return isIP(host) === 6 ? `[${host}]:${p}` : `${host}:${p}`;
}

function classify(code: string | undefined): Exclude<DnsResult, 'ok'> {
  switch (code) {
    case 'ENOTFOUND':
      return 'nxdomain';
    case 'ENODATA':
      return 'nodata';
    case 'ETIMEOUT':
      return 'timeout';
    case 'ESERVFAIL':
      return 'servfail';
    case 'EREFUSED':
      return 'refused';
    default:
      return 'error';
  }
}

export function createDnsLookup(
  opts: DnsOptions = {},
  onResult?: (result: DnsResult, type: string) => void,
): DnsLookup {
  const timeoutMs = opts.timeoutMs ?? 2000;
  const tries = opts.tries ?? 2;
  const resolver = new Resolver({ timeout: timeoutMs, tries });
  const servers = (opts.servers ?? []).map(parseDnsServer);
  if (servers.length) resolver.setServers(servers);
  const records =
    opts.cache === false
      ? undefined
      : createRecordResolver({
          servers: resolver.getServers().map(serverAddress),
          timeoutMs,
          tries,
          cache: opts.cache ?? {},
          now: opts.now ?? Date.now,
          onQuery: (code, type) => onResult?.(code ? classify(code) : 'ok', type),
        });
  return {
    servers: resolver.getServers(),
    async resolve4(name) {
      let out: ALookup;
      try {
        const answers = await resolver.resolve4(name, { ttl: true });
        out = {
          result: 'ok',
          addresses: answers.map((a) => a.address),
          ttl: Math.min(...answers.map((a) => a.ttl)),
        };
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        const result = classify(e.code);
        out =
          result === 'nxdomain' || result === 'nodata'
            ? { result }
            : { result, detail: `${e.code ?? 'error'} looking up ${name}` };
      }
      onResult?.(out.result, 'A');
      return out;
    },
    async resolve(name, rrtype) {
      const type = rrtype.toUpperCase();
      if (records && CACHED_TYPES.has(type)) return records.resolve(name, type as CachedType);
      try {
        const answer = await resolver.resolve(name, type);
        onResult?.('ok', type);
        return answer;
      } catch (err) {
        onResult?.(classify((err as NodeJS.ErrnoException).code), type);
        throw err;
      }
    },
  };
}
