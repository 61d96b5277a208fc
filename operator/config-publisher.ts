// Publishing a compiled relay config (leader only): every document on its own, so one that fails to
// apply keeps its stored version in force while the others go out; then, when sharded, the index
// naming the hash of every shard as stored, so relays switch to a consistent set at once.
//
// A write the API server refuses for what it is (400, 413, 422: an immutable or otherwise invalid
// ConfigMap) fails the same way however often it is retried: the tenants whose changes it held
// back say so on their resources (Programmed=False, reason PublishRefused, naming the ConfigMap and
// the API server's message; a Warning Event on the TenantPolicy), and the next attempt is
// made when an input or the ConfigMap changes or at the periodic resync, not in a backoff loop.
// Other failures (API server unreachable, 403, 409, 429, 5xx) are returned to be retried with backoff.

import { CONFIG_HASH_ANNOTATION } from '../contract/config/configmap.ts';
import { sameTenant, stampUnionHash } from '../contract/config/hash.ts';
import { type SourceKeyRun, shardIndex, unionOfShards } from '../contract/config/shards.ts';
import type { RelayConfig } from '../contract/config/types.gen.ts';
import { apiStatus, type KubeClient } from '../platform/kube/client.ts';
import type { Logger } from '../platform/log.ts';
import { BUDGET_REASONS } from './compile/budgets.ts';
import type { OperatorMetrics } from './metrics.ts';
import {
  applyConfigMap,
  type ConfigPayload,
  configMapMatches,
  encodeRelayConfig,
  relayConfigMap,
} from './publish/configmap.ts';
import { type PlannedDoc, planPublish } from './publish/sharded.ts';
import type { PublishedConfig } from './published-config.ts';

/** Programmed=False reason of a tenant whose changes the API server refused to store. */
export const PUBLISH_REFUSED = 'PublishRefused';

/** Why a tenant's compiled changes are not published (its previous section stays in force). */
export interface HeldBack {
  reason: string;
  message: string;
}

export interface ConfigPublisherOptions {
  client: KubeClient;
  namespace: string;
  configMapName: string;
  shards: number;
  stored: PublishedConfig;
  metrics: OperatorMetrics;
  logger: Logger;
  /** Aborted when leadership is lost. */
  signal(): AbortSignal | undefined;
  /** A config with a new hash is served: relays are to be asked for it soon. */
  onNewConfig(hash: string): void;
}

type ApplyResult = { ok: true } | { ok: false; error: string; retryable: boolean };

/** HTTP statuses of a write that fails the same way however often it is sent again. */
const REFUSED_FOR_GOOD = new Set([400, 413, 422]);

export class ConfigPublisher {
  /** Tenant → why its changes are held back (ShardTooLarge, PublishRefused); read by status. */
  heldBack = new Map<string, HeldBack>();
  /** Relay configs published since this process started (the config_generation gauge). */
  generation = 0;
  /**
   * ConfigMap name → the write refused for good: not sent again while the document and the stored
   * ConfigMap stay the same, until the next compile (an input changed, or the periodic resync).
   */
  private readonly refusals = new Map<string, { hash: string; rv: string | undefined; error: string }>();
  private readonly o: ConfigPublisherOptions;

  constructor(o: ConfigPublisherOptions) {
    this.o = o;
  }

  /** The next compile: refused writes may be tried again. */
  forgetRefusals(): void {
    this.refusals.clear();
  }

  /**
   * Publishes `config` (`sourceRuns`: the runs its sources are made of, when the compile says);
   * returns the failures worth retrying (empty when there are none).
   */
  async publish(config: RelayConfig, sourceRuns?: ReadonlyArray<SourceKeyRun>): Promise<string[]> {
    const { stored, configMapName, shards } = this.o;
    const previous = stored.storedDocs();
    const plan = planPublish({ config, base: configMapName, shards, previous, sourceRuns });
    const written = new Map<string, RelayConfig>();
    const failures: string[] = [];
    const refused: string[] = [];
    const note = (r: ApplyResult) => {
      if (!r.ok) (r.retryable ? failures : refused).push(r.error);
      return r.ok;
    };
    const held = new Map<string, HeldBack>();
    let largest = 0;
    for (const d of plan) {
      largest = Math.max(largest, d.payload?.bytes ?? stored.storedBytes(d.name));
      this.holdBackTooLarge(d, held);
      if (note(await this.apply(d.name, d.config, d.payload))) written.set(d.name, d.config);
      else {
        const before = stored.storedDoc(d.name);
        if (before) written.set(d.name, before);
      }
    }
    this.heldBack = held;
    this.o.metrics.tenantsHeldBack.set({ reason: BUDGET_REASONS.shardTooLarge }, held.size);
    this.o.metrics.configBytes.set(largest);
    const served =
      shards <= 1
        ? written.get(configMapName)
        : await this.publishIndex(config, plan, written, held.size === 0, note);
    if (served && stored.nowServed(served)) {
      this.generation++;
      this.o.metrics.configGeneration.set(this.generation);
      this.o.onNewConfig(served.hash);
    }
    this.holdBackRefused(config, refused, held);
    return failures;
  }

