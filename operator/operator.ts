// The operator shell: informers feed caches (watched-resources.ts); any relevant change marks the
// aggregate relay config dirty and queues ONE key (at most one start per batch window); its
// reconcile (relay-config-reconciler.ts) compiles the whole set from the caches (pure), publishes
// the ConfigMaps when a hash changed (leader only, config-publisher.ts), and queues per-object
// status keys whose status differs; the status controller (status-reconciler.ts) writes them
// through /status (a merge patch with resourceVersion, status/writer.ts) and records Events on
// transitions. Relay pods and their answers to "which config do you serve" (RelayScraper) only
// re-evaluate Programmed (no recompile).

import type { KubeClient } from '../platform/kube/client.ts';
import type { Logger } from '../platform/log.ts';
import { DEFAULT_TENANT_BUDGETS, type TenantBudgets } from './compile/budgets.ts';
import { CompileCache, type CompileResult } from './compile/compile.ts';
import { ConfigPublisher } from './config-publisher.ts';
import { BatchWindow } from './controller/batch-window.ts';
import { type Controller, startController } from './controller/controller.ts';
import type { InformerLifecycle } from './kube/informer.ts';
import { LeaderElector } from './leader/election.ts';
import { MemoryAfterBurst } from './memory-after-burst.ts';
import { OperatorMetrics } from './metrics.ts';
import { PublishedConfig } from './published-config.ts';
import { RelayConfigReconciler } from './relay-config-reconciler.ts';
import { relayReports, relayTargets } from './relay-reports.ts';
import { RelayScraper, type RelayScraperOptions } from './relay-scraper.ts';
import { EventRecorder } from './status/events.ts';
import type { StatusTarget } from './status/writer.ts';
import { StatusReconciler } from './status-reconciler.ts';
import { WatchedResources } from './watched-resources.ts';

export interface OperatorOptions {
  client: KubeClient;
  /** The operator's namespace: ConfigMap, leader Lease, relay pods. */
  namespace: string;
  configMapName: string;
  /**
   * 1 (default): the whole relay config in configMapName. N > 1: tenants spread over N shard
   * ConfigMaps (configMapName-shard-i) by a stable hash of their name, and configMapName holds the
   * index naming each shard's hash. Fixed at install time (relay RBAC names every shard).
   */
  configShards?: number;
  /** Per-tenant budgets (defaults: DEFAULT_TENANT_BUDGETS). */
  tenantBudgets?: TenantBudgets;
  identity: string;
  leaderElect: boolean;
  leaseName: string;
  /** Label selector of the relay pods (in `namespace`). */
  relaySelector: string;
  /** The relays' admin port: a container port name or a number. */
  relayPort: string | number;
  /** Tuning of the relay /config requests (tests). */
  relayScrape?: Omit<RelayScraperOptions, 'onChange' | 'metrics' | 'logger'>;
  resyncMs: number;
  maxConcurrentReconciles: number;
  /** At most one relay-config reconcile starts per window (default 100 ms): bursts coalesce, a lone change waits for nothing. */
  batchWindowMs?: number;
  logger: Logger;
  /** Leadership lost: the CLI exits non-zero (fail-stop). */
  onLeadershipLost?(): void;
  leaseTimings?: { leaseDurationSeconds: number; renewDeadlineMs: number; retryPeriodMs: number };
  staleAfterMs?: number;
  /** Tests: runs before every status write attempt (inject a concurrent writer). */
  beforeStatusWrite?(target: StatusTarget, attempt: number): Promise<void>;
}

export interface Operator {
  readonly metrics: OperatorMetrics;
  ready(): boolean;
  isLeader(): boolean;
  /** The last compile (tests, debugging). */
  lastCompile(): CompileResult | undefined;
  stop(): Promise<void>;
}

