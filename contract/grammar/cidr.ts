// IPv4/IPv6 addresses and CIDRs as bigints. IPv4-mapped IPv6 addresses (::ffff:1.2.3.4) are
// treated as the IPv4 address they carry, so they match IPv4 CIDRs.
import type { ParseResult } from './match.ts';

export interface Ip {
  version: 4 | 6;
  value: bigint;
}

export interface Cidr {
  version: 4 | 6;
  /** Network address (host bits cleared). */
  network: bigint;
  prefix: number;
  /** Canonical text, e.g. '10.0.0.0/8', '2001:db8::/32' as given but lower-case. */
  text: string;
}

function parseIPv4(text: string): bigint | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0n;
  for (const part of parts) {
    if (!/^[0-9]{1,3}$/.test(part)) return undefined;
    if (part.length > 1 && part.startsWith('0')) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    value = (value << 8n) | BigInt(n);
  }
  return value;
}

function parseIPv6(input: string): bigint | undefined {
  let text = input;
  const zone = text.indexOf('%');
  if (zone >= 0) text = text.slice(0, zone);
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    // Embedded IPv4 tail ('::ffff:1.2.3.4'): rewrite as two hex groups.
    const v4 = parseIPv4(text.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    text = `${text.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const parseGroups = (s: string): number[] | undefined => {
    if (s === '') return [];
    const groups: number[] = [];
    for (const g of s.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      groups.push(Number.parseInt(g, 16));
    }
    return groups;
  };
  const head = parseGroups(halves[0]);
  if (head === undefined) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const rest = parseGroups(halves[1]);
    if (rest === undefined) return undefined;
    const missing = 8 - head.length - rest.length;
    if (missing < 1) return undefined;
    groups = [...head, ...new Array<number>(missing).fill(0), ...rest];
  } else {
    groups = head;
  }
  if (groups.length !== 8) return undefined;
  let value = 0n;
  for (const g of groups) value = (value << 16n) | BigInt(g);
  return value;
}

const MAPPED_PREFIX = 0xffffn << 32n;

/** Parses an IP address; IPv4-mapped IPv6 addresses come back as IPv4. */
export function parseIp(text: string): Ip | undefined {
  const t = text.trim();
  const v4 = parseIPv4(t);
  if (v4 !== undefined) return { version: 4, value: v4 };
  if (!t.includes(':')) return undefined;
  const v6 = parseIPv6(t);
  if (v6 === undefined) return undefined;
  if (v6 >> 32n === 0xffffn) return { version: 4, value: v6 & 0xffffffffn };
  return { version: 6, value: v6 };
}

export function parseCidr(input: string): ParseResult<Cidr> {
  const text = input.trim();
  const slash = text.indexOf('/');
  if (slash < 0)
    return { ok: false, error: `invalid CIDR "${input}": expected address/prefix, e.g. 10.0.0.0/8` };
  const addrText = text.slice(0, slash);
  const prefixText = text.slice(slash + 1);
  if (!/^[0-9]{1,3}$/.test(prefixText))
    return { ok: false, error: `invalid CIDR "${input}": bad prefix length` };
  const prefix = Number(prefixText);
  const v4 = parseIPv4(addrText);
  const v6 = v4 === undefined && addrText.includes(':') ? parseIPv6(addrText) : undefined;
  if (v4 === undefined && v6 === undefined) {
    return { ok: false, error: `invalid CIDR "${input}": "${addrText}" is not an IPv4 or IPv6 address` };
  }
  const version = v4 !== undefined ? 4 : 6;
  const bits = version === 4 ? 32 : 128;
  if (prefix > bits) return { ok: false, error: `invalid CIDR "${input}": prefix longer than ${bits}` };
  const value = (v4 ?? v6) as bigint;
  const hostBits = BigInt(bits - prefix);
  const network = (value >> hostBits) << hostBits;
  return { ok: true, value: { version, network, prefix, text: text.toLowerCase() } };
}

export function cidrContains(cidr: Cidr, ip: Ip): boolean {
  if (cidr.version === 6 && ip.version === 4) {
    // An IPv6 CIDR covering ::ffff:0:0/96 matches IPv4 clients too.
    return cidrContains(cidr, { version: 6, value: MAPPED_PREFIX | ip.value });
  }
  if (cidr.version !== ip.version) return false;
  const hostBits = BigInt((cidr.version === 4 ? 32 : 128) - cidr.prefix);
  return ip.value >> hostBits === cidr.network >> hostBits;
}
