// The operator's Prometheus metrics: controller-runtime's names (so its dashboards and alerts
// apply), informer health, and the operator's own. One Registry per operator instance (no
// prom-client global registry): two operators can run in one process (tests).
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { WorkQueueMetrics } from './controller/workqueue.ts';

// controller-runtime's buckets: reconcile 5 ms … 60 s; workqueue 10^-8 … 10^3 s.
const RECONCILE_BUCKETS = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.25, 1.5,
  1.75, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 60,
];
const WORKQUEUE_BUCKETS = [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100, 1000];

type InProgressMap = Map<string, () => { unfinishedSeconds: number; longestSeconds: number }>;

/** controller-runtime's reconcile series, per controller. */
function controllerRuntimeMetrics(registers: Registry[]) {
  return {
    reconcileTotal: new Counter({
      name: 'controller_runtime_reconcile_total',
      help: 'Total number of reconciliations per controller',
      labelNames: ['controller', 'result'],
      registers,
    }),
    reconcileErrorsTotal: new Counter({
      name: 'controller_runtime_reconcile_errors_total',
      help: 'Total number of reconciliation errors per controller',
      labelNames: ['controller'],
      registers,
    }),
    reconcileTime: new Histogram({
      name: 'controller_runtime_reconcile_time_seconds',
      help: 'Length of time per reconciliation per controller',
      labelNames: ['controller'],
      buckets: RECONCILE_BUCKETS,
      registers,
    }),
    maxConcurrentReconciles: new Gauge({
      name: 'controller_runtime_max_concurrent_reconciles',
      help: 'Maximum number of concurrent reconciles per controller',
      labelNames: ['controller'],
      registers,
    }),
    activeWorkers: new Gauge({
      name: 'controller_runtime_active_workers',
      help: 'Number of currently used workers per controller',
      labelNames: ['controller'],
      registers,
    }),
  };
}

/** client-go's workqueue series, per queue; the in-progress gauges are read at scrape time. */
function workqueueMetrics(registers: Registry[], inProgress: InProgressMap) {
  return {
    workqueueDepth: new Gauge({
      name: 'workqueue_depth',
      help: 'Current depth of workqueue',
      labelNames: ['name'],
      registers,
    }),
    workqueueAdds: new Counter({
      name: 'workqueue_adds_total',
      help: 'Total number of adds handled by workqueue',
      labelNames: ['name'],
      registers,
    }),
    workqueueRetries: new Counter({
      name: 'workqueue_retries_total',
      help: 'Total number of retries handled by workqueue',
      labelNames: ['name'],
      registers,
    }),
    workqueueQueueDuration: new Histogram({
      name: 'workqueue_queue_duration_seconds',
      help: 'How long in seconds an item stays in workqueue before being requested',
      labelNames: ['name'],
      buckets: WORKQUEUE_BUCKETS,
      registers,
    }),
    workqueueWorkDuration: new Histogram({
      name: 'workqueue_work_duration_seconds',
      help: 'How long in seconds processing an item from workqueue takes',
      labelNames: ['name'],
      buckets: WORKQUEUE_BUCKETS,
      registers,
    }),
    workqueueUnfinished: new Gauge({
      name: 'workqueue_unfinished_work_seconds',
      help: "How many seconds of work has been done that is in progress and hasn't been observed by work_duration. Large values indicate stuck threads.",
      labelNames: ['name'],
      registers,
      collect() {
        for (const [name, f] of inProgress) this.set({ name }, f().unfinishedSeconds);
      },
    }),
    workqueueLongest: new Gauge({
      name: 'workqueue_longest_running_processor_seconds',
      help: 'How many seconds has the longest running processor for workqueue been running.',
      labelNames: ['name'],
      registers,
      collect() {
        for (const [name, f] of inProgress) this.set({ name }, f().longestSeconds);
      },
    }),
  };
}

/** client-go's leader-election gauge. */
function leaderMetrics(registers: Registry[]) {
  return {
    leaderStatus: new Gauge({
      name: 'leader_election_master_status',
      help: 'Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master.',
      labelNames: ['name'],
      registers,
    }),
  };
}

