// Compile phase 4: the MailRoutes and tenant section of each namespace (namespace-section.ts), in
// namespace order. With a cache, a namespace whose inputs are the same objects (and texts) as in
// the last compile reuses the section compiled then.
import type { MailRoute } from '../api/types.gen.ts';
import { validateMailRoute } from '../resources/validate.ts';
import type { SectionInputs } from './cache.ts';
import {
  byKey,
  type CompileState,
  cmpStr,
  dedupe,
  dedupeSorted,
  type Meta,
  type NamespaceContext,
  type NamespaceSection,
  namespaceOf,
  type SortedSection,
} from './compile-state.ts';
import { ownersText } from './domain-ownership.ts';
import { sortedRuns } from './key-order.ts';
import { compileNamespace } from './namespace-section.ts';

export function compileNamespaces(state: CompileState, mailRoutes: MailRoute[]): void {
  const { cache } = state;
  const routes = routesByNamespace(state, mailRoutes);
  // only what the phases before settled: a section must not see (or write) the rest of the state
  const ctx: NamespaceContext = {
    tenantByNs: state.tenantByNs,
    rejectedPolicyByNs: state.rejectedPolicyByNs,
    captureByNs: state.captureByNs,
    exactClaims: state.exactClaims,
    wildcardClaims: state.wildcardClaims,
    services: state.services,
    previous: state.previous,
    validateRoute: cache
      ? (raw, meta) => cache.validated(raw, validateMailRoute, meta)
      : (raw) => validateMailRoute(raw),
  };
  const namespaces = new Set([...routes.raws.keys(), ...state.tenantByNs.keys()]);
  let inputs: ((ns: string) => SectionInputs | undefined) | undefined;
  if (cache) {
    cache.begin(ownersText(state));
    inputs = sectionInputs(state, routes.raws);
  }
  for (const ns of [...namespaces].sort(cmpStr)) {
    const compute = () => sorted(compileNamespace(ctx, ns, routes.ordered(ns)));
    const section = cache && inputs ? cache.section(ns, inputs(ns), compute) : compute();
    state.sections.push(section);
    if (section.tenant) state.tenants.push(section.tenant);
  }
  cache?.end(namespaces);
}

/**
 * The MailRoutes of each namespace in input order, and as a section reads them: one per key
 * (dedupe's choice), in key order. That is made only for a section that is computed: the cache
 * compares a namespace's objects in input order, so unchanged namespaces are not sorted again.
 */
function routesByNamespace(
  state: CompileState,
  mailRoutes: MailRoute[],
): { raws: Map<string, MailRoute[]>; ordered(ns: string): Array<[Meta, MailRoute]> } {
  const raws = new Map<string, MailRoute[]>();
  // indexed, not for...of: an iterator result per route otherwise (unoptimized code keeps them:
  // 4 MB of garbage per compile at 100k)
  for (let i = 0; i < mailRoutes.length; i++) {
    const raw = mailRoutes[i];
    const ns = namespaceOf(raw);
    const list = raws.get(ns);
    if (list) list.push(raw);
    else raws.set(ns, [raw]);
  }
  if (!state.documentOrder && ![...raws.keys()].some((ns) => ns.includes('/')))
    return { raws, ordered: (ns) => dedupeSorted(state, 'MailRoute', raws.get(ns) ?? []) };
  // input positions are an input (files), or a '/' in a namespace lets keys of two namespaces be
  // equal: deduplicated over the whole input at once
  const byNs = new Map<string, Array<[Meta, MailRoute]>>();
  for (const item of dedupe(state, 'MailRoute', mailRoutes)) {
    const list = byNs.get(item[0].namespace);
    if (list) list.push(item);
    else byNs.set(item[0].namespace, [item]);
  }
  for (const list of byNs.values()) list.sort(byKey);
  return { raws, ordered: (ns) => byNs.get(ns) ?? [] };
}

/** The section with its statuses and sources sorted, once per section computed (key-order.ts). */
const sorted = ({ tenant, statuses, sources, reusable }: NamespaceSection): SortedSection => ({
  tenant,
  statuses: sortedRuns(statuses),
  sources: sortedRuns(sources),
  reusable,
});

/**
 * What a namespace's section is computed from, for the cache. A policy that is invalid
 * (carry-over reads the previous config) or has a troubleshooting consent (checked against the
 * clock) makes its section depend on more than this: never reused.
 */
function sectionInputs(
  state: CompileState,
  raws: Map<string, MailRoute[]>,
): (ns: string) => SectionInputs | undefined {
  const servicesText = new Map<string, string>();
  for (const [key, svc] of state.services) {
    const ns = key.slice(0, key.indexOf('/'));
    servicesText.set(ns, `${servicesText.get(ns) ?? ''}${JSON.stringify(svc)}\n`);
  }
  return (ns) => {
    const p = state.tenantByNs.get(ns);
    if (p && (p.invalid || p.spec?.troubleshooting !== undefined)) return undefined;
    return {
      // concat, not a spread: no iterator results (4 MB of garbage per compile at 100k)
      objects: ([p?.raw] as Array<object | undefined>).concat(raws.get(ns) ?? []),
      text: [
        p ? [...p.owned].join(',') : '',
        p ? JSON.stringify(p.lost) : '',
        state.rejectedPolicyByNs.get(ns) ?? '',
        servicesText.get(ns) ?? '',
      ].join('\n'),
    };
  };
}
