import { isIP } from 'node:net';
import {
  dnsblZoneError,
  matchPatternError,
  patternOctets,
  splitOutsideBrackets,
} from '../../contract/grammar/dnsbl.ts';

/**
 * DNS blocklist policy, postscreen-style (Postfix postscreen_dnsbl_sites / _threshold /
 * _whitelist_threshold): every zone that lists the client adds its weight (negative weights are
 * allow-lists, like postscreen's DNSWL entries), and the client is refused when the sum reaches the
 * threshold. Pure: the lookups happen in check.ts.
 */
export interface DnsblZone {
  /** e.g. zen.spamhaus.org */
  zone: string;
  /** Default 1; negative for an allow-list (DNSWL) zone. */
  weight: number;
  /**
   * Return codes that count (postscreen's "=filter"): '127.0.0.2', '127.0.0.[2..11]',
   * '127.0.[0..255].[4;5;6]'; none: any 127.0.0.0/8 answer counts.
   */
  match?: string[];
}

export interface DnsblPolicy {
  zones: DnsblZone[];
  /** Default 1. */
  threshold: number;
  /** Clients never checked (CIDRs). */
  allow: string[];
  /** A lookup that failed (timeout, SERVFAIL) defers the client instead of letting it through. */
  failClosed: boolean;
}

export type ZoneAnswer = { listed: string[] } | { error: string };

export type DnsblVerdict =
  | { verdict: 'pass'; score: number; listedBy: string[] }
  | { verdict: 'reject'; score: number; listedBy: string[]; zone: string }
  | { verdict: 'allowlisted' }
  /** Lookups failed for zones that could have reached the threshold; failClosed decides. */
  | { verdict: 'tempfail' | 'failed_open'; score: number; listedBy: string[]; failed: string[] };

/** The name to query: reversed octets for IPv4, reversed nibbles for IPv6 (RFC 5782 §2.1, §2.4). */
export function dnsblQueryName(ip: string, zone: string): string {
  const v4 = v4Of(ip);
  if (v4) return `${v4.split('.').reverse().join('.')}.${zone}`;
  return `${expandV6(ip).split('').reverse().join('.')}.${zone}`;
}

/** IPv4-mapped IPv6 (::ffff:1.2.3.4, how a dual-stack listener reports IPv4 clients) counts as IPv4. */
function v4Of(ip: string): string | undefined {
  if (isIP(ip) === 4) return ip;
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m ? m[1] : undefined;
}

/** 32 hex digits, no separators. */
function expandV6(ip: string): string {
  if (isIP(ip) !== 6) throw new Error(`not an IP address: ${ip}`);
  let s = ip.toLowerCase();
  const tail4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (tail4) {
    const o = tail4[1].split('.').map(Number);
    s = `${s.slice(0, -tail4[1].length)}${((o[0] << 8) | o[1]).toString(16)}:${((o[2] << 8) | o[3]).toString(16)}`;
  }
  const [head, tail] = s.split('::');
  const h = head ? head.split(':') : [];
  const t = tail === undefined ? [] : tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  return groups.map((g) => g.padStart(4, '0')).join('');
}

/** The client address as shown in replies ([1.2.3.4], IPv4-mapped shown as IPv4). */
export function displayIp(ip: string): string {
  return v4Of(ip) ?? ip;
}

function octetMatches(pattern: string, value: number): boolean {
  if (/^\d+$/.test(pattern)) return Number(pattern) === value;
  const range = /^\[(\d+)\.\.(\d+)\]$/.exec(pattern);
  if (range) return value >= Number(range[1]) && value <= Number(range[2]);
  return pattern
    .slice(1, -1)
    .split(';')
    .some((n) => Number(n) === value);
}

/** Whether a returned address counts for a zone: its match patterns, else any 127.0.0.0/8 answer. */
export function codeMatches(code: string, match: string[] | undefined): boolean {
  const o = code.split('.').map(Number);
  if (o.length !== 4) return false;
  if (!match || match.length === 0) return o[0] === 127;
  return match.some((p) => patternOctets(p).every((part, i) => octetMatches(part, o[i])));
}

/** Sums the weights of the zones whose answer matches and decides (postscreen semantics). */
export function decideDnsbl(policy: DnsblPolicy, answers: Map<string, ZoneAnswer>): DnsblVerdict {
  let score = 0;
  let headroom = 0;
  const listedBy: string[] = [];
  const failed: string[] = [];
  let top: DnsblZone | undefined;
  for (const z of policy.zones) {
    const a = answers.get(z.zone);
    if (!a) continue;
    if ('error' in a) {
      failed.push(z.zone);
      if (z.weight > 0) headroom += z.weight;
      continue;
    }
    if (!a.listed.some((code) => codeMatches(code, z.match))) continue;
    score += z.weight;
    listedBy.push(z.zone);
    if (z.weight > 0 && (!top || z.weight > top.weight)) top = z;
  }
  if (score >= policy.threshold && top) return { verdict: 'reject', score, listedBy, zone: top.zone };
  if (failed.length && score + headroom >= policy.threshold) {
    return { verdict: policy.failClosed ? 'tempfail' : 'failed_open', score, listedBy, failed };
  }
  return { verdict: 'pass', score, listedBy };
}

/** Postscreen's site syntax for the CLI: zone[=pattern[,pattern…]][*weight], e.g. zen.example=127.0.0.[2..11]*3. */
export function parseDnsblSite(spec: string): DnsblZone {
  const m = /^([A-Za-z0-9._-]+)(?:=([0-9.;[\],]+))?(?:\*(-?\d+))?$/.exec(spec.trim());
  if (!m) {
    throw new Error(`"${spec}" is not a DNSBL site; use zone[=127.0.0.2][*weight], e.g. zen.example*2`);
  }
  const zoneError = dnsblZoneError(m[1]);
  if (zoneError) throw new Error(zoneError);
  const match = m[2] ? splitOutsideBrackets(m[2], ',').filter(Boolean) : undefined;
  for (const p of match ?? []) {
    const err = matchPatternError(p);
    if (err) throw new Error(`${spec}: ${err}`);
  }
  return {
    zone: m[1].toLowerCase(),
    weight: m[3] === undefined ? 1 : Number(m[3]),
    ...(match ? { match } : {}),
  };
}

/** Reply texts; 554 at connect (RFC 5321 §3.1 allows only 220 or 554 there), 550 at RCPT as postscreen. */
export const DNSBL_REPLY = {
  listed: (ip: string, zone: string) =>
    `5.7.1 Service unavailable; client [${displayIp(ip)}] blocked using ${zone}`,
  tempfail: (ip: string) =>
    `4.7.1 Service unavailable; client [${displayIp(ip)}] DNS blocklist lookup failed, try again later`,
};