  /**
   * The index naming every shard at the hash it is stored with; the config now served, or
   * undefined when a shard has no stored version yet or the index could not be written.
   */
  private async publishIndex(
    config: RelayConfig,
    plan: PlannedDoc[],
    written: Map<string, RelayConfig>,
    nothingHeld: boolean,
    note: (r: ApplyResult) => boolean,
  ): Promise<RelayConfig | undefined> {
    if (!plan.every((d) => written.has(d.name))) return undefined;
    const refs = plan.map((d) => ({ configMap: d.name, hash: (written.get(d.name) as RelayConfig).hash }));
    // the union is the config itself unless a shard was held back or kept its stored version
    const asPlanned = nothingHeld && plan.every((d) => written.get(d.name)?.hash === d.config.hash);
    const union = asPlanned
      ? { ok: true as const, config }
      : unionOfShards(refs, written, { hash: (c) => stampUnionHash(c).hash as string });
    if (!union.ok) return undefined;
    const index = shardIndex(refs, union.config.hash);
    if (!note(await this.apply(this.o.configMapName, index))) return undefined;
    return union.config;
  }

  private async apply(name: string, doc: RelayConfig, encoded?: ConfigPayload): Promise<ApplyResult> {
    const { stored, metrics, namespace } = this.o;
    const have = stored.configMap(name);
    // content already verified against its hash when decoded: only our labels need checking
    if (!encoded && stored.storedDoc(name)?.hash === doc.hash && stored.labelsMatch(name, doc.hash)) {
      // what is stored is this document: keep it, not the copy decoded from the ConfigMap
      const rv = have?.metadata?.resourceVersion;
      if (rv !== undefined) stored.rememberOwnWrite(name, rv, doc);
      metrics.configApplyTotal.inc({ result: 'unchanged' });
      return { ok: true };
    }
    const payload = encoded ?? encodeRelayConfig(doc);
    const want = relayConfigMap(namespace, name, doc, payload);
    if (configMapMatches(have, want)) {
      metrics.configApplyTotal.inc({ result: 'unchanged' });
      return { ok: true };
    }
    const storedRv = have?.metadata?.resourceVersion;
    const refusal = this.refusals.get(name);
    if (refusal?.hash === doc.hash && refusal.rv === storedRv)
      return { ok: false, error: refusal.error, retryable: false };
    try {
      const result = await applyConfigMap(this.o.client, want, this.o.signal());
      const rv = result?.metadata?.resourceVersion;
      if (rv !== undefined && configMapMatches(result, want)) stored.rememberOwnWrite(name, rv, doc);
    } catch (err) {
      metrics.configApplyTotal.inc({ result: 'error' });
      return this.failed(name, doc, storedRv, err as Error);
    }
    this.refusals.delete(name);
    metrics.configApplyTotal.inc({ result: 'success' });
    this.o.logger.info('published relay config', {
      configmap: `${namespace}/${name}`,
      hash: doc.hash,
      bytes: payload.bytes,
      compressed: payload.compressed,
      repaired: have?.metadata?.annotations?.[CONFIG_HASH_ANNOTATION] === doc.hash,
    });
    return { ok: true };
  }

  private failed(name: string, doc: RelayConfig, storedRv: string | undefined, err: Error): ApplyResult {
    if (!REFUSED_FOR_GOOD.has(apiStatus(err.cause ?? err) ?? 0))
      return { ok: false, error: err.message, retryable: true };
    this.refusals.set(name, { hash: doc.hash, rv: storedRv, error: err.message });
    this.o.logger.error('relay config refused by the API server; not retrying until something changes', {
      configmap: `${this.o.namespace}/${name}`,
      hash: doc.hash,
      error: err.message,
    });
    return { ok: false, error: err.message, retryable: false };
  }

  private holdBackTooLarge(d: PlannedDoc, held: Map<string, HeldBack>): void {
    const { namespace, logger } = this.o;
    for (const t of d.heldBack)
      held.set(t, {
        reason: BUDGET_REASONS.shardTooLarge,
        message: `relay config document ${namespace}/${d.name} would be ${d.tooLargeBytes} bytes, over the ConfigMap limit: the changes of tenant ${t} are not published and its previous config stays in force; raise --config-shards (chart: operator.configShards) or lower the tenant budgets`,
      });
    if (d.tooLargeBytes !== undefined)
      logger.error('relay config document over the ConfigMap limit; holding back the tenants that changed', {
        configmap: `${namespace}/${d.name}`,
        bytes: d.tooLargeBytes,
        heldBack: d.heldBack,
      });
  }

  /** Tenants whose section as compiled is not what relays serve, because a write was refused for good. */
  private holdBackRefused(config: RelayConfig, refused: string[], held: Map<string, HeldBack>): void {
    const { metrics, stored } = this.o;
    let count = 0;
    if (refused.length > 0) {
      const serving = new Map((stored.current?.tenants ?? []).map((t) => [t.name, t]));
      for (const t of config.tenants) {
        const now = serving.get(t.name);
        if (held.has(t.name) || (now && sameTenant(now, t))) continue;
        held.set(t.name, {
          reason: PUBLISH_REFUSED,
          message: `the API server refuses the relay config: ${refused.join('; ')}; the changes of tenant ${t.name} are not published and its previous config stays in force. Retrying cannot help: fix what the API server names (an immutable or foreign ConfigMap can be deleted, the operator recreates it)`,
        });
        count++;
      }
    }
    metrics.tenantsHeldBack.set({ reason: PUBLISH_REFUSED }, count);
  }
}
