// A sharded relay config: the operator splits one compiled RelayConfig into N shard documents
// (each a RelayConfig holding the tenants whose name hashes to that shard) plus an index document
// (a RelayConfig with no tenants whose `shards` lists every shard's ConfigMap and hash). A change
// to one tenant rewrites one shard and the index; a shard too large to publish holds back only the
// tenants in it. Relays (and `mailplus route --cluster`) serve the union only once they hold every
// shard with the hash the index names, so a change spanning two shards (a domain moving between
// tenants) is never served half-applied. Pure: shared by the operator, the relay and the CLI.
import { RELAY_CONFIG_API_VERSION } from '../kube.ts';
import { hashDerivedConfig } from './hash.ts';
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

// every document here is made of tenant sections already hashed (compiled or verified)
function stamp(config: RelayConfig): RelayConfig {
  config.hash = hashDerivedConfig(config);
  return config;
}

/** The tenant a `sources` key ('Kind/namespace/name') belongs to: tenants are namespaces. */
const namespaceOfSource = (key: string): string => key.split('/')[1] ?? '';

/** Splits a compiled config into `shards` documents; shard i holds the tenants with shardOf(name) = i. */
export function splitRelayConfig(config: RelayConfig, shards: number): RelayConfig[] {
  const out: RelayConfig[] = Array.from({ length: shards }, () => ({
    apiVersion: RELAY_CONFIG_API_VERSION,
    kind: 'RelayConfig',
    hash: '',
    sources: {},
    tenants: [],
  }));
  for (const t of config.tenants) out[shardOf(t.name, shards)].tenants.push(t);
  for (const [key, generation] of Object.entries(config.sources ?? {})) {
    (out[shardOf(namespaceOfSource(key), shards)].sources as Record<string, number>)[key] = generation;
  }
  return out.map(stamp);
}

/** The index document naming each shard's ConfigMap and hash, in shard order. */
export function shardIndex(refs: ShardRef[]): RelayConfig {
  return stamp({
    apiVersion: RELAY_CONFIG_API_VERSION,
    kind: 'RelayConfig',
    hash: '',
    shards: refs.map((r) => ({ configMap: r.configMap, hash: r.hash })),
    tenants: [],
  });
}

export type MergeResult = { ok: true; config: RelayConfig } | { ok: false; waitingFor: string[] };

/**
 * The union of the shards an index names, as one RelayConfig (tenants sorted by name, as the compile
 * step orders them), or the shards still missing or at another hash than the index names.
 */
export function mergeShards(index: RelayConfig, docs: ReadonlyMap<string, RelayConfig>): MergeResult {
  const refs = index.shards ?? [];
  const waitingFor: string[] = [];
  for (const r of refs) {
    const doc = docs.get(r.configMap);
    if (doc?.hash !== r.hash) waitingFor.push(r.configMap);
  }
  if (waitingFor.length > 0) return { ok: false, waitingFor };
  const tenants: RelayConfig['tenants'] = [];
  const sourceEntries: Array<[string, number]> = [];
  for (const r of refs) {
    const doc = docs.get(r.configMap) as RelayConfig;
    tenants.push(...doc.tenants);
    sourceEntries.push(...Object.entries(doc.sources ?? {}));
  }
  tenants.sort((a, b) => cmpStr(a.name, b.name));
  sourceEntries.sort((a, b) => cmpStr(a[0], b[0]));
  const config: RelayConfig = {
    apiVersion: RELAY_CONFIG_API_VERSION,
    kind: 'RelayConfig',
    hash: '',
    sources: Object.fromEntries(sourceEntries),
    tenants,
  };
  return { ok: true, config: stamp(config) };
}
