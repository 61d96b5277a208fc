// Compile phase 2: domain ownership. A domain claimed by two tenants belongs to the older claim
// (then namespace/name). Policies are visited oldest first, and a claim that an older tenant's claim
// already covers (the same claim, or a wildcard over a parent domain) is lost. A newer wildcard over
// an older exact or narrower claim stays, minus that carve-out: at run time the more specific claim
// wins, and by construction it is always the older one.
import { domainHolder } from '../../contract/grammar/domain-holder.ts';
import type { Pattern } from '../../contract/grammar/match.ts';
import type { CompileState } from './compile-state.ts';

export function settleDomainOwnership(state: CompileState): void {
  const { exactClaims, wildcardClaims } = state;
  for (const p of state.policies) {
    for (const { claim, field } of p.claims) {
      const wildcard = claim.startsWith('*.');
      const domain = wildcard ? claim.slice(2) : claim;
      const holder = domainHolder(exactClaims, wildcardClaims, domain, wildcard, p);
      if (holder) {
        p.lost.push({ field, value: claim, winner: holder.meta.label });
        continue;
      }
      // a policy never lists a claim twice (reservedClaims), so this never replaces its own
      (wildcard ? wildcardClaims : exactClaims).set(domain, p);
      p.owned.add(claim);
    }
  }
}

/** The namespace of the tenant that owns the domain of a recipient pattern, if any. */
export function patternOwner(
  state: Pick<CompileState, 'exactClaims' | 'wildcardClaims'>,
  p: Pattern,
): string | undefined {
  return domainHolder(state.exactClaims, state.wildcardClaims, p.domain, p.kind === 'subdomains')?.meta
    .namespace;
}

/** Every claim and its owner as text: a section compiled under other owners is not reused. */
export function ownersText(state: CompileState): string {
  const lines: string[] = [];
  for (const [domain, p] of state.exactClaims) lines.push(`${domain}=${p.meta.namespace}`);
  for (const [domain, p] of state.wildcardClaims) lines.push(`*.${domain}=${p.meta.namespace}`);
  return lines.join('\n');
}
