// Per-tenant budgets and holding a tenant back. A tenant whose compiled section is over a budget
// (routes, patterns, bytes), or whose shard no longer fits a ConfigMap, is not published as compiled:
// its previously published section stays in force (as a Deployment keeps its old ReplicaSet) and
// everyone else keeps publishing. Domain ownership is never changed by this: it was settled by the
// compile step with every tenant present, and a held-back section serves only the domains its
// tenant still owns. A tenant that never had a section published gets a deferral section instead
// (its domains answer 451, so senders retry until the tenant fits again; nothing is handed over,
// nothing bounces). Pure: the previous config and the budgets are parameters.
import { rehashLike, tenantDigest } from '../../contract/config/hash.ts';
import type { RelayConfig, Tenant } from '../../contract/config/types.gen.ts';
import { notAccepted, withAccepted } from '../conditions/resource-status.ts';
import type { CompileResult } from './compile.ts';

export interface TenantBudgets {
  /** MailRoutes published per tenant (operator flag --tenant-max-routes). */
  maxRoutes: number;
  /** Recipient plus sender patterns over all of a tenant's routes (--tenant-max-patterns). */
  maxPatterns: number;
  /** Bytes of the tenant's section of the relay config as JSON (--tenant-max-config-bytes). */
  maxBytes: number;
}

/** Generous for a real tenant, and small enough that a shard of such tenants fits a ConfigMap gzipped. */
export const DEFAULT_TENANT_BUDGETS: TenantBudgets = {
  maxRoutes: 1000,
  maxPatterns: 10_000,
  maxBytes: 512 * 1024,
};

export const BUDGET_REASONS = {
  /** Accepted=False on a TenantPolicy and its MailRoutes: the tenant is over a budget. */
  overBudget: 'TenantBudgetExceeded',
  /** Programmed=False: the tenant's shard of the relay config does not fit a ConfigMap. */
  shardTooLarge: 'ShardTooLarge',
} as const;

/** What a tenant that has nothing published yet answers while it is held back. */
export const HELD_BACK_REPLY = {
  code: 451,
  enhancedCode: '4.3.0',
  message: 'Tenant routing is being updated, try again later',
} as const;

export interface TenantUsage {
  routes: number;
  patterns: number;
  bytes: number;
}

/**
 * Usage of the tenant sections measured before. A section a CompileCache reused is the very object
 * of the last compile (sections are never mutated, as tenantDigest assumes), and measuring
 * the UTF-8 length of every tenant's JSON took about 14 ms of each compile at 100k routes.
 */
const usages = new WeakMap<Tenant, TenantUsage>();

export function tenantUsage(t: Tenant): TenantUsage {
  const known = usages.get(t);
  if (known) return known;
  let patterns = 0;
  for (const r of t.routes) patterns += r.recipients.length + r.senders.length;
  const u = Object.freeze({
    routes: t.routes.length,
    patterns,
    bytes: tenantDigest(t).bytes,
  });
  usages.set(t, u);
  return u;
}

/** The broken budgets, as text naming the numbers and the operator flag, or [] when within budget. */
export function overBudget(u: TenantUsage, b: TenantBudgets): string[] {
  const out: string[] = [];
  if (u.routes > b.maxRoutes) out.push(`${u.routes} routes (limit ${b.maxRoutes}, --tenant-max-routes)`);
  if (u.patterns > b.maxPatterns)
    out.push(`${u.patterns} recipient and sender patterns (limit ${b.maxPatterns}, --tenant-max-patterns)`);
  if (u.bytes > b.maxBytes)
    out.push(`${u.bytes} bytes of relay config (limit ${b.maxBytes}, --tenant-max-config-bytes)`);
  return out;
}

const heldBackRouteName = (tenant: string) => `${tenant}/mailplus-held-back`;

/** The owned domain claims as catch-all recipient patterns ('*@d', '*@*.d'). */
function catchAll(domains: string[]): string[] {
  return domains.map((d) => (d.startsWith('*.') ? `*@*.${d.slice(2)}` : `*@${d}`));
}

const sourceNamespace = (key: string): string => key.split('/')[1] ?? '';

export interface HeldBack {
  tenant: Tenant;
  /** The `sources` entries of this tenant's namespace that describe what is served. */
  sources: Record<string, number>;
  /** true: the previous section is served; false: a deferral section (nothing published before). */
  kept: boolean;
}