/** The parts of a running operator and how they reach each other. */
class OperatorParts {
  readonly metrics = new OperatorMetrics();
  readonly compileCache = new CompileCache();
  readonly resources: WatchedResources;
  readonly published: PublishedConfig;
  readonly scraper: RelayScraper;
  readonly publisher: ConfigPublisher;
  readonly statuses: StatusReconciler;
  readonly relayConfig: RelayConfigReconciler;
  /** Every informer: nothing compiles before all have synced. */
  readonly informers: InformerLifecycle[];
  elector: LeaderElector | undefined;
  aggregate: Controller | undefined;
  statusController: Controller | undefined;
  stopped = false;
  /** The one key of the relay-config reconcile. */
  readonly aggregateKey: string;
  /** When a change queues that key (controller/batch-window.ts). */
  readonly batch: BatchWindow;
  private readonly o: OperatorOptions;

  constructor(o: OperatorOptions) {
    this.o = o;
    const { client, logger, namespace, configMapName } = o;
    const metrics = this.metrics;
    this.aggregateKey = `RelayConfig/${namespace}/${configMapName}`;
    this.batch = new BatchWindow(o.batchWindowMs ?? 100);
    const events = new EventRecorder({
      client,
      instance: o.identity,
      logger,
      count: (type) => metrics.eventsTotal.inc({ type }),
    });
    this.resources = new WatchedResources({
      ...o,
      metrics,
      compileCache: this.compileCache,
      onInputChange: () => this.requestCompile(),
      onStatusChange: (key, obj) => {
        if (this.relayConfig.last && this.statuses.statusChanged(key, obj))
          this.statusController?.queue.add(key);
      },
      onRelayChange: () => this.kick(),
      onObjectChange: (key, before) => this.statuses?.touched(key, before),
    });
    this.published = new PublishedConfig({
      namespace,
      configMapName,
      shards: o.configShards ?? 1,
      informer: (name, onChange) => this.resources.configMapInformer(name, onChange),
      onChange: () => this.kick(),
    });
    this.scraper = new RelayScraper({ ...o.relayScrape, onChange: () => this.kick(), metrics, logger });
    this.publisher = new ConfigPublisher({
      client,
      namespace,
      configMapName,
      shards: o.configShards ?? 1,
      stored: this.published,
      metrics,
      logger,
      signal: () => this.elector?.signal,
      onNewConfig: (hash) => this.scraper.expect(hash),
    });
    this.statuses = this.statusReconciler(events);
    this.relayConfig = this.relayConfigReconciler(events);
    this.informers = [...this.resources.informers, ...this.published.informers.values()];
  }

  private relayConfigReconciler(events: EventRecorder): RelayConfigReconciler {
    const { o, metrics } = this;
    return new RelayConfigReconciler({
      resources: this.resources,
      published: this.published,
      publisher: this.publisher,
      statuses: this.statuses,
      scraper: this.scraper,
      compileCache: this.compileCache,
      // sharded, relays verify the shards and take the whole config's hash from the index
      configHash: (o.configShards ?? 1) > 1 ? 'union' : 'document',
      metrics,
      events,
      budgets: o.tenantBudgets ?? DEFAULT_TENANT_BUDGETS,
      logger: o.logger,
      isLeader: () => this.isLeader(),
      signal: () => this.elector?.signal,
      reports: () => this.reports(),
      refreshTargets: () =>
        this.scraper.setTargets(relayTargets(this.resources.relayPods.list(), o.relayPort)),
      enqueueStatus: (key) => this.statusController?.queue.add(key),
      requestCompile: () => this.requestCompile(),
    });
  }

  isLeader(): boolean {
    return !this.stopped && (this.elector ? this.elector.isLeader : true);
  }

  /**
   * Queues the aggregate reconcile, at once or at the end of the batch window its last start
   * opened; nothing before every informer has synced (an empty cache must never publish an empty
   * config).
   */
  kick(): void {
    if (this.informers.every((i) => i.synced))
      this.aggregate?.queue.addAfter(this.aggregateKey, this.batch.delay());
  }

  requestCompile(): void {
    this.relayConfig.inputsDirty = true;
    this.kick();
  }

