// Follows the relay config the operator publishes, sharded or not, by composing single-ConfigMap
// watchers (configmap-watch.ts): one on NAME, and when NAME holds a shard index
// (operator --config-shards > 1) one per shard ConfigMap it names. The relay is handed the union of
// the shards only when it holds every shard at exactly the hash the index names, so it never
// serves half an update (a domain moving between tenants in two shards); until then it keeps the
// last consistent config. An index naming ConfigMaps other than NAME-shard-<i> is refused (the
// relay's RBAC names exactly those, and the index must not point it anywhere else).
import { tenantDigest } from '../../contract/config/hash.ts';
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
  const before = new Map(previous.tenants.map((t) => [tenantDigest(t).sha256, t]));
  let reused = 0;
  const tenants = next.tenants.map((t) => {
    const same = before.get(tenantDigest(t).sha256);
    if (same) reused++;
    return same ?? t;
  });
  return reused === 0 ? next : assembledFromVerified({ ...next, tenants });
}

/**
 * The state of one follower: the index, the shard documents held and their watchers. Each method is
 * one step: serve, try to serve the union, follow stragglers afresh, apply the index.
 */
class ShardSetFollower {
  private readonly shardDocs = new Map<string, RelayConfig>();
  private readonly shardWatchers = new Map<string, FileWatcher>();
  private index: RelayConfig | undefined;
  private waitingLogged = '';
  private straggler: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly source: string;
  private readonly refollowMs: number;
  private readonly main: FileWatcher;
  private readonly relay: ConfigTarget;
  private readonly opts: FollowOptions;

  constructor(relay: ConfigTarget, opts: FollowOptions) {
    this.relay = relay;
    this.opts = opts;
    this.source = `configmap/${opts.namespace}/${opts.name}`;
    this.refollowMs = opts.refollowAfterMs ?? 10_000;
    const indexTarget: ConfigTarget = {
      applyConfig: (config, from) => this.applyIndex(config, from),
      reportConfigError: (err, from) => relay.reportConfigError(err, from),
    };
    this.main = watchConfigMap(indexTarget, { ...opts, onApplied: undefined });
  }

  private get where(): string {
    return `${this.opts.namespace}/${this.opts.name}`;
  }

  private serve(config: RelayConfig, from: string): { ok: boolean } {
    const r = this.relay.applyConfig(config, from);
    if (r.ok) this.opts.onApplied?.(config.hash);
    return r;
  }

  private tryServe(): void {
    const index = this.index;
    if (!index?.shards) return;
    // O(tenants): the union's hash is the one the index names, and relays never read `sources`
    const m = mergeShards(index, this.shardDocs, { sources: false });
    if (!m.ok) {
      this.scheduleRefollow(m.waitingFor);
      const text = m.waitingFor.join(',');
      if (text !== this.waitingLogged) {
        this.opts.logger.info('waiting for relay config shards to match the index', {
          configmap: this.where,
          index: index.hash,
          waitingFor: m.waitingFor,
        });
        this.waitingLogged = text;
      }
      return;
    }
    this.waitingLogged = '';
    clearTimeout(this.straggler);
    this.straggler = undefined;
    // every shard was schema- and hash-verified when decoded, the index names their hashes and the union's
    this.serve(assembledFromVerified(m.config), `${this.source} (${index.shards.length} shards)`);
  }

  /**
   * A shard still missing or behind the index after refollowAfterMs is followed afresh (a new GET
   * and watch): an event lost by its watch would otherwise keep the whole set unserved until the
   * watcher's periodic re-read.
   */
  private scheduleRefollow(waitingFor: string[]): void {
    if (this.straggler || this.closed) return;
    this.straggler = setTimeout(() => {
      this.straggler = undefined;
      this.refollowStragglers(waitingFor);
    }, this.refollowMs);
    this.straggler.unref?.();
  }

  private refollowStragglers(waitingFor: string[]): void {
    if (this.closed || !this.index?.shards) return;
    const m = mergeShards(this.index, this.shardDocs, { sources: false });
    if (m.ok) return;
    this.opts.logger.warn('relay config shards still behind the index; following them afresh', {
      configmap: this.where,
      shards: m.waitingFor,
    });
    for (const shard of m.waitingFor) {
      if (!waitingFor.includes(shard)) continue;
      this.shardWatchers.get(shard)?.close();
      this.followShard(shard);
    }
    this.scheduleRefollow(m.waitingFor);
  }

  private followShard(shard: string): void {
    this.shardWatchers.set(
      shard,
      watchConfigMap(this.shardTarget(shard), { ...this.opts, name: shard, onApplied: undefined }),
    );
  }

  private closeShard(shard: string): void {
    this.shardWatchers.get(shard)?.close();
    this.shardWatchers.delete(shard);
    this.shardDocs.delete(shard);
  }

  private shardTarget(shard: string): ConfigTarget {
    return {
      applyConfig: (config) => {
        this.shardDocs.set(shard, withUnchangedTenantsOf(this.shardDocs.get(shard), config));
        this.tryServe();
        return { ok: true };
      },
      reportConfigError: (err, from) => this.relay.reportConfigError(err, from),
    };
  }

  private applyIndex(config: RelayConfig, from: string | undefined): { ok: boolean } {
    if (!config.shards) {
      // unsharded (--config-shards=1, or the operator was reinstalled without shards)
      this.index = undefined;
      for (const shard of [...this.shardWatchers.keys()]) this.closeShard(shard);
      return this.serve(config, from ?? this.source);
    }
    const name = this.opts.name;
    const foreign = config.shards.map((s) => s.configMap).filter((n) => !isShardOf(name, n));
    if (foreign.length > 0) {
      this.relay.reportConfigError(
        new Error(
          `${this.source}: the shard index names ConfigMaps that are not shards of ${name}: ${foreign.join(', ')}; only ${name}-shard-<n> are followed`,
        ),
        from,
      );
      return { ok: false };
    }
    this.index = config;
    const wanted = new Set(config.shards.map((s) => s.configMap));
    for (const shard of [...this.shardWatchers.keys()]) if (!wanted.has(shard)) this.closeShard(shard);
    for (const shard of wanted) if (!this.shardWatchers.has(shard)) this.followShard(shard);
    this.tryServe();
    return { ok: true };
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.straggler);
    this.main.close();
    for (const shard of [...this.shardWatchers.keys()]) this.closeShard(shard);
  }
}

export function followRelayConfig(relay: ConfigTarget, opts: FollowOptions): FileWatcher {
  const follower = new ShardSetFollower(relay, opts);
  return { close: () => follower.close() };
}
