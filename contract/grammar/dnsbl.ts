// The DNS blocklist fields of a TenantPolicy (spec.dnsbl zones and their return-code patterns, also
// the relay's --dnsbl-site): the grammar the operator validates with and the relay matches with
// (relay/dnsbl/policy.ts).

const OCTET = /^(\d{1,3}|\[\d{1,3}\.\.\d{1,3}\]|\[\d{1,3}(;\d{1,3})*\])$/;

/** Splits on '.' outside [..] ranges. */
export function patternOctets(pattern: string): string[] {
  return splitOutsideBrackets(pattern, '.');
}

/** Why a match pattern is invalid, or undefined when it is valid. */
export function matchPatternError(pattern: string): string | undefined {
  const octets = patternOctets(pattern);
  if (octets.length !== 4 || !octets.every((o) => OCTET.test(o))) {
    return `"${pattern}" is not a return-code pattern; use e.g. 127.0.0.2, 127.0.0.[2..11] or 127.0.0.[2;4]`;
  }
  for (const n of pattern.match(/\d+/g) ?? [])
    if (Number(n) > 255) return `"${pattern}": ${n} is not an octet`;
  return undefined;
}

/** Splits on `sep` outside [..] ranges. */
export function splitOutsideBrackets(s: string, sep: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '[') depth++;
    if (ch === ']') depth--;
    if (ch === sep && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

export function dnsblZoneError(zone: string): string | undefined {
  const name = zone.endsWith('.') ? zone.slice(0, -1) : zone;
  if (name.length > 200 || !/^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]*[a-z0-9])?$/i.test(name)) {
    return `"${zone}" is not a DNS zone name; use e.g. zen.spamhaus.org`;
  }
  return undefined;
}
