import type { RelayConfig, TenantAuthentication } from '../contract/config/types.gen.ts';
import { checkSpf } from '../relay/auth/verify.ts';
import { createDnsLookup } from '../relay/dns/resolver.ts';

/** What `mailplus route` says about a recipient's sender authentication (TenantPolicy spec.authentication). */
export interface AuthenticationExplanation {
  checks: TenantAuthentication;
  /** Only with --client-ip and --dns-server: the SPF result the relay would get for this envelope. */
  spf?: { clientIp: string; result: string; info: string };
}

/**
 * Adds each relayed recipient's sender-authentication checks; with a client address and DNS servers,
 * evaluates SPF for the envelope as the relay does after RCPT (same code, same resolver options).
 * DKIM, ARC and DMARC need the message and are only listed.
 */
export async function explainAuthentication<R extends { tenant?: string; action: string }>(
  recipients: R[],
  config: RelayConfig,
  opts: { clientIp?: string; from: string; dnsServers: string[]; timeoutMs?: number; hostname?: string },
): Promise<Array<R & { authentication?: AuthenticationExplanation }>> {
  const byTenant = new Map(config.tenants.map((t) => [t.name, t.authentication]));
  const lookup =
    opts.clientIp !== undefined && opts.dnsServers.length > 0
      ? createDnsLookup({ servers: opts.dnsServers, timeoutMs: opts.timeoutMs ?? 2000 })
      : undefined;
  const spfFor = new Map<string, Promise<AuthenticationExplanation['spf']>>();
  const out: Array<R & { authentication?: AuthenticationExplanation }> = [];
  for (const r of recipients) {
    const checks = r.tenant ? byTenant.get(r.tenant) : undefined;
    if (!checks || r.action !== 'relay') {
      out.push(r);
      continue;
    }
    let spf: AuthenticationExplanation['spf'];
    if (lookup && opts.clientIp !== undefined) {
      const ip = opts.clientIp;
      const id = checks.authservId ?? opts.hostname ?? 'mailplus';
      if (!spfFor.has(id)) {
        spfFor.set(
          id,
          checkSpf({ ip, sender: opts.from }, (n, t) => lookup.resolve(n, t), id).then((v) => ({
            clientIp: ip,
            result: v.result,
            info: v.info,
          })),
        );
      }
      spf = await spfFor.get(id);
    }
    out.push({ ...r, authentication: { checks, ...(spf ? { spf } : {}) } });
  }
  return out;
}

/** Text lines under a recipient. */
export function formatAuthentication(a: AuthenticationExplanation, queried: boolean): string[] {
  const c = a.checks;
  const refuses = c.rejectQuarantine ? 'p=reject and p=quarantine' : 'p=reject';
  const lines = [
    `  authentication: ${c.mode}, authserv-id ${c.authservId ?? "the relay's host name"}: ` +
      'SPF after RCPT, DKIM, ARC and DMARC at the end of DATA; ' +
      `Authentication-Results with every result up to ${c.holdBytes} bytes, SPF only above`,
  ];
  if (c.mode === 'enforce') {
    lines.push(
      `  enforce: DMARC failures under ${refuses} refused (550 5.7.1); ` +
        `DNS lookup failure: ${c.deferOnLookupFailure ? 'defer (451 4.7.5)' : 'accept'}`,
    );
  }
  if (a.spf) lines.push(`  ${a.spf.info}`);
  else if (!queried && a.checks) lines.push('  (SPF not evaluated: give --client-ip and --dns-server)');
  return lines;
}
