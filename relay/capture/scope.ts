// Should this message be captured? Pure. A message is captured for a tenant only when the tenant
// has a consented capture (compiled from TenantPolicy.spec.troubleshooting), the consent has not
// expired at this instant, and EVERY accepted recipient of the transaction belongs to that tenant
// and matches the consent's scope: a message that also goes to anyone outside the scope (another
// mailbox, another tenant) is never captured, because they did not consent.
import type { Capture, Tenant } from '../../contract/config/types.gen.ts';
import { matchesPattern, parseAddress, parsePattern } from '../../contract/grammar/match.ts';

export type CaptureVerdict =
  | { capture: true; tenant: string; consent: Capture }
  | { capture: false; reason: 'no_consent' | 'expired' | 'out_of_scope' | 'no_recipients' };

export function consentActive(c: Capture, nowMs: number): boolean {
  const exp = Date.parse(c.expiresAt);
  return Number.isFinite(exp) && nowMs < exp;
}

export function inScope(scope: string[], address: string): boolean {
  const a = parseAddress(address);
  for (const s of scope) {
    const p = parsePattern(s);
    if (p.ok && matchesPattern(p.value, a)) return true;
  }
  return false;
}

export function captureVerdict(
  tenants: Map<string, Tenant>,
  accepted: Array<{ address: string; tenant: string }>,
  nowMs: number,
): CaptureVerdict {
  if (accepted.length === 0) return { capture: false, reason: 'no_recipients' };
  const names = new Set(accepted.map((r) => r.tenant));
  const consents = [...names].map((n) => tenants.get(n)?.capture).filter((c) => c !== undefined);
  if (consents.length === 0) return { capture: false, reason: 'no_consent' };
  if (names.size > 1) return { capture: false, reason: 'out_of_scope' };
  const tenant = [...names][0];
  const consent = tenants.get(tenant)?.capture as Capture;
  if (!consentActive(consent, nowMs)) return { capture: false, reason: 'expired' };
  if (!accepted.every((r) => inScope(consent.scope, r.address)))
    return { capture: false, reason: 'out_of_scope' };
  return { capture: true, tenant, consent };
}
