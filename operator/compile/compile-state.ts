// The one state the compile phases (compile.ts) run over, as Contour's DAG builder runs its
// processors over one DAG: the input as admitted, the domain owners, and one status and one
// `sources` entry per resource, each written by the phase that decides it.
import { canonicalJson } from '../../contract/config/hash.ts';
import type { RelayConfig, Route, Tenant } from '../../contract/config/types.gen.ts';
import type { Pattern } from '../../contract/grammar/match.ts';
import type { MailRoute, MailRouteSpec, TenantPolicy } from '../api/types.gen.ts';
import type { Conflict, ResourceStatus } from '../conditions/resource-status.ts';
import { resourceKey, resourceLabel, type Service } from '../resources/types.ts';
import type { ValidationResult } from '../resources/validate.ts';
import type { CompileCache } from './cache.ts';
import { cmpStr, type Run } from './key-order.ts';

export { cmpStr };

export interface CompileInput {
  tenantPolicies: TenantPolicy[];
  mailRoutes: MailRoute[];
  services: Service[];
}

export interface CompileOptions {
  /**
   * The current time (epoch ms or Date): consents (spec.troubleshooting.expiresAt) are checked
   * against it. The compile step never reads the clock itself; without `now` every consent is
   * refused (ConsentInvalid).
   */
  now?: number | Date;
  /**
   * The relay config published before (what relays serve). A resource whose current generation is
   * invalid keeps the version this config serves in force (see carry-over.ts); without it an
   * invalid resource is simply left out (a TenantPolicy still reserves its domains).
   */
  previous?: RelayConfig;
  /**
   * Files (`mailplus dev`, `validate`, `route -f`, `render`): document order stands in for
   * creation time. A resource without metadata.creationTimestamp counts as created after every
   * timestamped one, in the order of the input lists (the order `kubectl apply -f` creates them),
   * so files give the owner a cluster gives for resources created in that order. Without this
   * option (the operator) input order never matters and untimestamped resources tie.
   */
  documentOrder?: boolean;
  /**
   * Validation results and namespace sections of earlier compiles (the operator): input objects
   * are treated as immutable, a changed resource must be a new object. Output is unchanged.
   */
  cache?: CompileCache;
  /**
   * What `config.hash` is: 'document' (default), the hash a relay verifies when it is given the
   * config itself (a file, an unsharded ConfigMap); 'union', the config's unionHash (contract
   * config/hash.ts), when only its shards are given to relays as documents (the sharded operator).
   */
  hash?: 'document' | 'union';
}

export interface CompileResult {
  config: RelayConfig;
  /** Keyed 'Kind/namespace/name' for every TenantPolicy and MailRoute in the input, in key order. */
  statuses: ReadonlyMap<string, ResourceStatus>;
  /**
   * The sorted runs config.sources is made of (key-order.ts), never mutated: with a cache, a
   * namespace whose section is reused brings the same run objects as the last compile, so what
   * differs between two compiles is found by identity (ConfigHistory).
   */
  sourceRuns?: ReadonlyArray<Run<number>>;
}

export interface Meta {
  readonly kind: 'TenantPolicy' | 'MailRoute';
  readonly namespace: string;
  readonly name: string;
  readonly key: string;
  readonly label: string;
  readonly generation: number | undefined;
  /** metadata.creationTimestamp in epoch seconds; Infinity without one. */
  readonly created: number;
  /** Position in the input (documentOrder), else 0. */
  readonly position: number;
  /** The object's validation, remembered by a CompileCache (ValidationSlot). */
  checked: unknown;
}

export type FieldError = { field: string; message: string };

export interface PolicyEntry {
  meta: Meta;
  raw: TenantPolicy;
  /** The valid spec; absent when the current generation is invalid. */
  spec?: TenantPolicy['spec'];
  /**
   * The current generation is invalid: its errors, and the last valid version that stays in force
   * (absent when none was ever served: the policy then only reserves its domains).
   */
  invalid?: { errors: FieldError[]; inForce?: { generation: number; tenant: Tenant } };
  /** Normalised claims with the field they come from. */
  claims: Array<{ claim: string; field: string }>;
  owned: Set<string>;
  lost: Conflict[];
}