/** Informer health: restarts, relists, errors and how current each cache is. */
function informerMetrics(registers: Registry[]) {
  const p = 'mailplus_operator_';
  return {
    informerRestarts: new Counter({
      name: `${p}informer_restarts_total`,
      help: 'Informer restarts after a watch or list error (with backoff) or a staleness recreate',
      labelNames: ['kind'],
      registers,
    }),
    informerRelists: new Counter({
      name: `${p}informer_relists_total`,
      help: 'Full LISTs made by informers (initial sync, 410 Gone, restarts, watchdog checks)',
      labelNames: ['kind'],
      registers,
    }),
    informerLastEvent: new Gauge({
      name: `${p}informer_last_event_timestamp_seconds`,
      help: 'Unix time of the last add/update/delete an informer delivered',
      labelNames: ['kind'],
      registers,
    }),
    informerSynced: new Gauge({
      name: `${p}informer_synced`,
      help: '1 once the informer has listed successfully (its cache is usable), else 0',
      labelNames: ['kind'],
      registers,
    }),
    informerLastSync: new Gauge({
      name: `${p}informer_last_sync_timestamp_seconds`,
      help: 'Unix time an informer last knew its cache current (LIST answered, event delivered, staleness check passed)',
      labelNames: ['kind'],
      registers,
    }),
    informerErrors: new Counter({
      name: `${p}informer_errors_total`,
      help: 'Failed LISTs and watches of an informer (API server unreachable, HTTP errors; 410 Gone is a relist, not an error)',
      labelNames: ['kind'],
      registers,
    }),
  };
}

/** The Mail-Plus resources as compiled: their Ready status and lost claims. */
function resourceMetrics(registers: Registry[]) {
  const p = 'mailplus_operator_';
  return {
    resources: new Gauge({
      name: `${p}resources`,
      help: 'Mail-Plus resources by kind and Ready condition status',
      labelNames: ['kind', 'condition', 'status'],
      registers,
    }),
    conflicts: new Gauge({
      name: `${p}conflicts`,
      help: 'Resources that lose a domain claim or recipient pattern to another resource',
      registers,
    }),
  };
}

/** Publishing the relay config: generations, ConfigMap writes and sizes, held-back tenants. */
function publishMetrics(registers: Registry[]) {
  const p = 'mailplus_operator_';
  return {
    configGeneration: new Gauge({
      name: `${p}config_generation`,
      help: 'Relay configs published by this operator since it started (increments on every new hash)',
      registers,
    }),
    configApplyTotal: new Counter({
      name: `${p}config_apply_total`,
      help: 'Writes of the relay-config ConfigMap (result: success | error | unchanged)',
      labelNames: ['result'],
      registers,
    }),
    configBytes: new Gauge({
      name: `${p}config_bytes`,
      help: 'Size of the published relay config payload in the ConfigMap (after compression if any); with --config-shards > 1 the largest shard',
      registers,
    }),
    tenantsHeldBack: new Gauge({
      name: `${p}tenants_held_back`,
      help: 'Tenants whose compiled config is not published, their previous config staying in force (reason: TenantBudgetExceeded | ShardTooLarge | PublishRefused)',
      labelNames: ['reason'],
      registers,
    }),
  };
}

/** The relay fleet as the operator sees it through GET /config. */
function relayMetrics(registers: Registry[]) {
  const p = 'mailplus_operator_';
  return {
    liveRelays: new Gauge({
      name: `${p}live_relays`,
      help: 'Ready relay pods matching the relay selector (the relays Programmed waits for)',
      registers,
    }),
    relaysUnreachable: new Gauge({
      name: `${p}relays_unreachable`,
      help: 'Ready relay pods whose admin /config the operator could not read on its last attempt',
      registers,
    }),
    relayScrapesTotal: new Counter({
      name: `${p}relay_scrapes_total`,
      help: "Requests for a relay pod's served config hash, GET /config (result: success | error)",
      labelNames: ['result'],
      registers,
    }),
  };
}

