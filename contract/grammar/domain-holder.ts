// Who holds a domain among tenants' claims: the claim of the domain itself, else the wildcard claim
// over its longest proper suffix. The one walk behind the relay's recipient-to-tenant lookup
// (relay/routing/table.ts) and the compile step's domain ownership (which tenant owns a claim, whose domain a
// route's pattern is in), so the operator and the relay can never disagree on an owner.

/**
 * The holder of `domain` (normalised, without '*.'): the claim of the domain itself (the exact
 * claim; with `subdomains`, the wildcard claim '*.domain'), else the wildcard claim over its longest
 * proper suffix. `wildcard` is keyed by the domain after '*.'. A holder equal to `except` is passed
 * over (a tenant does not conflict with itself).
 */
export function domainHolder<T>(
  exact: ReadonlyMap<string, T>,
  wildcard: ReadonlyMap<string, T>,
  domain: string,
  subdomains = false,
  except?: T,
): T | undefined {
  const own = (subdomains ? wildcard : exact).get(domain);
  if (own !== undefined && own !== except) return own;
  for (let dot = domain.indexOf('.'); dot >= 0; dot = domain.indexOf('.', dot + 1)) {
    const holder = wildcard.get(domain.slice(dot + 1));
    if (holder !== undefined && holder !== except) return holder;
  }
  return undefined;
}
