// A tenant's section of the relay config: its owned domains, its routes in order, and its
// settings in the relay's form (client networks, TLS, limits, privacy, blocklists, sender
// authentication, a consented capture). Settings come from the valid spec, else from the last
// valid generation in force; a policy that only reserves its domains has no routes, so none apply.
import type { Capture, Limits, Route, Tenant, TenantDnsbl } from '../../contract/config/types.gen.ts';
import { parseCidr } from '../../contract/grammar/cidr.ts';
import { parseRetention } from '../../contract/grammar/retention.ts';
import type { TenantPolicy } from '../api/types.gen.ts';
import { parseByteQuantity, parseDurationSeconds } from '../resources/units.ts';
import { compileAuthentication } from './authentication.ts';
import type { PolicyEntry } from './compile-state.ts';

export function tenantSection(p: PolicyEntry, routes: Route[], capture: Capture | undefined): Tenant {
  const tenant: Tenant = {
    name: p.meta.namespace,
    policy: `${p.meta.namespace}/${p.meta.name}`,
    domains: [...p.owned].sort(),
    ...tenantSettings(p),
    routes,
  };
  const privacy = p.spec?.privacy;
  if (privacy !== undefined) {
    const r = privacy.retention === undefined ? undefined : parseRetention(privacy.retention);
    tenant.privacy = {
      ...(r?.ok ? { retentionSeconds: r.seconds } : {}),
      ...(privacy.pseudonymize !== undefined ? { pseudonymize: privacy.pseudonymize } : {}),
    };
  }
  if (capture) tenant.capture = capture;
  return tenant;
}

function tenantSettings(
  p: PolicyEntry,
): Pick<Tenant, 'clientCIDRs' | 'requireTLS' | 'limits' | 'privacy' | 'dnsbl' | 'authentication'> {
  if (!p.spec) {
    const prev = p.invalid?.inForce?.tenant;
    if (!prev) return { clientCIDRs: [], requireTLS: false, limits: {} };
    const { clientCIDRs, requireTLS, limits, privacy, dnsbl, authentication } = prev;
    return {
      clientCIDRs,
      requireTLS,
      limits,
      ...(privacy ? { privacy } : {}),
      ...(dnsbl ? { dnsbl } : {}),
      ...(authentication ? { authentication } : {}),
    };
  }
  const dnsbl = compileDnsbl(p.spec.dnsbl);
  const authentication = compileAuthentication(p.spec.authentication);
  return {
    clientCIDRs: normalizedCidrs(p.spec.clientCIDRs ?? []),
    // the CRD defaults it (false); ajv applied the default to every valid spec
    requireTLS: p.spec.requireTLS as boolean,
    limits: compileLimits(p.spec),
    ...(dnsbl ? { dnsbl } : {}),
    ...(authentication ? { authentication } : {}),
  };
}

/** Validated CIDRs in their canonical text, sorted and deduplicated. */
function normalizedCidrs(cidrs: string[]): string[] {
  const texts = cidrs.map((c) => (parseCidr(c) as { ok: true; value: { text: string } }).value.text);
  return [...new Set(texts)].sort();
}

function compileLimits(spec: TenantPolicy['spec']): Limits {
  const limits: Limits = {};
  const l = spec.limits;
  if (!l) return limits;
  if (l.maxMessageSize !== undefined) {
    const r = parseByteQuantity(l.maxMessageSize);
    if (r.ok) limits.maxMessageSize = r.value;
  }
  if (l.maxRecipients !== undefined) limits.maxRecipients = l.maxRecipients;
  if (l.rate) {
    const per = parseDurationSeconds(l.rate.per);
    if (per.ok) limits.rate = { messages: l.rate.messages, perSeconds: per.value };
  }
  return limits;
}

/**
 * spec.dnsbl (validated, CRD defaults applied: weight, threshold) in the relay's form, names and
 * CIDRs normalised.
 */
function compileDnsbl(d: NonNullable<TenantPolicy['spec']['dnsbl']> | undefined): TenantDnsbl | undefined {
  if (!d) return undefined;
  return {
    zones: d.zones.map((z) => ({
      zone: z.zone.toLowerCase().replace(/\.$/, ''),
      weight: z.weight as number,
      ...(z.match?.length ? { match: z.match } : {}),
    })),
    threshold: d.threshold as number,
    allow: normalizedCidrs(d.allow ?? []),
    failClosed: d.onLookupFailure === 'Defer',
  };
}
