// A sharded relay config: the operator splits one compiled RelayConfig into N shard documents
// (each a RelayConfig holding the tenants whose name hashes to that shard) plus an index document
// (a RelayConfig with no tenants whose `shards` lists every shard's ConfigMap and hash). A change
// to one tenant rewrites one shard and the index; a shard too large to publish holds back only the
// tenants in it. Relays (and `mailplus route --cluster`) serve the union only once they hold every
// shard with the hash the index names, so a change spanning two shards (a domain moving between
// tenants) is never served half-applied. The index also names the union's hash (the compiled
// config's unionHash, see hash.ts), so that a relay forms the union of verified shards in
// O(tenants) instead of hashing the whole fleet again on every change. Pure: shared by the
// operator, the relay and the CLI.
import { RELAY_CONFIG_API_VERSION } from '../kube.ts';
import { hashConfig, sameTenant } from './hash.ts';
import type { RelayConfig } from './types.gen.ts';

export type ShardRef = NonNullable<RelayConfig['shards']>[number];

const cmpStr = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** Stable shard of a tenant (FNV-1a over its name): the same on every operator replica and version. */
export function shardOf(tenant: string, shards: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < tenant.length; i++) {
    h ^= tenant.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % shards;
}

/** The ConfigMap of shard i of the config published as `base` (the chart renders the same names into RBAC). */
export function shardConfigMapName(base: string, i: number): string {
  return `${base}-shard-${i}`;
}

/** Is `name` one of the shard ConfigMaps of `base` (relays refuse an index naming anything else)? */
export function isShardOf(base: string, name: string): boolean {
  return new RegExp(`^${base.replaceAll('.', '\\.')}-shard-(0|[1-9][0-9]{0,3})$`).test(name);
}

function stamp(config: RelayConfig): RelayConfig {
  config.hash = hashConfig(config);
  return config;
}

/** The tenant a `sources` key ('Kind/namespace/name') belongs to: tenants are namespaces. */
function namespaceOfSource(key: string): string {
  const a = key.indexOf('/');
  const b = a < 0 ? -1 : key.indexOf('/', a + 1);
  return b < 0 ? '' : key.slice(a + 1, b);
}

/** Same tenant sections as `doc` (by identity, else by digest). */
function sameTenants(doc: RelayConfig, tenants: RelayConfig['tenants']): boolean {
  if (doc.apiVersion !== RELAY_CONFIG_API_VERSION || doc.kind !== 'RelayConfig' || doc.shards) return false;
  if (doc.tenants.length !== tenants.length) return false;
  for (let i = 0; i < tenants.length; i++) {
    const a = doc.tenants[i];
    const b = tenants[i];
    if (!sameTenant(a, b)) return false;
  }
  return true;
}

/**
 * Sorted runs of `sources` keys as the compile makes them: read-only, never mutated. With their
 * generations (`values[i]` of `keys[i]`) the shards are split without reading `sources` itself,
 * which a compiled config makes only when it is read (operator/compile/compile.ts).
 */
export interface SourceKeyRun {
  readonly keys: readonly string[];
  readonly values?: readonly number[];
}

/** The runs each shard document's `sources` was made of (see sourceKeysByShard). */
const builtFrom = new WeakMap<object, ReadonlySet<SourceKeyRun>>();

/**
 * The `sources` keys of each shard whose sources differ from `before` (key set or a generation),
 * and which shards those are; a shard that does not differ gets no keys (its document is reused).
 * One pass over the keys without building 100k-entry objects: keys come sorted, so a namespace's
 * keys of one kind are consecutive and its shard is looked up once per run. With the compile's
 * runs, a run that the previous document of a shard was made of too has the same keys and
 * generations (runs are never mutated): only the keys of other runs are compared. The keys are
 * copied out only for the shards that differ (copying all 100k on every change was 5 MB of garbage).
 */
