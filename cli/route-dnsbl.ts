import type { RelayConfig, TenantDnsbl } from '../contract/config/types.gen.ts';
import { createLogger } from '../platform/log.ts';
import { createDnsLookup } from '../relay/dns/resolver.ts';
import { DnsblChecker } from '../relay/dnsbl/check.ts';
import { tenantDnsblRefusal } from '../relay/dnsbl/rcpt.ts';
import type { EnvelopeExplanation, RecipientExplanation } from '../relay/routing/decide.ts';

/** What `mailplus route` says about a recipient's DNS blocklist checks (TenantPolicy spec.dnsbl). */
export interface DnsblExplanation {
  checks: TenantDnsbl;
  /** Only with --client-ip and --dns-server: what the lookup gave. */
  lookup?: { clientIp: string; verdict: 'pass' | 'reject' | 'tempfail'; reply?: string };
}

export type RouteRecipient = RecipientExplanation & { dnsbl?: DnsblExplanation };

/**
 * Adds each recipient's tenant DNSBL checks; with a client address and DNS servers, looks the client
 * up exactly as the relay does at RCPT (same checker, same replies) and turns a refusal into the
 * recipient's reply. Relay-wide blocklists are relay flags, not part of the config: not shown.
 */
export async function explainDnsbl(
  e: EnvelopeExplanation,
  config: RelayConfig,
  opts: { clientIp?: string; dnsServers: string[]; timeoutMs?: number },
): Promise<EnvelopeExplanation & { recipients: RouteRecipient[] }> {
  const byTenant = new Map(config.tenants.map((t) => [t.name, t.dnsbl]));
  const query = opts.clientIp !== undefined && opts.dnsServers.length > 0;
  const checker = query
    ? new DnsblChecker({
        lookup: createDnsLookup({ servers: opts.dnsServers, timeoutMs: opts.timeoutMs ?? 2000 }),
      })
    : undefined;
  const quiet = createLogger(() => {});
  const recipients: RouteRecipient[] = [];
  for (const r of e.recipients) {
    const checks = r.tenant ? byTenant.get(r.tenant) : undefined;
    if (!checks || r.action !== 'relay') {
      recipients.push(checks ? { ...r, dnsbl: { checks } } : r);
      continue;
    }
    if (!checker || opts.clientIp === undefined) {
      recipients.push({ ...r, dnsbl: { checks } });
      continue;
    }
    const refusal = await tenantDnsblRefusal(checker, r.tenant as string, checks, opts.clientIp, quiet);
    if (!refusal) {
      recipients.push({ ...r, dnsbl: { checks, lookup: { clientIp: opts.clientIp, verdict: 'pass' } } });
      continue;
    }
    const reply = `${refusal.code} ${refusal.enhanced} ${refusal.text}`;
    const verdict = refusal.code < 500 ? 'tempfail' : 'reject';
    recipients.push({
      ...r,
      action: 'reject',
      reply,
      reason: (verdict === 'reject' ? 'dnsbl_listed' : 'dnsbl_tempfail') as never,
      dnsbl: { checks, lookup: { clientIp: opts.clientIp, verdict, reply } },
    });
  }
  return { ...e, recipients };
}

/** Text lines under a recipient. */
export function formatDnsbl(d: DnsblExplanation, queried: boolean): string[] {
  const c = d.checks;
  const zones = c.zones
    .map((z) => `${z.zone} (weight ${z.weight}${z.match?.length ? `, codes ${z.match.join(' ')}` : ''})`)
    .join(', ');
  const lines = [
    `  dnsbl at RCPT: ${zones}; refuse at score ${c.threshold}` +
      `${c.allow.length ? `; allow ${c.allow.join(', ')}` : ''}; lookup failure: ${c.failClosed ? 'defer (451 4.7.1)' : 'accept'}`,
  ];
  if (d.lookup) {
    lines.push(
      d.lookup.verdict === 'pass'
        ? `  dnsbl for ${d.lookup.clientIp}: not refused`
        : `  dnsbl for ${d.lookup.clientIp}: ${d.lookup.reply}`,
    );
  } else if (!queried) {
    lines.push('  (not looked up: give --client-ip and --dns-server to query the zones)');
  }
  return lines;
}