  reports() {
    const { scraper } = this;
    return relayReports(
      relayTargets(this.resources.relayPods.list(), this.o.relayPort),
      scraper.scrapes,
      Date.now(),
      scraper.maxAgeMs,
    );
  }

  private statusReconciler(events: EventRecorder): StatusReconciler {
    const { o } = this;
    return new StatusReconciler({
      client: o.client,
      resources: this.resources,
      events,
      metrics: this.metrics,
      logger: o.logger,
      beforeStatusWrite: o.beforeStatusWrite,
      isLeader: () => this.isLeader(),
      signal: () => this.elector?.signal,
      requestCompile: () => this.requestCompile(),
      inputs: {
        compiled: () => this.relayConfig.last,
        served: () => this.published.current,
        heldBack: () => this.publisher.heldBack,
        history: this.published.history,
        fleet: `${o.namespace}/${o.configMapName}`,
        reports: () => this.reports(),
      },
    });
  }
}

function startLeaderElection(parts: OperatorParts, o: OperatorOptions): void {
  const { metrics } = parts;
  if (!o.leaderElect) {
    metrics.leaderStatus.set({ name: o.leaseName }, 1);
    return;
  }
  parts.elector = new LeaderElector({
    client: o.client,
    namespace: o.namespace,
    name: o.leaseName,
    identity: o.identity,
    ...o.leaseTimings,
    logger: o.logger,
    setStatus: (l) => metrics.leaderStatus.set({ name: o.leaseName }, l ? 1 : 0),
    onStartedLeading: () => {
      parts.statuses.forgetWrites();
      // what the previous leader published (read back from the ConfigMaps) is what held-back
      // tenants keep, not what this replica saw when it started
      parts.published.forget();
      parts.requestCompile();
    },
    onStoppedLeading: () => {
      o.onLeadershipLost?.();
    },
  });
  parts.elector.start();
}

/** The first reconcile, once every informer has listed. */
async function reconcileWhenSynced(parts: OperatorParts, o: OperatorOptions): Promise<void> {
  const { informers, resources } = parts;
  const ok = await Promise.all(informers.map((i) => i.waitForSync(24 * 3600_000)));
  if (parts.stopped || !ok.every(Boolean)) return;
  o.logger.info('informers synced', {
    tenantPolicies: resources.tenantPolicies.list().length,
    mailRoutes: resources.mailRoutes.list().length,
    services: resources.services.list().length,
    relayPods: resources.relayPods.list().length,
  });
  parts.aggregate?.queue.add(parts.aggregateKey);
}

export async function startOperator(o: OperatorOptions): Promise<Operator> {
  const parts = new OperatorParts(o);
  const { metrics } = parts;
  const { logger } = o;
  const informers = parts.informers;
  for (const inf of informers) inf.start();
  parts.aggregate = startController({
    name: 'relayconfig',
    workers: 1,
    reconcile: () => {
      parts.batch.started();
      return parts.relayConfig.reconcile();
    },
    metrics,
    logger,
    retry: { baseMs: 500, maxMs: 30_000 },
  });
  const afterBurst = new MemoryAfterBurst({ logger });
  parts.statusController = startController({
    name: 'status',
    workers: o.maxConcurrentReconciles,
    reconcile: (key) => parts.statuses.reconcile(key),
    metrics,
    logger,
    onDrained: (n) => afterBurst.drained(n),
  });
  startLeaderElection(parts, o);
  void reconcileWhenSynced(parts, o);

  return {
    metrics,
    ready: () => informers.every((i) => i.synced),
    isLeader: () => parts.isLeader(),
    lastCompile: () => parts.relayConfig.last,
    async stop() {
      if (parts.stopped) return;
      parts.stopped = true;
      parts.relayConfig.stop();
      parts.scraper.stop();
      await parts.elector?.stop();
      await Promise.all([parts.aggregate?.stop(), parts.statusController?.stop()]);
      await Promise.all(informers.map((i) => i.stop()));
      logger.info('operator stopped', { identity: o.identity });
    },
  };
}
