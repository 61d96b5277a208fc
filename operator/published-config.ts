// What the relays serve: the ConfigMaps the operator publishes, each followed by its own
// name-pinned informer (RBAC names each of them), decoded once per resourceVersion. The config they
// hold together is the durable input from which an invalid resource's last valid version and an
// over-budget tenant's section are carried over, also across operator restarts and leader changes.

import {
  CONFIG_GZ_KEY,
  CONFIG_HASH_ANNOTATION,
  CONFIG_KEY,
  decodeRelayConfigMap,
} from '../contract/config/configmap.ts';
import { mergeShards, shardConfigMapName } from '../contract/config/shards.ts';
import type { RelayConfig } from '../contract/config/types.gen.ts';
import { MANAGED_LABELS } from '../contract/kube.ts';
import type { ConfigMap } from '../platform/kube/objects.ts';
import { sourcesOf } from './compile/compile.ts';
import { ConfigHistory } from './conditions/programmed.ts';
import type { ResilientInformer } from './kube/informer.ts';

export interface PublishedConfigOptions {
  namespace: string;
  /** --configmap: the whole config, or the shard index when sharded. */
  configMapName: string;
  shards: number;
  /** Creates the informer of one ConfigMap; `onChange` is this object's handler. */
  informer(
    name: string,
    onChange: (verb: 'add' | 'update' | 'delete', cm: ConfigMap) => void,
  ): ResilientInformer<ConfigMap>;
  /** A ConfigMap changed in a way a reconcile must look at (not the echo of our own write). */
  onChange(): void;
}

export class PublishedConfig {
  /** Sources of recently published configs by hash (Programmed looks relays' hashes up in it). */
  readonly history = new ConfigHistory(64);
  readonly informers: ReadonlyMap<string, ResilientInformer<ConfigMap>>;
  /** The documents by ConfigMap name: the shards when sharded, else the one ConfigMap. */
  readonly documentNames: string[];
  /**
   * The config relays serve. The leader tracks its own writes (a lagging watch event of an older
   * write of ours is ignored); a standby follows the ConfigMaps.
   */
  private served: RelayConfig | undefined;
  /** Hashes this process published (bounded): their watch events are not someone else's config. */
  private readonly ownHashes = new Set<string>();
  /** What we last wrote to each ConfigMap, at the resourceVersion the API server gave it. */
  private readonly ownWritten = new Map<string, { rv: string; config: RelayConfig }>();
  private readonly decoded = new Map<string, { rv: string | undefined; config: RelayConfig | undefined }>();
  private readonly o: PublishedConfigOptions;

  constructor(o: PublishedConfigOptions) {
    this.o = o;
    this.documentNames =
      o.shards > 1
        ? Array.from({ length: o.shards }, (_, i) => shardConfigMapName(o.configMapName, i))
        : [o.configMapName];
    const names = o.shards > 1 ? [o.configMapName, ...this.documentNames] : [o.configMapName];
    this.informers = new Map(
      names.map((n) => [n, o.informer(n, (verb, cm) => this.onConfigMapChange(n, verb, cm))]),
    );
  }

  /** What relays serve as far as this process knows; undefined before anything was read or written. */
  get current(): RelayConfig | undefined {
    return this.served;
  }

  /** What relays serve, read back from the stored ConfigMaps when this process has not published yet. */
  currentOrStored(): RelayConfig | undefined {
    this.served ??= this.storedPublished();
    return this.served;
  }

  /**
   * A new leader: what the previous leader published (read back from the ConfigMaps) is what
   * held-back tenants keep, not what this replica saw when it started.
   */
  forget(): void {
    this.served = undefined;
  }

  /** `config` is now served; true when its hash is new (a new generation of the relay config). */
  nowServed(config: RelayConfig): boolean {
    const isNew = this.served?.hash !== config.hash;
    if (isNew) {
      this.ownHashes.add(config.hash);
      if (this.ownHashes.size > 64) this.ownHashes.delete(this.ownHashes.values().next().value as string);
    }
    this.history.remember(config.hash, sourcesOf(config));
    this.served = config;
    return isNew;
  }

  /** The ConfigMap `name` as the cache holds it. */
  configMap(name: string): ConfigMap | undefined {
    return this.informers.get(name)?.get(name, this.o.namespace);
  }

