// Follows the relay config the operator publishes, sharded or not, by composing single-ConfigMap
// watchers (config-configmap-watch.ts): one on NAME, and when NAME holds a shard index
// (operator --config-shards > 1) one per shard ConfigMap it names. The relay is handed the union of
// the shards only when it holds every shard at exactly the hash the index names, so it never
// serves half an update (a domain moving between tenants in two shards); until then it keeps the
// last consistent config. An index naming ConfigMaps other than NAME-shard-<i> is refused (the
// relay's RBAC names exactly those, and the index must not point it anywhere else).
import { canonicalTenantJson } from '../../contract/config/hash.ts';
import { assembledFromVerified } from '../../contract/config/load.ts';
import { isShardOf, mergeShards } from '../../contract/config/shards.ts';
import type { RelayConfig } from '../../contract/config/types.gen.ts';
import { type ConfigMapWatchOptions, watchConfigMap } from './configmap-watch.ts';
import type { ConfigTarget, FileWatcher } from './file-watch.ts';

export interface FollowOptions extends ConfigMapWatchOptions {
  /** Follow a shard afresh when it is still behind the index after this long (default 10 s). */
  refollowAfterMs?: number;
}

/**
 * `next` (verified) with each tenant section whose content equals one in `previous` replaced by
 * that earlier object: the same content and hash, but a change to one tenant of a shard leaves the
 * other tenants' sections (and their routing indexes) as they were instead of new copies.
 */
export function withUnchangedTenantsOf(previous: RelayConfig | undefined, next: RelayConfig): RelayConfig {
  if (!previous || previous === next) return next;
  const before = new Map(previous.tenants.map((t) => [canonicalTenantJson(t), t]));
  let reused = 0;
  const tenants = next.tenants.map((t) => {
    const same = before.get(canonicalTenantJson(t));
    if (same) reused++;
    return same ?? t;
  });
  return reused === 0 ? next : assembledFromVerified({ ...next, tenants });
}

export function followRelayConfig(relay: ConfigTarget, opts: FollowOptions): FileWatcher {
  const { namespace, name, logger } = opts;
  const source = `configmap/${namespace}/${name}`;
  const shardDocs = new Map<string, RelayConfig>();
  const shardWatchers = new Map<string, FileWatcher>();
  let index: RelayConfig | undefined;
  let waitingLogged = '';
  let straggler: NodeJS.Timeout | undefined;
  let closed = false;
  const refollowMs = opts.refollowAfterMs ?? 10_000;

  const serve = (config: RelayConfig, from: string): { ok: boolean } => {
    const r = relay.applyConfig(config, from);
    if (r.ok) opts.onApplied?.(config.hash);
    return r;
  };

  const tryServe = () => {
    if (!index?.shards) return;
    const m = mergeShards(index, shardDocs);
    if (!m.ok) {
      scheduleRefollow(m.waitingFor);
      const text = m.waitingFor.join(',');
      if (text !== waitingLogged) {
        logger.info('waiting for relay config shards to match the index', {
          configmap: `${namespace}/${name}`,
          index: index.hash,
          waitingFor: m.waitingFor,
        });
        waitingLogged = text;
      }
      return;
    }
    waitingLogged = '';
    clearTimeout(straggler);
    straggler = undefined;
    // every shard was schema- and hash-verified when decoded; mergeShards hashed the union
    serve(assembledFromVerified(m.config), `${source} (${index.shards.length} shards)`);
  };

  /**
   * A shard still missing or behind the index after refollowAfterMs is followed afresh (a new GET
   * and watch): an event lost by its watch would otherwise keep the whole set unserved until the
   * watcher's periodic re-read.
   */
  const scheduleRefollow = (waitingFor: string[]) => {
    if (straggler || closed) return;
    straggler = setTimeout(() => {
      straggler = undefined;
      if (closed || !index?.shards) return;
      const m = mergeShards(index, shardDocs);
      if (m.ok) return;
      logger.warn('relay config shards still behind the index; following them afresh', {
        configmap: `${namespace}/${name}`,
        shards: m.waitingFor,
      });
      for (const shard of m.waitingFor) {
        if (!waitingFor.includes(shard)) continue;
        shardWatchers.get(shard)?.close();
        shardWatchers.set(
          shard,
          watchConfigMap(shardTarget(shard), { ...opts, name: shard, onApplied: undefined }),
        );
      }
      scheduleRefollow(m.waitingFor);
    }, refollowMs);
    straggler.unref?.();
  };

  const closeShard = (shard: string) => {
    shardWatchers.get(shard)?.close();
    shardWatchers.delete(shard);
    shardDocs.delete(shard);
  };

  const shardTarget = (shard: string): ConfigTarget => ({
    applyConfig(config) {
      shardDocs.set(shard, withUnchangedTenantsOf(shardDocs.get(shard), config));
      tryServe();
      return { ok: true };
    },
    reportConfigError: (err, from) => relay.reportConfigError(err, from),
  });

  const indexTarget: ConfigTarget = {
    applyConfig(config, from) {
      if (!config.shards) {
        // unsharded (--config-shards=1, or the operator was reinstalled without shards)
        index = undefined;
        for (const shard of [...shardWatchers.keys()]) closeShard(shard);
        return serve(config, from ?? source);
      }
      const foreign = config.shards.map((s) => s.configMap).filter((n) => !isShardOf(name, n));
      if (foreign.length > 0) {
        relay.reportConfigError(
          new Error(
            `${source}: the shard index names ConfigMaps that are not shards of ${name}: ${foreign.join(', ')}; only ${name}-shard-<n> are followed`,
          ),
          from,
        );
        return { ok: false };
      }
      index = config;
      const wanted = new Set(config.shards.map((s) => s.configMap));
      for (const shard of [...shardWatchers.keys()]) if (!wanted.has(shard)) closeShard(shard);
      for (const shard of wanted) {
        if (shardWatchers.has(shard)) continue;
        shardWatchers.set(
          shard,
          watchConfigMap(shardTarget(shard), { ...opts, name: shard, onApplied: undefined }),
        );
      }
      tryServe();
      return { ok: true };
    },
    reportConfigError: (err, from) => relay.reportConfigError(err, from),
  };

  const main = watchConfigMap(indexTarget, { ...opts, onApplied: undefined });
  return {
    close() {
      closed = true;
      clearTimeout(straggler);
      main.close();
      for (const shard of [...shardWatchers.keys()]) closeShard(shard);
    },
  };
}
