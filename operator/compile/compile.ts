// The pure compile step: TenantPolicies, MailRoutes and Services in; a hashed, deterministic
// RelayConfig and one status per Mail-Plus resource out. Everything the relay must not decide on
// its own is settled here: validity, domain ownership, route order, upstream addresses, defaults.
// It runs named phases in order over one CompileState (compile-state.ts), each in its own module.

import { hashConfig, stampUnionHash } from '../../contract/config/hash.ts';
import type { RelayConfig } from '../../contract/config/types.gen.ts';
import type { ResourceStatus } from '../conditions/resource-status.ts';
import { admitPolicies } from './admit-policies.ts';
import { compileNamespaces } from './compile-namespaces.ts';
import {
  type CompileInput,
  type CompileOptions,
  type CompileResult,
  type CompileState,
  newCompileState,
} from './compile-state.ts';
import { settleDomainOwnership } from './domain-ownership.ts';
import { eachEntry, inKeyOrder, type Run, runMembersJson } from './key-order.ts';
import { judgePolicies } from './policy-verdicts.ts';
import { RunMap } from './run-map.ts';

export { CompileCache } from './cache.ts';
export type { CompileInput, CompileOptions, CompileResult } from './compile-state.ts';
export { DEFAULT_REJECT_MESSAGE, UNRESOLVED_REPLY } from './route-actions.ts';

export function compile(input: CompileInput, options: CompileOptions = {}): CompileResult {
  const state = newCompileState(input, options);
  // 1. validate the TenantPolicies, one per namespace (the oldest)
  admitPolicies(state, input.tenantPolicies);
  // 2. which policy owns each domain claim
  settleDomainOwnership(state);
  // 3. policy statuses, the namespaces that get a tenant section, consented captures
  judgePolicies(state);
  // 4. MailRoutes and tenant sections, namespace by namespace
  compileNamespaces(state, input.mailRoutes);
  return assembleConfig(state, options.hash ?? 'document');
}

/** Phase 5: the RelayConfig (sources in key order, hashed) and the statuses in key order. */
function assembleConfig(state: CompileState, hash: 'document' | 'union'): CompileResult {
  const sourceRuns = inKeyOrder(
    state.sources,
    state.sections.map((s) => s.sources),
  );
  const config: RelayConfig = {
    apiVersion: 'relay.mailplus.io/v1alpha1',
    kind: 'RelayConfig',
    hash: '',
    sources: {},
    tenants: state.tenants,
  };
  sourcesOnDemand(config, sourceRuns);
  // with a cache, most of `sources` was serialised by earlier compiles; a union hash serialises
  // only the tenant sections not digested before (the ones this compile made)
  const known = state.cache ? { sources: sourcesJson(sourceRuns) } : undefined;
  if (hash === 'union') stampUnionHash(config, known);
  else config.hash = hashConfig(config, known);
  const statuses = new RunMap<ResourceStatus>(
    inKeyOrder(
      state.statuses,
      state.sections.map((s) => s.statuses),
    ),
  );
  sourceMaps.set(config, new RunMap(sourceRuns));
  return { config, statuses, sourceRuns };
}

const sourceMaps = new WeakMap<RelayConfig, ReadonlyMap<string, number>>();

/**
 * The generations of `config.sources`, without making the record when the config was compiled
 * here (a map over the compile's runs; see sourcesOnDemand), else the record itself.
 */
export function sourcesOf(
  config: RelayConfig,
): ReadonlyMap<string, number> | Readonly<Record<string, number>> {
  return sourceMaps.get(config) ?? config.sources ?? {};
}

/**
 * RelayConfig.sources made the first time it is read. The operator looks generations up through
 * sourcesOf, and filling a record of every resource took about 50 ms and 12 MB of each compile at
 * 100k resources although a change recomputes one namespace. Whoever reads the property (a file, a
 * held-back config, a copy, JSON.stringify) gets the record as before, made once.
 */
function sourcesOnDemand(config: RelayConfig, runs: Array<Run<number>>): void {
  let sources: Record<string, number> | undefined;
  Object.defineProperty(config, 'sources', {
    enumerable: true,
    configurable: true,
    get() {
      if (sources === undefined) {
        const made: Record<string, number> = {};
        eachEntry(runs, (k, g) => {
          made[k] = g;
        });
        sources = made;
      }
      return sources;
    },
    set(v: Record<string, number>) {
      sources = v;
      sourceMaps.delete(config); // sourcesOf now gives the record set
    },
  });
}

/**
 * The canonical JSON of RelayConfig.sources filled from these runs, in parts: the texts of the runs
 * (most made by earlier compiles) between the braces and commas that join them. Keys
 * 'Kind/namespace/name' are never integer-like, so the record lists them in the order they were
 * set, the runs' key order. Undefined for a value not JSON.
 */
function sourcesJson(runs: Array<Run<number>>): string[] | undefined {
  const parts = ['{'];
  for (const run of runs) {
    const members = runMembersJson(run);
    if (members === undefined) return undefined;
    if (members === '') continue;
    if (parts.length > 1) parts.push(',');
    parts.push(members);
  }
  parts.push('}');
  return parts;
}

/** The RelayConfig as written to files and ConfigMaps: stable key order, 2-space indent, final newline. */
export function renderRelayConfig(config: RelayConfig): string {
  return `${JSON.stringify(config, null, 2)}\n`;
}
