// Compile phase 4: the MailRoutes and tenant section of each namespace (namespace-section.ts), in
// namespace order. With a cache, a namespace whose inputs are the same objects (and texts) as in
// the last compile reuses the section compiled then.
import type { MailRoute } from '../api/types.gen.ts';
import { validateMailRoute } from '../resources/validate.ts';
import type { SectionInputs } from './cache.ts';
import type { NamespaceContext } from './compile-state.ts';
import { byKey, type CompileState, cmpStr, dedupe, type Meta } from './compile-state.ts';
import { ownersText } from './domain-ownership.ts';
import { compileNamespace } from './namespace-section.ts';

export function compileNamespaces(state: CompileState, mailRoutes: MailRoute[]): void {
  const { cache } = state;
  const routesByNs = new Map<string, Array<[Meta, MailRoute]>>();
  for (const item of dedupe(state, 'MailRoute', mailRoutes)) {
    const list = routesByNs.get(item[0].namespace);
    if (list) list.push(item);
    else routesByNs.set(item[0].namespace, [item]);
  }
  for (const list of routesByNs.values()) list.sort(byKey);
  // only what the phases before settled: a section must not see (or write) the rest of the state
  const ctx: NamespaceContext = {
    tenantByNs: state.tenantByNs,
    rejectedPolicyByNs: state.rejectedPolicyByNs,
    captureByNs: state.captureByNs,
    exactClaims: state.exactClaims,
    wildcardClaims: state.wildcardClaims,
    services: state.services,
    previous: state.previous,
    validateRoute: cache ? (raw) => cache.validated(raw, validateMailRoute) : validateMailRoute,
  };
  const namespaces = new Set([...routesByNs.keys(), ...state.tenantByNs.keys()]);
  let inputs: ((ns: string) => SectionInputs | undefined) | undefined;
  if (cache) {
    cache.begin(ownersText(state));
    inputs = sectionInputs(state, routesByNs);
  }
  for (const ns of [...namespaces].sort(cmpStr)) {
    const compute = () => compileNamespace(ctx, ns, routesByNs.get(ns) ?? []);
    const section = cache && inputs ? cache.section(ns, inputs(ns), compute) : compute();
    for (const [k, s] of section.statuses) state.statuses.set(k, s);
    for (const [k, g] of section.sources) state.sources.set(k, g);
    if (section.tenant) state.tenants.push(section.tenant);
  }
  cache?.end(namespaces);
}

/**
 * What a namespace's section is computed from, for the cache. A policy that is invalid
 * (carry-over reads the previous config) or has a troubleshooting consent (checked against the
 * clock) makes its section depend on more than this: never reused.
 */
function sectionInputs(
  state: CompileState,
  routesByNs: Map<string, Array<[Meta, MailRoute]>>,
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
      objects: [p?.raw, ...(routesByNs.get(ns) ?? []).map(([, raw]) => raw)],
      text: [
        p ? [...p.owned].join(',') : '',
        p ? JSON.stringify(p.lost) : '',
        state.rejectedPolicyByNs.get(ns) ?? '',
        servicesText.get(ns) ?? '',
      ].join('\n'),
    };
  };
}
