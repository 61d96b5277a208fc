// Compile phase 1: validate the TenantPolicies and pick the one that speaks for each namespace
// (the oldest). An invalid policy keeps its last valid generation in force (carry-over.ts), or,
// when none was ever served, still reserves its domains: faults never change who owns what.
import { normalizeDomainClaim } from '../../contract/grammar/match.ts';
import { parseRetention } from '../../contract/grammar/retention.ts';
import type { TenantPolicy } from '../api/types.gen.ts';
import { invalidSpecStatus, notAccepted, policyStatus, REASONS } from '../conditions/resource-status.ts';
import { validateTenantPolicy } from '../resources/validate.ts';
import { generationInForce, previousTenant } from './carry-over.ts';
import {
  byAge,
  byKey,
  type CompileState,
  dedupe,
  errorText,
  type FieldError,
  type Meta,
  type PolicyEntry,
} from './compile-state.ts';

export function admitPolicies(state: CompileState, tenantPolicies: TenantPolicy[]): void {
  const byNs = new Map<string, PolicyEntry[]>();
  for (const [meta, raw] of dedupe(state, 'TenantPolicy', tenantPolicies).sort(byKey)) {
    const entry = admitPolicy(state, meta, raw);
    if (!entry) continue;
    const list = byNs.get(meta.namespace);
    if (list) list.push(entry);
    else byNs.set(meta.namespace, [entry]);
  }
  for (const list of byNs.values()) {
    list.sort((a, b) => byAge(a.meta, b.meta));
    state.policies.push(list[0]);
    for (const loser of list.slice(1)) refuseSecondPolicy(state, loser, list[0]);
  }
  state.policies.sort((a, b) => byAge(a.meta, b.meta));
}

/** The policy as it takes part in domain ownership, or undefined (invalid, claiming nothing: refused). */
function admitPolicy(state: CompileState, meta: Meta, raw: TenantPolicy): PolicyEntry | undefined {
  const v = state.cache ? state.cache.validated(raw, validateTenantPolicy, meta) : validateTenantPolicy(raw);
  let errors: FieldError[] = v.errors;
  const retention = v.value?.spec.privacy?.retention;
  const r = retention === undefined ? undefined : parseRetention(retention);
  if (r && !r.ok) errors = [{ field: 'spec.privacy.retention', message: r.error }];
  if (v.value && errors.length === 0) {
    return { meta, raw, spec: v.value.spec, claims: reservedClaims(v.value), owned: new Set(), lost: [] };
  }
  const { namespace, name } = meta;
  const g = generationInForce(state.previous, 'TenantPolicy', namespace, name, meta.generation);
  const tenant = g === undefined ? undefined : previousTenant(state.previous, namespace, name);
  const inForce = g !== undefined && tenant ? { generation: g, tenant } : undefined;
  const claims = inForce
    ? inForce.tenant.domains.map((claim) => ({ claim, field: `generation ${g} (in force)` }))
    : reservedClaims(raw);
  if (claims.length === 0) {
    state.statuses.set(meta.key, invalidSpecStatus(meta.generation, errorText(errors)));
    return undefined;
  }
  return { meta, raw, invalid: { errors, inForce }, claims, owned: new Set(), lost: [] };
}

/** The parseable domain claims of a TenantPolicy (of an invalid one too: they stay reserved for it). */
function reservedClaims(raw: TenantPolicy): PolicyEntry['claims'] {
  const domains = (raw as { spec?: { domains?: unknown } }).spec?.domains;
  const out: PolicyEntry['claims'] = [];
  if (!Array.isArray(domains)) return out;
  domains.forEach((d, i) => {
    const r = typeof d === 'string' ? normalizeDomainClaim(d) : undefined;
    if (r?.ok && !out.some((c) => c.claim === r.value))
      out.push({ claim: r.value, field: `spec.domains[${i}]` });
  });
  return out;
}

function refuseSecondPolicy(state: CompileState, loser: PolicyEntry, first: PolicyEntry): void {
  const { meta } = loser;
  if (loser.invalid) {
    state.statuses.set(meta.key, invalidSpecStatus(meta.generation, errorText(loser.invalid.errors)));
    return;
  }
  const message = `namespace ${meta.namespace} already has the older ${first.meta.label}; only one TenantPolicy per namespace is honoured: merge this one into it and delete it`;
  state.statuses.set(meta.key, policyStatus(meta.generation, notAccepted(REASONS.conflicted, message)));
}