/** Status writes and Events. */
function statusMetrics(registers: Registry[]) {
  const p = 'mailplus_operator_';
  return {
    statusWritesTotal: new Counter({
      name: `${p}status_writes_total`,
      help: 'Status subresource writes (result: success | conflict | gone | refused | error)',
      labelNames: ['result'],
      registers,
    }),
    statusEvaluationsTotal: new Counter({
      name: `${p}status_evaluations_total`,
      help: 'Objects whose desired status a sweep computed afresh (the others had nothing it reads changed)',
      registers,
    }),
    eventsTotal: new Counter({
      name: `${p}events_total`,
      help: 'Kubernetes Events emitted (type: Normal | Warning | suppressed)',
      labelNames: ['type'],
      registers,
    }),
  };
}

/** Every series, by concern (the class below exposes them as its fields). */
function operatorMetrics(registers: Registry[], inProgress: InProgressMap) {
  return {
    ...controllerRuntimeMetrics(registers),
    ...workqueueMetrics(registers, inProgress),
    ...leaderMetrics(registers),
    ...informerMetrics(registers),
    ...resourceMetrics(registers),
    ...publishMetrics(registers),
    ...relayMetrics(registers),
    ...statusMetrics(registers),
  };
}

export class OperatorMetrics implements ReturnType<typeof operatorMetrics> {
  readonly registry = new Registry();
  declare readonly reconcileTotal: Counter<'controller' | 'result'>;
  declare readonly reconcileErrorsTotal: Counter<'controller'>;
  declare readonly reconcileTime: Histogram<'controller'>;
  declare readonly maxConcurrentReconciles: Gauge<'controller'>;
  declare readonly activeWorkers: Gauge<'controller'>;
  declare readonly workqueueDepth: Gauge<'name'>;
  declare readonly workqueueAdds: Counter<'name'>;
  declare readonly workqueueRetries: Counter<'name'>;
  declare readonly workqueueQueueDuration: Histogram<'name'>;
  declare readonly workqueueWorkDuration: Histogram<'name'>;
  declare readonly workqueueUnfinished: Gauge<'name'>;
  declare readonly workqueueLongest: Gauge<'name'>;
  declare readonly leaderStatus: Gauge<'name'>;
  declare readonly informerRestarts: Counter<'kind'>;
  declare readonly informerRelists: Counter<'kind'>;
  declare readonly informerLastEvent: Gauge<'kind'>;
  declare readonly informerSynced: Gauge<'kind'>;
  declare readonly informerLastSync: Gauge<'kind'>;
  declare readonly informerErrors: Counter<'kind'>;
  declare readonly resources: Gauge<'kind' | 'condition' | 'status'>;
  declare readonly conflicts: Gauge<string>;
  declare readonly configGeneration: Gauge<string>;
  declare readonly configApplyTotal: Counter<'result'>;
  declare readonly configBytes: Gauge<string>;
  declare readonly tenantsHeldBack: Gauge<'reason'>;
  declare readonly liveRelays: Gauge<string>;
  declare readonly relaysUnreachable: Gauge<string>;
  declare readonly relayScrapesTotal: Counter<'result'>;
  declare readonly statusWritesTotal: Counter<'result'>;
  declare readonly statusEvaluationsTotal: Counter;
  declare readonly eventsTotal: Counter<'type'>;
  private readonly inProgress: InProgressMap = new Map();

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    Object.assign(this, operatorMetrics([this.registry], this.inProgress));
  }

  /** Hooks a named work queue into the workqueue_* series. */
  workQueueMetrics(name: string): WorkQueueMetrics {
    return {
      depth: (n) => this.workqueueDepth.set({ name }, n),
      add: () => this.workqueueAdds.inc({ name }),
      retry: () => this.workqueueRetries.inc({ name }),
      queueDuration: (s) => this.workqueueQueueDuration.observe({ name }, s),
      workDuration: (s) => this.workqueueWorkDuration.observe({ name }, s),
    };
  }

  trackInProgress(name: string, f: () => { unfinishedSeconds: number; longestSeconds: number }): void {
    this.inProgress.set(name, f);
    this.workqueueDepth.set({ name }, 0);
  }
}
