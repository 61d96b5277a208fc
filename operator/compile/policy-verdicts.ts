// Compile phase 3: what each TenantPolicy gets now that ownership is settled. Its status says which
// domains it serves and which an older policy holds; a namespace whose policy serves nothing gets
// the reason its routes are refused; a valid troubleshooting consent becomes its tenant's capture.

import {
  accepted,
  invalidSpecStatus,
  notAccepted,
  policyStatus,
  REASONS,
} from '../conditions/resource-status.ts';
import { type CompileState, errorText, listText, type PolicyEntry } from './compile-state.ts';
import { checkConsent, type TroubleshootingSpec } from './consent.ts';

export function judgePolicies(state: CompileState): void {
  for (const p of state.policies) {
    if (p.invalid) judgeInvalidPolicy(state, p, p.invalid);
    else if (p.owned.size === 0) refuseDomainlessPolicy(state, p);
    else acceptPolicy(state, p);
  }
}

const lostText = (p: PolicyEntry): string[] => p.lost.map((c) => `${c.value} (held by ${c.winner})`);

function judgeInvalidPolicy(
  state: CompileState,
  p: PolicyEntry,
  invalid: NonNullable<PolicyEntry['invalid']>,
): void {
  const owned = listText([...p.owned].sort());
  const lost = p.lost.length > 0 ? `; claimed by an older TenantPolicy: ${listText(lostText(p))}` : '';
  const { inForce } = invalid;
  const consequence =
    p.owned.size === 0
      ? `; ${inForce ? `generation ${inForce.generation}, the last valid one,` : 'it'} serves nothing${lost}`
      : inForce
        ? `; generation ${inForce.generation}, the last valid one, stays in force for ${owned} until the spec is fixed${lost}`
        : `; no valid generation was ever served: ${owned} stay reserved for this tenant (their mail is refused) until the spec is fixed${lost}`;
  state.statuses.set(
    p.meta.key,
    invalidSpecStatus(p.meta.generation, errorText(invalid.errors) + consequence, p.lost),
  );
  if (p.owned.size === 0 || !inForce) {
    state.rejectedPolicyByNs.set(
      p.meta.namespace,
      `${p.meta.label} is invalid and no valid generation of it is in force; fix the TenantPolicy`,
    );
  }
  if (p.owned.size === 0) return;
  state.tenantByNs.set(p.meta.namespace, p);
  if (inForce) state.sources.set(p.meta.key, inForce.generation);
}

function refuseDomainlessPolicy(state: CompileState, p: PolicyEntry): void {
  const message = `every domain is claimed by an older TenantPolicy: ${listText(lostText(p))}; use other domains or ask the holder to release them`;
  state.statuses.set(
    p.meta.key,
    policyStatus(p.meta.generation, notAccepted(REASONS.domainClaimedByOtherTenant, message), p.lost),
  );
  state.rejectedPolicyByNs.set(
    p.meta.namespace,
    `${p.meta.label} is not accepted: every domain is claimed by another tenant`,
  );
}

function acceptPolicy(state: CompileState, p: PolicyEntry): void {
  state.tenantByNs.set(p.meta.namespace, p);
  state.sources.set(p.meta.key, p.meta.generation ?? 0);
  const owned = listText([...p.owned].sort());
  const verdict =
    p.lost.length > 0
      ? accepted(
          `accepted for ${owned}; these domains are claimed by an older TenantPolicy and not served for this tenant: ${listText(lostText(p))}`,
          REASONS.domainClaimedByOtherTenant,
        )
      : accepted(`accepted for ${owned}`);
  state.statuses.set(p.meta.key, policyStatus(p.meta.generation, verdict, p.lost));
  if (p.spec?.troubleshooting !== undefined) checkCapture(state, p, p.spec.troubleshooting);
}

/**
 * A troubleshooting capture needs a valid, current consent. Without one nothing is captured and
 * the policy says why, but its mail keeps flowing (routes are still served).
 */
function checkCapture(state: CompileState, p: PolicyEntry, troubleshooting: unknown): void {
  const consent = checkConsent(
    p.meta.namespace,
    troubleshooting as TroubleshootingSpec,
    [...p.owned].sort(),
    state.nowMs,
  );
  if (consent.ok) {
    state.captureByNs.set(p.meta.namespace, consent.capture);
    return;
  }
  const why = listText(
    consent.errors.map((e) => `${e.field}: ${e.message}`),
    20,
  );
  state.statuses.set(
    p.meta.key,
    policyStatus(
      p.meta.generation,
      notAccepted(REASONS.consentInvalid, `${why}; nothing is captured (routing is still served)`),
      p.lost,
    ),
  );
}