/**
 * What to serve for `current` (the compiled section) while it is held back: the previously
 * published section restricted to the domains `current` still owns, or a deferral section.
 */
export function holdBack(
  current: Tenant,
  currentSources: Record<string, number>,
  previous: RelayConfig | undefined,
): HeldBack {
  const owned = new Set(current.domains);
  const prev = previous?.tenants.find((t) => t.name === current.name);
  // a deferral section published earlier is not a previous version worth keeping: rebuild it
  if (prev && !prev.routes.some((r) => r.name === heldBackRouteName(current.name))) {
    const sources: Record<string, number> = {};
    for (const [k, g] of Object.entries(previous?.sources ?? {}))
      if (sourceNamespace(k) === current.name) sources[k] = g;
    return { tenant: { ...prev, domains: prev.domains.filter((d) => owned.has(d)) }, sources, kept: true };
  }
  const sources: Record<string, number> = {};
  if (current.policy) {
    const key = `TenantPolicy/${current.policy}`;
    if (key in currentSources) sources[key] = currentSources[key];
  }
  const routes: Tenant['routes'] =
    current.domains.length === 0
      ? []
      : [
          {
            name: heldBackRouteName(current.name),
            priority: 0,
            recipients: catchAll(current.domains),
            senders: [],
            action: { reject: { ...HELD_BACK_REPLY } },
          },
        ];
  const { capture: _noCapture, ...policyOnly } = current;
  return { tenant: { ...policyOnly, routes }, sources, kept: false };
}

/** Replaces the named tenants' sections by their held-back ones; the result is re-hashed. */
export function withHeldBack(
  config: RelayConfig,
  names: ReadonlySet<string>,
  previous: RelayConfig | undefined,
): { config: RelayConfig; held: Map<string, HeldBack> } {
  const held = new Map<string, HeldBack>();
  if (names.size === 0) return { config, held };
  const sources: Record<string, number> = {};
  for (const [k, g] of Object.entries(config.sources ?? {}))
    if (!names.has(sourceNamespace(k))) sources[k] = g;
  const tenants = config.tenants.map((t) => {
    if (!names.has(t.name)) return t;
    const h = holdBack(t, config.sources ?? {}, previous);
    held.set(t.name, h);
    Object.assign(sources, h.sources);
    return h.tenant;
  });
  const sorted: Record<string, number> = {};
  for (const k of Object.keys(sources).sort()) sorted[k] = sources[k];
  const out = rehashLike<RelayConfig>({ ...config, hash: '', sources: sorted, tenants }, config);
  return { config: out, held };
}

export interface BudgetResult extends CompileResult {
  /** Tenant name → the broken budgets (text), for metrics and logs. */
  overBudget: Map<string, string[]>;
}

/**
 * Enforces the budgets on a compile result: over-budget tenants are held back against `previous`
 * (the config last published), and their TenantPolicy and accepted MailRoutes say which budget
 * they broke (Accepted=False, TenantBudgetExceeded, with the numbers).
 */
export function enforceTenantBudgets(
  result: CompileResult,
  budgets: TenantBudgets,
  previous: RelayConfig | undefined,
): BudgetResult {
  const broken = new Map<string, string[]>();
  for (const t of result.config.tenants) {
    const over = overBudget(tenantUsage(t), budgets);
    if (over.length > 0) broken.set(t.name, over);
  }
  if (broken.size === 0) return { ...result, overBudget: broken };
  const { config, held } = withHeldBack(result.config, new Set(broken.keys()), previous);
  const statuses = new Map(result.statuses);
  for (const [key, st] of result.statuses) {
    const [kind, ns] = key.split('/');
    const over = broken.get(ns);
    if (!over || (kind !== 'TenantPolicy' && kind !== 'MailRoute')) continue;
    const accepted = st.conditions.find((c) => c.type === 'Accepted');
    // only what would have been published; invalid or rejected resources keep their own reason
    if (accepted?.status !== 'True') continue;
    const served = held.get(ns)?.kept
      ? 'the routes published before stay in force'
      : `nothing was published for it before, so its domains answer ${HELD_BACK_REPLY.code} ${HELD_BACK_REPLY.enhancedCode} (senders retry)`;
    const message = `tenant ${ns} is over its budget: ${over.join('; ')}; this change is not published and ${served}; remove routes or patterns, or ask the platform team to raise the limit`;
    statuses.set(key, withAccepted(st, notAccepted(BUDGET_REASONS.overBudget, message)));
  }
  return { config, statuses, overBudget: broken };
}
