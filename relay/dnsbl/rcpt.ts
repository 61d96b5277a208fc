import type { TenantDnsbl } from '../../contract/config/types.gen.ts';
import type { Logger } from '../../platform/log.ts';
import type { DnsblChecker } from './check.ts';
import { DNSBL_REPLY, type DnsblPolicy } from './policy.ts';

export interface DnsblRefusal {
  code: number;
  enhanced: string;
  text: string;
}

const policies = new WeakMap<TenantDnsbl, DnsblPolicy>();

function policyOf(c: TenantDnsbl): DnsblPolicy {
  let p = policies.get(c);
  if (!p) {
    p = { zones: c.zones, threshold: c.threshold, allow: c.allow, failClosed: c.failClosed };
    policies.set(c, p);
  }
  return p;
}

/**
 * A tenant's DNSBL verdict at RCPT (TenantPolicy spec.dnsbl): `550 5.7.1 Service unavailable;
 * client [IP] blocked using ZONE` as postscreen's enforce action, `451 4.7.1` when a lookup failed
 * and the tenant chose to fail closed; undefined when the recipient may proceed.
 */
export async function tenantDnsblRefusal(
  checker: DnsblChecker,
  tenant: string,
  config: TenantDnsbl,
  ip: string | undefined,
  logger: Logger,
): Promise<DnsblRefusal | undefined> {
  if (!ip) return undefined;
  const v = await checker.check(ip, policyOf(config), 'tenant', tenant);
  const split = (text: string) => ({
    enhanced: text.slice(0, text.indexOf(' ')),
    text: text.slice(text.indexOf(' ') + 1),
  });
  if (v.verdict === 'reject') {
    logger.info('recipient refused: tenant DNS blocklist', {
      tenant,
      client: ip,
      zone: v.zone,
      score: v.score,
    });
    return { code: 550, ...split(DNSBL_REPLY.listed(ip, v.zone)) };
  }
  if (v.verdict === 'tempfail') {
    logger.warn('recipient deferred: tenant DNS blocklist lookup failed', {
      tenant,
      client: ip,
      failed: v.failed,
    });
    return { code: 451, ...split(DNSBL_REPLY.tempfail(ip)) };
  }
  if (v.verdict === 'failed_open') {
    logger.warn('tenant DNS blocklist lookup failed, recipient let through (fail open)', {
      tenant,
      client: ip,
      failed: v.failed,
    });
  }
  return undefined;
}