function sourceKeysByShard(
  sources: () => Record<string, number>,
  shardFor: (tenant: string) => number,
  before: Array<Record<string, number> | undefined>,
  runs: ReadonlyArray<SourceKeyRun> = [{ keys: Object.keys(sources()) }],
): { keys: string[][]; generations: number[][]; differs: boolean[]; runs: Array<Set<SourceKeyRun>> } {
  const differs = before.map((b) => b === undefined);
  const counts = before.map(() => 0);
  const runsOf = before.map(() => new Set<SourceKeyRun>());
  const known = before.map((b) => (b && builtFrom.get(b)) || undefined);
  // each shard's stretches of keys: [run, from, to) in key order
  const stretches: Array<Array<[SourceKeyRun, number, number]>> = before.map(() => []);
  for (const run of runs) {
    let prefix = '';
    let shard = 0;
    let compare = true;
    let from = 0;
    for (let j = 0; j < run.keys.length; j++) {
      const key = run.keys[j];
      if (prefix === '' || !key.startsWith(prefix)) {
        if (j > from) stretches[shard].push([run, from, j]);
        from = j;
        const ns = namespaceOfSource(key);
        shard = shardFor(ns);
        prefix = ns === '' ? '' : key.slice(0, key.indexOf('/') + ns.length + 2);
        runsOf[shard].add(run);
        compare = !known[shard]?.has(run);
      }
      counts[shard]++;
      if (compare && !differs[shard]) {
        const generation = run.values ? run.values[j] : sources()[key];
        if (before[shard]?.[key] !== generation) differs[shard] = true;
      }
    }
    if (run.keys.length > from) stretches[shard].push([run, from, run.keys.length]);
  }
  for (const [i, b] of before.entries()) if (b && !differs[i] && keyCount(b) !== counts[i]) differs[i] = true;
  const keys: string[][] = before.map(() => []);
  const generations: number[][] = before.map(() => []);
  for (const [i, list] of stretches.entries()) {
    if (!differs[i]) continue;
    for (const [run, from, to] of list)
      for (let j = from; j < to; j++) {
        keys[i].push(run.keys[j]);
        generations[i].push(run.values ? run.values[j] : sources()[run.keys[j]]);
      }
  }
  return { keys, generations, differs, runs: runsOf };
}

/** Key counts of published `sources` objects (never mutated), so an unchanged shard is not counted again. */
const keyCounts = new WeakMap<object, number>();
function keyCount(o: object): number {
  const known = keyCounts.get(o);
  if (known !== undefined) return known;
  const n = Object.keys(o).length;
  keyCounts.set(o, n);
  return n;
}

/**
 * Splits a compiled config into `shards` documents; shard i holds the tenants with shardOf(name) = i.
 * `previous(i)` is shard i as published before: returned as it is when its content is the same, so
 * a change to one tenant hashes (and later encodes) only that tenant's shard instead of all of them.
 */
export function splitRelayConfig(
  config: RelayConfig,
  shards: number,
  previous: (i: number) => RelayConfig | undefined = () => undefined,
  sourceRuns?: ReadonlyArray<SourceKeyRun>,
): RelayConfig[] {
  const shardOfTenant = new Map<string, number>();
  const shardFor = (tenant: string): number => {
    const known = shardOfTenant.get(tenant);
    if (known !== undefined) return known;
    const i = shardOf(tenant, shards);
    shardOfTenant.set(tenant, i);
    return i;
  };
  const tenants: RelayConfig['tenants'][] = Array.from({ length: shards }, () => []);
  for (const t of config.tenants) tenants[shardFor(t.name)].push(t);
  const before = tenants.map((ts, i) => {
    const doc = previous(i);
    return doc && sameTenants(doc, ts) ? doc : undefined;
  });
  let all: Record<string, number> | undefined;
  const { keys, generations, differs, runs } = sourceKeysByShard(
    () => {
      all ??= config.sources ?? {};
      return all;
    },
    shardFor,
    before.map((d) => d?.sources ?? (d && {})),
    sourceRuns,
  );
  return tenants.map((ts, i) => {
    const doc = before[i];
    if (doc && !differs[i]) {
      if (sourceRuns && doc.sources) builtFrom.set(doc.sources, runs[i]);
      // the same content made of other objects (decoded from a ConfigMap after a restart): the
      // stored hash over this config's own tenant objects, so that a holder of the result does not
      // keep a second copy of every tenant section beside the compile's
      return doc.tenants.every((t, j) => t === ts[j]) ? doc : { ...doc, tenants: ts };
    }
    const sources: Record<string, number> = {};
    for (let j = 0; j < keys[i].length; j++) sources[keys[i][j]] = generations[i][j];
    if (sourceRuns) builtFrom.set(sources, runs[i]);
    return stamp({
      apiVersion: RELAY_CONFIG_API_VERSION,
      kind: 'RelayConfig',
      hash: '',
      sources,
      tenants: ts,
    });
  });
}

