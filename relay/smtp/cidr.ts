import { cidrContains, parseCidr, parseIp } from '../../contract/grammar/cidr.ts';

/**
 * A matcher over a CIDR list (trusted proxies); a bare address is a host route, an unparseable
 * client address never matches. Throws naming the bad entry, so a typo fails at start-up.
 */
export function cidrMatcher(list: readonly string[]): (ip: string | undefined) => boolean {
  const cidrs = list.map((entry) => {
    const text = entry.includes('/') ? entry : `${entry}/${entry.includes(':') ? 128 : 32}`;
    const r = parseCidr(text);
    if (!r.ok) throw new Error(r.error.replace(`"${text}"`, `"${entry}"`));
    return r.value;
  });
  return (ip) => {
    if (!ip) return false;
    const zone = ip.indexOf('%');
    const parsed = parseIp(zone >= 0 ? ip.slice(0, zone) : ip);
    return parsed ? cidrs.some((c) => cidrContains(c, parsed)) : false;
  };
}