export interface CompileState {
  /** options.now in epoch ms. */
  nowMs: number | undefined;
  previous: RelayConfig | undefined;
  documentOrder: boolean;
  /** options.cache, except with documentOrder (file order is an input of route order: never cached). */
  cache: CompileCache | undefined;
  /** By 'namespace/name', in that order. */
  services: Map<string, Service>;
  /** The TenantPolicy that speaks for each namespace (one per namespace), oldest first. */
  policies: PolicyEntry[];
  /** Domain claims and who holds them: exact ones by domain, wildcard ones by the domain after '*.'. */
  exactClaims: Map<string, PolicyEntry>;
  wildcardClaims: Map<string, PolicyEntry>;
  /** The policy whose tenant section a namespace gets (it holds at least one domain). */
  tenantByNs: Map<string, PolicyEntry>;
  /** Why the routes of a namespace are refused although it has a TenantPolicy. */
  rejectedPolicyByNs: Map<string, string>;
  /** The troubleshooting capture a namespace's valid consent grants. */
  captureByNs: Map<string, NonNullable<Tenant['capture']>>;
  tenants: Tenant[];
  /** The statuses of the TenantPolicies (those of MailRoutes are in `sections`). */
  statuses: Map<string, ResourceStatus>;
  /**
   * What the config is compiled from: 'Kind/namespace/name' → generation (RelayConfig.sources), for
   * the TenantPolicies (MailRoutes and Services are in `sections`).
   */
  sources: Map<string, number>;
  /** The namespace sections in the order they were compiled. */
  sections: SortedSection[];
}

/** What the namespace sections share: the outcome of the phases before. */
export type NamespaceContext = Pick<
  CompileState,
  | 'tenantByNs'
  | 'rejectedPolicyByNs'
  | 'captureByNs'
  | 'exactClaims'
  | 'wildcardClaims'
  | 'services'
  | 'previous'
> & { validateRoute(raw: MailRoute, meta: Meta): ValidationResult<MailRoute> };

export interface RouteEntry {
  meta: Meta;
  /** The valid spec; absent when an invalid generation keeps its last valid version (carried). */
  spec?: MailRouteSpec;
  carried?: { errors: FieldError[]; generation: number; route: Route };
  recipients: Array<{ pattern: Pattern; index: number }>;
  senders: Pattern[];
}

/** One namespace's share of the compile output. */
export interface NamespaceSection {
  tenant?: Tenant;
  statuses: Map<string, ResourceStatus>;
  sources: Map<string, number>;
  /** False when it depends on the previous config (an invalid route): never reused. */
  reusable: boolean;
}

/** A computed section with its statuses and sources sorted once, as the compile and its cache keep it. */
export interface SortedSection {
  tenant?: Tenant;
  statuses: Array<Run<ResourceStatus>>;
  sources: Array<Run<number>>;
  reusable: boolean;
}

export const bySpecificity = (a: Pattern, b: Pattern): number => a.rank - b.rank || cmpStr(a.text, b.text);

/**
 * A route's priority: from its valid spec (validation applied the CRD's default), else from the
 * generation in force.
 */
export const priorityOf = (e: RouteEntry): number =>
  e.spec?.priority ?? (e.carried as NonNullable<RouteEntry['carried']>).route.priority;

export function newCompileState(input: CompileInput, options: CompileOptions): CompileState {
  return {
    nowMs: options.now === undefined ? undefined : new Date(options.now).getTime(),
    previous: options.previous,
    documentOrder: options.documentOrder ?? false,
    cache: options.documentOrder ? undefined : options.cache,
    services: servicesByName(input.services),
    policies: [],
    exactClaims: new Map(),
    wildcardClaims: new Map(),
    tenantByNs: new Map(),
    rejectedPolicyByNs: new Map(),
    captureByNs: new Map(),
    tenants: [],
    statuses: new Map(),
    sources: new Map(),
    sections: [],
  };
}

function servicesByName(services: Service[]): Map<string, Service> {
  const out = new Map<string, Service>();
  for (const svc of [...services].sort((a, b) =>
    cmpStr(`${a.metadata.namespace}/${a.metadata.name}`, `${b.metadata.namespace}/${b.metadata.name}`),
  )) {
    out.set(`${svc.metadata.namespace ?? 'default'}/${svc.metadata.name}`, svc);
  }
  return out;
}

/**
 * A resource's identity as the compile reads it; the label (for messages only) is made when
 * asked: a string per resource kept for 100k resources is megabytes of memory.
 */
class ResourceMeta implements Meta {
  readonly kind: 'TenantPolicy' | 'MailRoute';
  readonly namespace: string;
  readonly name: string;
  readonly key: string;
  readonly generation: number | undefined;
  readonly created: number;
  readonly position: number;
  checked: unknown = undefined;
  constructor(
    kind: 'TenantPolicy' | 'MailRoute',
    namespace: string,
    name: string,
    generation: number | undefined,
    created: number,
    position: number,
  ) {
    this.kind = kind;
    this.namespace = namespace;
    this.name = name;
    this.key = resourceKey(kind, namespace, name);
    this.generation = generation;
    this.created = created;
    this.position = position;
  }
  get label(): string {
    return resourceLabel(this.kind, this.namespace, this.name);
  }
}