/**
 * The index document naming each shard's ConfigMap and hash, in shard order, and the hash of their
 * union (the compiled config's hash; relays report it). Without unionHash: an index as operators
 * before it wrote them (relays then compute the union's hash).
 */
export function shardIndex(refs: ShardRef[], unionHash?: string): RelayConfig {
  return stamp({
    apiVersion: RELAY_CONFIG_API_VERSION,
    kind: 'RelayConfig',
    hash: '',
    shards: refs.map((r) => ({ configMap: r.configMap, hash: r.hash })),
    ...(unionHash === undefined ? {} : { unionHash }),
    tenants: [],
  });
}

export type MergeResult = { ok: true; config: RelayConfig } | { ok: false; waitingFor: string[] };

/**
 * The union of the shards an index names, as one RelayConfig (tenants sorted by name, as the compile
 * step orders them) with the hash the index names for it, or the shards still missing or at
 * another hash than the index names. O(tenants): the union's hash is not computed again (only for
 * an index without unionHash), and `sources` (which only the operator reads) are merged only when
 * asked for.
 */
export function mergeShards(
  index: RelayConfig,
  docs: ReadonlyMap<string, RelayConfig>,
  opts: { sources?: boolean } = {},
): MergeResult {
  return unionOfShards(index.shards ?? [], docs, { ...opts, unionHash: index.unionHash });
}

/**
 * The union of the shard documents `refs` names at the hashes it names; its hash is `unionHash`
 * when given, else `hash` of the content: by default the document hash (a relay given an index
 * without unionHash, written by an operator before it, reports that), the operator's unionHash
 * before writing an index whose shards are not all as compiled.
 */
export function unionOfShards(
  refs: readonly ShardRef[],
  docs: ReadonlyMap<string, RelayConfig>,
  {
    sources = true,
    unionHash,
    hash = hashConfig,
  }: { sources?: boolean; unionHash?: string; hash?: (config: RelayConfig) => string } = {},
): MergeResult {
  const waitingFor: string[] = [];
  for (const r of refs) {
    const doc = docs.get(r.configMap);
    if (doc?.hash !== r.hash) waitingFor.push(r.configMap);
  }
  if (waitingFor.length > 0) return { ok: false, waitingFor };
  const shardDocs = refs.map((r) => docs.get(r.configMap) as RelayConfig);
  const tenants = shardDocs.flatMap((d) => d.tenants).sort((a, b) => cmpStr(a.name, b.name));
  const config: RelayConfig = {
    apiVersion: RELAY_CONFIG_API_VERSION,
    kind: 'RelayConfig',
    hash: unionHash ?? '',
    sources:
      sources || unionHash === undefined
        ? Object.assign({}, ...shardDocs.map((d) => d.sources ?? {}))
        : undefined,
    tenants,
  };
  if (unionHash === undefined) config.hash = hash(config); // the canonical hash sorts the sources' keys itself
  if (!sources) delete config.sources;
  return { ok: true, config };
}
