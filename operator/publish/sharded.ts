// Planning what to publish (pure): the compiled config goes out as one ConfigMap (--config-shards=1)
// or as N shard ConfigMaps plus an index (contract/config/shards.ts). A document that does not fit a
// ConfigMap never blocks the others: the tenants in it that changed since the last published
// version of that document are held back (their previous sections stay in force), and only if that
// still does not fit is every tenant in it reduced to a deferral section. Either way the document
// is small enough to publish, so every other tenant's changes and revocations keep going out.
import { sameTenant } from '../../contract/config/hash.ts';
import { type SourceKeyRun, shardConfigMapName, splitRelayConfig } from '../../contract/config/shards.ts';
import type { RelayConfig } from '../../contract/config/types.gen.ts';
import { withHeldBack } from '../compile/budgets.ts';
import { CONFIGMAP_LIMIT, type ConfigPayload, encodeRelayConfig } from './configmap.ts';

/** Room left for metadata (labels, annotations, managedFields) under the API server's 1 MiB. */
export const PAYLOAD_LIMIT = CONFIGMAP_LIMIT - 16 * 1024;

export interface PlannedDoc {
  /** ConfigMap name. */
  name: string;
  config: RelayConfig;
  /** Absent when the stored document already has this content (nothing to encode or write). */
  payload?: ConfigPayload;
  /** Tenants held back because the document as compiled did not fit; with the size that did not. */
  heldBack: string[];
  tooLargeBytes?: number;
}

export interface PublishPlanInput {
  config: RelayConfig;
  /** The ConfigMap named by --configmap (the whole config, or the index when sharded). */
  base: string;
  shards: number;
  /**
   * The documents as stored, decoded and hash-verified, by ConfigMap name (absent: never published
   * or unreadable). A document whose hash is unchanged is not encoded again.
   */
  previous: ReadonlyMap<string, RelayConfig>;
  /** The sorted runs config.sources is made of, when the compile says (CompileResult.sourceRuns). */
  sourceRuns?: ReadonlyArray<SourceKeyRun>;
  limit?: number;
}

/**
 * The shards of a compiled config by identity: the operator plans the same config again on every
 * status sweep and ConfigMap event, and a compiled config is never mutated. A shard whose content
 * is the one stored is the stored document (already hashed, nothing to encode).
 */
const splits = new WeakMap<RelayConfig, { shards: number; docs: RelayConfig[] }>();
function split(input: PublishPlanInput): RelayConfig[] {
  const { config, shards, base, previous } = input;
  const memo = splits.get(config);
  if (memo?.shards === shards) return memo.docs;
  const docs = splitRelayConfig(
    config,
    shards,
    (i) => previous.get(shardConfigMapName(base, i)),
    input.sourceRuns,
  );
  splits.set(config, { shards, docs });
  return docs;
}

/** The documents to publish, index excluded (it names the shards' hashes as actually stored). */
export function planPublish(input: PublishPlanInput): PlannedDoc[] {
  const limit = input.limit ?? PAYLOAD_LIMIT;
  const docs =
    input.shards <= 1
      ? [{ name: input.base, config: input.config }]
      : split(input).map((config, i) => ({
          name: shardConfigMapName(input.base, i),
          config,
        }));
  return docs.map(({ name, config }) => fitDocument(name, config, input.previous.get(name), limit));
}

function fitDocument(
  name: string,
  config: RelayConfig,
  previous: RelayConfig | undefined,
  limit: number,
): PlannedDoc {
  // unchanged: nothing to encode; the planned document (same content), not the stored one, which
  // after a restart is a decoded copy the compile's own tenant objects would be kept beside
  if (previous?.hash === config.hash) return { name, config, heldBack: [] };
  const payload = encodeRelayConfig(config);
  if (payload.bytes <= limit) return { name, config, payload, heldBack: [] };
  const before = new Map((previous?.tenants ?? []).map((t) => [t.name, t]));
  const changed = new Set(
    config.tenants
      .filter((t) => {
        const b = before.get(t.name);
        return !b || !sameTenant(b, t);
      })
      .map((t) => t.name),
  );
  const kept = withHeldBack(config, changed, previous).config;
  const keptPayload = encodeRelayConfig(kept);
  if (keptPayload.bytes <= limit)
    return { name, config: kept, payload: keptPayload, heldBack: [...changed], tooLargeBytes: payload.bytes };
  const all = new Set(config.tenants.map((t) => t.name));
  const deferred = withHeldBack(config, all, undefined).config;
  return {
    name,
    config: deferred,
    payload: encodeRelayConfig(deferred),
    heldBack: [...all],
    tooLargeBytes: payload.bytes,
  };
}