function metaOf(
  kind: 'TenantPolicy' | 'MailRoute',
  obj: { metadata?: Record<string, unknown> },
  position = 0,
): Meta {
  const md = (obj.metadata ?? {}) as Record<string, unknown>;
  const namespace = namespaceOf(obj);
  const name = typeof md.name === 'string' ? md.name : '';
  const ts = typeof md.creationTimestamp === 'string' ? Date.parse(md.creationTimestamp) : Number.NaN;
  return new ResourceMeta(
    kind,
    namespace,
    name,
    typeof md.generation === 'number' ? md.generation : undefined,
    // In seconds: the API server writes whole seconds, which then fit a small integer where epoch
    // milliseconds took a heap number per resource (1.6 MB at 100k); a file's fraction is kept.
    // Missing timestamps (files) count as newest.
    Number.isFinite(ts) ? ts / 1000 : Number.POSITIVE_INFINITY,
    position,
  );
}

/** Older first; equal or missing timestamps fall back to input position (files), then namespace/name. */
export const byAge = (a: Meta, b: Meta): number =>
  (a.created === b.created ? 0 : a.created < b.created ? -1 : 1) ||
  a.position - b.position ||
  cmpStr(a.namespace, b.namespace) ||
  cmpStr(a.name, b.name);

export const byKey = (a: [Meta, unknown], b: [Meta, unknown]): number => cmpStr(a[0].key, b[0].key);

export function listText(items: string[], max = 10): string {
  return items.length <= max
    ? items.join(', ')
    : `${items.slice(0, max).join(', ')} and ${items.length - max} more`;
}

export const errorText = (errors: FieldError[]): string =>
  listText(
    errors.map((e) => (e.field ? `${e.field}: ${e.message}` : e.message)),
    20,
  );

/** The namespace of a resource as the compile reads it (metaOf): 'default' when missing. */
export function namespaceOf(obj: { metadata?: unknown }): string {
  const ns = (obj.metadata as { namespace?: unknown } | undefined)?.namespace;
  return typeof ns === 'string' && ns !== '' ? ns : 'default';
}

function metaFor(state: CompileState, kind: 'TenantPolicy' | 'MailRoute', obj: object, i: number): Meta {
  const md = obj as { metadata?: Record<string, unknown> };
  return state.cache
    ? state.cache.meta(kind, md, () => metaOf(kind, md))
    : metaOf(kind, md, state.documentOrder ? i : 0);
}

/**
 * Of two objects with the same key, whether `next` (later in the input) is kept: the larger
 * generation, then the smaller canonical text; the earlier one when both tie.
 */
function keepsNext(next: [Meta, unknown], prev: [Meta, unknown]): boolean {
  const g = next[0].generation ?? 0;
  const pg = prev[0].generation ?? 0;
  return g > pg || (g === pg && canonicalJson(next[1]) < canonicalJson(prev[1]));
}

/**
 * Keeps one object per key, independent of input order (largest generation, then canonical text);
 * in no particular order.
 */
export function dedupe<T extends { metadata?: unknown }>(
  state: CompileState,
  kind: 'TenantPolicy' | 'MailRoute',
  items: T[],
): Array<[Meta, T]> {
  const byKey = new Map<string, [Meta, T]>();
  for (const [i, item] of items.entries()) {
    const next: [Meta, T] = [metaFor(state, kind, item, i), item];
    const prev = byKey.get(next[0].key);
    if (!prev || keepsNext(next, prev)) byKey.set(next[0].key, next);
  }
  return [...byKey.values()];
}

/**
 * dedupe(items) in key order, for items that share keys only among themselves (those of one
 * namespace without a '/' in its name) and without documentOrder: a stable sort puts objects with
 * the same key next to each other in input order, and the same choice is made between neighbours.
 */
export function dedupeSorted<T extends { metadata?: unknown }>(
  state: CompileState,
  kind: 'TenantPolicy' | 'MailRoute',
  items: readonly T[],
): Array<[Meta, T]> {
  const sorted = items.map((item): [Meta, T] => [metaFor(state, kind, item, 0), item]).sort(byKey);
  const out: Array<[Meta, T]> = [];
  for (const next of sorted) {
    const prev = out[out.length - 1];
    if (!prev || prev[0].key !== next[0].key) out.push(next);
    else if (keepsNext(next, prev)) out[out.length - 1] = next;
  }
  return out;
}