  /**
   * What the API server stored is what we sent (checked by the caller): remember it as decoded at
   * its resourceVersion, so that our own write is not gunzipped, parsed and re-hashed when its
   * watch event comes back or the next change is planned against it.
   */
  rememberOwnWrite(name: string, rv: string, config: RelayConfig): void {
    this.ownWritten.set(name, { rv, config });
    // the decoded copy of an earlier version (or of this one, read back after a restart) is not
    // needed while this is what is stored: at 100k routes the decoded shards are tens of MB
    this.decoded.delete(name);
  }

  /** The relay config stored in ConfigMap `name`, decoded once per resourceVersion; undefined if none or tampered. */
  storedDoc(name: string): RelayConfig | undefined {
    const cm = this.configMap(name);
    const own = this.ownEcho(name, cm);
    if (own) return own;
    const rv = cm?.metadata?.resourceVersion;
    const memo = this.decoded.get(name);
    if (memo && memo.rv === rv && cm) return memo.config;
    let config: RelayConfig | undefined;
    try {
      config = cm ? decodeRelayConfigMap(cm) : undefined;
    } catch {
      config = undefined; // tampered or foreign: republished by the next reconcile
    }
    this.decoded.set(name, { rv, config });
    return config;
  }

  /** The stored documents by name (the base of the next publish plan). */
  storedDocs(): Map<string, RelayConfig> {
    return new Map(
      this.documentNames.flatMap((n) => {
        const d = this.storedDoc(n);
        return d ? [[n, d] as const] : [];
      }),
    );
  }

  /** Payload bytes of ConfigMap `name` as stored (compressed if it is). */
  storedBytes(name: string): number {
    const cm = this.configMap(name);
    const gz = cm?.binaryData?.[CONFIG_GZ_KEY];
    return gz !== undefined
      ? Buffer.from(gz, 'base64').length
      : Buffer.byteLength(cm?.data?.[CONFIG_KEY] ?? '');
  }

  /** ConfigMap `name` carries `hash` and our labels (its content was verified when decoded). */
  labelsMatch(name: string, hash: string): boolean {
    const cm = this.configMap(name);
    return (
      cm?.metadata?.annotations?.[CONFIG_HASH_ANNOTATION] === hash &&
      Object.entries(MANAGED_LABELS).every(([k, v]) => cm.metadata?.labels?.[k] === v)
    );
  }

  private ownEcho(name: string, cm: ConfigMap | undefined): RelayConfig | undefined {
    const w = this.ownWritten.get(name);
    return w && w.rv === cm?.metadata?.resourceVersion ? w.config : undefined;
  }

  private onConfigMapChange(name: string, verb: 'add' | 'update' | 'delete', cm: ConfigMap): void {
    // configs published before we started (another replica, a previous run): remember their sources
    // (a standby follows them: what they hold is the durable input of carry-over and budgets)
    if (verb !== 'delete' && name === this.o.configMapName) this.followStored(cm);
    // the echo of our own write needs no reconcile: it holds what we published
    if (verb !== 'delete' && this.ownEcho(name, cm) !== undefined) return;
    this.o.onChange();
  }

  private followStored(cm: ConfigMap): void {
    // sharded: the index names the hash of the union relays serve (no need to merge our own)
    const hash =
      this.storedDoc(this.o.configMapName)?.unionHash ?? cm.metadata?.annotations?.[CONFIG_HASH_ANNOTATION];
    if (!hash) return;
    if (this.history.has(hash) && (hash === this.served?.hash || this.ownHashes.has(hash))) return;
    const c = this.storedPublished();
    if (!c) return;
    this.history.remember(c.hash, c.sources ?? {});
    if (!this.ownHashes.has(c.hash)) this.served = c;
  }

  /** What relays serve from the stored ConfigMaps (before this process published anything). */
  private storedPublished(): RelayConfig | undefined {
    const base = this.storedDoc(this.o.configMapName);
    if (!base?.shards) return base;
    const docs = new Map<string, RelayConfig>();
    for (const r of base.shards) {
      const d = this.storedDoc(r.configMap);
      if (d) docs.set(r.configMap, d);
    }
    const m = mergeShards(base, docs);
    return m.ok ? m.config : undefined;
  }
}
