// The operator shell: informers feed caches; any relevant change marks the aggregate relay config
// dirty and queues ONE key (coalesced over a short batch window); its reconcile compiles the whole
// set from the caches (pure), publishes the ConfigMap when the hash changed (leader only), and
// queues per-object status keys whose status differs; the status controller writes them through
// /status (a merge patch with resourceVersion, status/writer.ts) and records Events on
// transitions. Relay pods and their answers to "which config do you serve" (RelayScraper) only
// re-evaluate Programmed (no recompile).

import { CONFIG_GZ_KEY, CONFIG_KEY, decodeRelayConfigMap } from '../contract/config/configmap.ts';
import { mergeShards, shardConfigMapName, shardIndex } from '../contract/config/shards.ts';
import type { RelayConfig } from '../contract/config/types.gen.ts';
import { MAILPLUS_API_VERSION, MANAGED_LABELS } from '../contract/kube.ts';
import { k8s, requestOptions } from '../platform/kube-client.ts';
import type { Logger } from '../platform/log.ts';
import type { MailRoute, TenantPolicy } from './api/types.gen.ts';
import {
  BUDGET_REASONS,
  type BudgetResult,
  DEFAULT_TENANT_BUDGETS,
  enforceTenantBudgets,
  type TenantBudgets,
} from './compile/budgets.ts';
import { captureTransitions } from './compile/capture-transitions.ts';
import { CompileCache, type CompileResult, compile } from './compile/compile.ts';
import {
  type DesiredStatus,
  desiredStatus,
  statusDiffers,
  transitions,
} from './conditions/api-conditions.ts';
import {
  ConfigHistory,
  programmedCondition,
  type RelayReport,
  withProgrammed,
} from './conditions/programmed.ts';
import type { ResourceStatus } from './conditions/resource-status.ts';
import { type Controller, type ReconcileResult, startController } from './controller/controller.ts';
import { listPaginated, ResilientInformer } from './kube/informer.ts';
import { LeaderElector } from './leader/election.ts';
import { OperatorMetrics } from './metrics.ts';
import {
  applyConfigMap,
  type ConfigPayload,
  configMapMatches,
  encodeRelayConfig,
  relayConfigMap,
} from './publish/configmap.ts';
import { planPublish } from './publish/sharded.ts';
import { relayReports, relayTargets } from './relay-reports.ts';
import { RelayScraper, type RelayScraperOptions } from './relay-scraper.ts';
import { resourceKey, resourceLabel, type Service } from './resources/types.ts';
import { EventRecorder } from './status/events.ts';
import { type MailPlusKind, type StatusTarget, writeStatus } from './status/writer.ts';

export interface OperatorOptions {
  kc: k8s.KubeConfig;
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
  /** Bursts of changes within this window compile once (default 100 ms). */
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

const [GROUP, VERSION] = MAILPLUS_API_VERSION.split('/');
type Obj = TenantPolicy | MailRoute;

function toService(s: k8s.V1Service): Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name: s.metadata?.name ?? '',
      namespace: s.metadata?.namespace,
      generation: s.metadata?.generation,
      resourceVersion: s.metadata?.resourceVersion,
    },
    spec: {
      clusterIP: s.spec?.clusterIP,
      ports: (s.spec?.ports ?? []).map((p) => ({
        name: p.name,
        port: p.port,
        protocol: p.protocol,
        targetPort: p.targetPort as number | string | undefined,
      })),
    },
  };
}

function referencedServices(routes: MailRoute[]): Set<string> {
  const out = new Set<string>();
  for (const r of routes) {
    for (const u of r.spec?.forward?.upstreams ?? []) {
      if (u.service?.name) out.add(`${r.metadata.namespace}/${u.service.name}`);
    }
  }
  return out;
}

/** Milliseconds until the earliest troubleshooting consent in the config expires, if any. */
export function nextConsentExpiryMs(config: CompileResult['config'], now: number): number | undefined {
  let next: number | undefined;
  for (const t of config.tenants) {
    if (!t.capture) continue;
    const left = Date.parse(t.capture.expiresAt) - now;
    if (left > 0 && (next === undefined || left < next)) next = left;
  }
  return next;
}

export async function startOperator(o: OperatorOptions): Promise<Operator> {
  const { kc, logger, namespace, configMapName } = o;
  const metrics = new OperatorMetrics();
  const co = kc.makeApiClient(k8s.CustomObjectsApi);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const coordination = kc.makeApiClient(k8s.CoordinationV1Api);
  const events = new EventRecorder({
    api: kc.makeApiClient(k8s.EventsV1Api),
    instance: o.identity,
    logger,
    count: (type) => metrics.eventsTotal.inc({ type }),
  });
  const fleet = `${namespace}/${configMapName}`;
  const aggregateKey = `RelayConfig/${namespace}/${configMapName}`;
  const batchMs = o.batchWindowMs ?? 100;
  const history = new ConfigHistory(64);
  const shards = o.configShards ?? 1;
  const budgets = o.tenantBudgets ?? DEFAULT_TENANT_BUDGETS;
  const docNames =
    shards > 1 ? Array.from({ length: shards }, (_, i) => shardConfigMapName(configMapName, i)) : [];

  let stopped = false;
  let inputsDirty = true;
  let last: BudgetResult | undefined;
  /** Tenant → why its shard holds it back (Programmed=False, ShardTooLarge). */
  let shardHeld = new Map<string, string>();
  let lastServices = new Set<string>();
  let configGeneration = 0;
  /** Informer objects are replaced on change, never mutated: unchanged ones are not validated or compiled again. */
  const compileCache = new CompileCache();
  /**
   * The relay config the ConfigMap holds (what relays serve): the durable input from which an
   * invalid resource's last valid version is carried over, also across operator restarts. The
   * leader tracks its own writes (a lagging watch event of an older write of ours is ignored);
   * a standby follows the ConfigMap.
   */
  let published: CompileResult['config'] | undefined;
  const ownWrites = new Set<string>();
  /** The config and time of the last capture evaluation (Events and audit lines on transitions). */
  let captureSeen: { config: CompileResult['config']; at: number } | undefined;
  let consentTimer: NodeJS.Timeout | undefined;
  /** key → what we last wrote and on which resourceVersion (skip until the cache shows it). */
  const written = new Map<string, { sig: string; basedOnRv: string | undefined }>();

  let elector: LeaderElector | undefined;
  const isLeader = () => !stopped && (elector ? elector.isLeader : true);
  const writeSignal = () => elector?.signal;

  let aggregate: Controller | undefined;
  let statusCtl: Controller | undefined;
  // nothing compiles before every informer has synced: an empty cache must never publish an empty config
  const kick = () => {
    if (informers.every((i) => i.synced)) aggregate?.queue.addAfter(aggregateKey, batchMs);
  };
  const dirty = () => {
    inputsDirty = true;
    kick();
  };
  // Our own status writes come back as updates: they change nothing the compile reads, and only
  // that object's status may need another look (a sweep over every object per status write would
  // be quadratic in objects, and a change would wait behind the sweeps of a status-write burst).
  const compiledFrom = new Map<string, string>();
  /** The cached object of each key (the one the informer holds, no copy). */
  const seen = new Map<string, Obj>();
  const onResourceChange = (kind: MailPlusKind) => (verb: 'add' | 'update' | 'delete', obj: Obj) => {
    const md = obj.metadata;
    const key = `${kind}/${md.namespace}/${md.name}`;
    const inputs = JSON.stringify([
      md.uid,
      md.generation,
      md.creationTimestamp,
      md.deletionTimestamp,
      md.labels,
      md.annotations,
    ]);
    const before = seen.get(key);
    if (verb === 'delete') seen.delete(key);
    else seen.set(key, obj);
    if (verb === 'update' && compiledFrom.get(key) === inputs) {
      if (before) compileCache.sameAs(obj, before);
      if (last) statusCtl?.queue.add(key);
      return;
    }
    if (verb === 'delete') compiledFrom.delete(key);
    else compiledFrom.set(key, inputs);
    dirty();
  };

  const common = { kc, metrics, logger, resyncMs: o.resyncMs, staleAfterMs: o.staleAfterMs };
  // A LIST on a connection that went dark after its TLS handshake would otherwise wait for the HTTP
  // client's own timeout (minutes) while the informer and its staleness check wait on it. The
  // deadline is per page: the Mail-Plus kinds and Services are listed in pages (listPaginated).
  const listDeadline = () => requestOptions({ timeoutMs: 60_000 });
  const tpInf = new ResilientInformer<TenantPolicy>({
    ...common,
    kind: 'TenantPolicy',
    path: `/apis/${GROUP}/${VERSION}/tenantpolicies`,
    list: () =>
      listPaginated((page) =>
        co.listClusterCustomObject(
          { group: GROUP, version: VERSION, plural: 'tenantpolicies', ...page },
          listDeadline(),
        ),
      ),
    onChange: onResourceChange('TenantPolicy'),
    onResync: dirty,
  });
  const mrInf = new ResilientInformer<MailRoute>({
    ...common,
    kind: 'MailRoute',
    path: `/apis/${GROUP}/${VERSION}/mailroutes`,
    list: () =>
      listPaginated((page) =>
        co.listClusterCustomObject(
          { group: GROUP, version: VERSION, plural: 'mailroutes', ...page },
          listDeadline(),
        ),
      ),
    onChange: onResourceChange('MailRoute'),
    onResync: dirty,
  });
  const svcInf = new ResilientInformer<k8s.V1Service>({
    ...common,
    kind: 'Service',
    path: '/api/v1/services',
    list: () => listPaginated((page) => core.listServiceForAllNamespaces(page, listDeadline())),
    // only Services some MailRoute names matter; the set is refreshed by each compile
    onChange: (_verb, s) => {
      if (lastServices.has(`${s.metadata?.namespace}/${s.metadata?.name}`) || !last) dirty();
    },
  });
  const scraper = new RelayScraper({ ...o.relayScrape, onChange: () => kick(), metrics, logger });
  const podInf = new ResilientInformer<k8s.V1Pod>({
    ...common,
    kind: 'Pod',
    path: `/api/v1/namespaces/${namespace}/pods`,
    labelSelector: o.relaySelector,
    list: () => core.listNamespacedPod({ namespace, labelSelector: o.relaySelector }, listDeadline()),
    // the aggregate reconcile hands the scraper the new set of targets
    onChange: kick,
  });
  // The ConfigMaps we publish, each through its own name-pinned informer (RBAC names each of them).
  const decoded = new Map<string, { rv: string | undefined; config: RelayConfig | undefined }>();
  /** What we last wrote to each ConfigMap, at the resourceVersion the API server gave it. */
  const ownWritten = new Map<string, { rv: string; config: RelayConfig }>();
  const ownEcho = (name: string, cm: k8s.V1ConfigMap | undefined): RelayConfig | undefined => {
    const w = ownWritten.get(name);
    return w && w.rv === cm?.metadata?.resourceVersion ? w.config : undefined;
  };
  const configMapInformer = (name: string) =>
    new ResilientInformer<k8s.V1ConfigMap>({
      ...common,
      kind: 'ConfigMap',
      path: `/api/v1/namespaces/${namespace}/configmaps`,
      fieldSelector: `metadata.name=${name}`,
      list: () =>
        core.listNamespacedConfigMap({ namespace, fieldSelector: `metadata.name=${name}` }, listDeadline()),
      onChange: (verb, cm) => {
        // configs published before we started (another replica, a previous run): remember their sources
        // (a standby follows them: what they hold is the durable input of carry-over and budgets)
        if (verb !== 'delete' && name === configMapName) {
          const hash = cm.metadata?.annotations?.['mailplus.io/config-hash'];
          if (hash && (!history.sources(hash) || (hash !== published?.hash && !ownWrites.has(hash)))) {
            const c = storedPublished();
            if (c) {
              history.remember(c.hash, c.sources ?? {});
              if (!ownWrites.has(c.hash)) published = c;
            }
          }
        }
        // the echo of our own write (seeded below in publish) needs no reconcile: it holds what we published
        if (verb !== 'delete' && ownEcho(name, cm) !== undefined) return;
        kick();
      },
    });
  const cmInfs = new Map([configMapName, ...docNames].map((n) => [n, configMapInformer(n)]));
  /** The relay config stored in ConfigMap `name`, decoded once per resourceVersion; undefined if none or tampered. */
  const storedDoc = (name: string): RelayConfig | undefined => {
    const cm = cmInfs.get(name)?.get(name, namespace);
    const own = ownEcho(name, cm);
    if (own) return own;
    const rv = cm?.metadata?.resourceVersion;
    const memo = decoded.get(name);
    if (memo && memo.rv === rv && cm) return memo.config;
    let config: RelayConfig | undefined;
    try {
      config = cm ? decodeRelayConfigMap(cm) : undefined;
    } catch {
      config = undefined; // tampered or foreign: republished by the next reconcile
    }
    decoded.set(name, { rv, config });
    return config;
  };
  const labelsMatch = (cm: k8s.V1ConfigMap | undefined, hash: string): boolean =>
    cm?.metadata?.annotations?.['mailplus.io/config-hash'] === hash &&
    Object.entries(MANAGED_LABELS).every(([k, v]) => cm.metadata?.labels?.[k] === v);
  const storedBytes = (name: string): number => {
    const cm = cmInfs.get(name)?.get(name, namespace);
    const gz = cm?.binaryData?.[CONFIG_GZ_KEY];
    return gz !== undefined
      ? Buffer.from(gz, 'base64').length
      : Buffer.byteLength(cm?.data?.[CONFIG_KEY] ?? '');
  };
  const storedMerged = (index: RelayConfig): RelayConfig | undefined => {
    const docs = new Map<string, RelayConfig>();
    for (const r of index.shards ?? []) {
      const d = storedDoc(r.configMap);
      if (d) docs.set(r.configMap, d);
    }
    const m = mergeShards(index, docs);
    return m.ok ? m.config : undefined;
  };
  /** What relays serve from the stored ConfigMaps (before this process published anything). */
  const storedPublished = (): RelayConfig | undefined => {
    const base = storedDoc(configMapName);
    return base?.shards ? storedMerged(base) : base;
  };
  const informers = [tpInf, mrInf, svcInf, podInf, ...cmInfs.values()];

  const reports = (): RelayReport[] =>
    relayReports(relayTargets(podInf.list(), o.relayPort), scraper.scrapes, Date.now(), scraper.maxAgeMs);
  /** The relays to ask are the ready relay pods of the cache. */
  const refreshTargets = () => scraper.setTargets(relayTargets(podInf.list(), o.relayPort));

  const objectOf = (key: string): { kind: MailPlusKind; obj: Obj | undefined } => {
    const [kind, ns, name] = key.split('/');
    const inf = kind === 'TenantPolicy' ? tpInf : mrInf;
    return { kind: kind as MailPlusKind, obj: inf.get(name, ns) as Obj | undefined };
  };

  const desiredFor = (
    key: string,
    obj: Obj,
    current: { observedGeneration?: number; conditions?: DesiredStatus['conditions'] } | undefined,
    live: RelayReport[],
  ): DesiredStatus | undefined => {
    if (!last) return undefined;
    const st: ResourceStatus | undefined = last.statuses.get(key);
    const generation = obj.metadata.generation ?? 0;
    if (!st || (st.generation ?? 0) !== generation) return undefined;
    const held = shardHeld.get(obj.metadata.namespace ?? 'default');
    const accepted = st.conditions.find((c) => c.type === 'Accepted')?.status === 'True';
    const programmed =
      held && accepted
        ? {
            type: 'Programmed' as const,
            status: 'False' as const,
            reason: BUDGET_REASONS.shardTooLarge,
            message: held,
          }
        : programmedCondition({
            key,
            generation,
            currentSources: (published ?? last.config).sources ?? {},
            live,
            history,
            fleet,
          });
    return desiredStatus(withProgrammed(st, programmed), generation, current, new Date());
  };

  const sig = (d: DesiredStatus) =>
    JSON.stringify([d.observedGeneration, d.conditions.map((c) => [c.type, c.status, c.reason, c.message])]);

  // --- the aggregate: compile, publish, sweep statuses --------------------------------------------
  const reconcileAggregate = async (): Promise<ReconcileResult> => {
    if (inputsDirty || !last) {
      inputsDirty = false;
      const started = performance.now();
      const mailRoutes = mrInf.list();
      // The clock is an input of the pure compile: troubleshooting consents hold until they expire
      // (the reconcile requeues itself for the next expiry, below).
      // what relays serve (read back from the ConfigMaps after a restart or a leader change): an
      // invalid resource's last valid version and an over-budget tenant's section stay in force
      published ??= storedPublished();
      const compiled = compile(
        {
          tenantPolicies: tpInf.list(),
          mailRoutes,
          services: svcInf.list().map(toService),
        },
        { now: Date.now(), previous: published, cache: compileCache },
      );
      const result = enforceTenantBudgets(compiled, budgets, published);
      metrics.tenantsHeldBack.set({ reason: BUDGET_REASONS.overBudget }, result.overBudget.size);
      for (const [tenant, over] of result.overBudget) {
        if (last?.overBudget.get(tenant)?.join() !== over.join())
          logger.warn('tenant over budget; its previous config stays in force', { tenant, over });
      }
      lastServices = referencedServices(mailRoutes);
      const changed = last?.config.hash !== result.config.hash;
      last = result;
      history.remember(result.config.hash, result.config.sources ?? {});
      let conflicts = 0;
      for (const s of result.statuses.values()) if (s.conflicts?.length) conflicts++;
      metrics.conflicts.set(conflicts);
      if (changed) {
        logger.info('compiled relay config', {
          hash: result.config.hash,
          tenants: result.config.tenants.length,
          resources: result.statuses.size,
          ms: Math.round(performance.now() - started),
        });
      }
    }
    const result = last as CompileResult;
    const leader = isLeader();

    const failures: string[] = [];
    if (leader) await publish(result.config, failures);

    if (leader) await reportCaptureTransitions(result.config);

    // statuses: desired vs stored, for every object (cheap; writes only where different)
    refreshTargets();
    const live = reports();
    metrics.liveRelays.set(live.length);
    metrics.relaysUnreachable.set(live.filter((r) => r.error !== undefined).length);
    const counts = new Map<string, number>();
    for (const [kind, inf] of [
      ['TenantPolicy', tpInf],
      ['MailRoute', mrInf],
    ] as const) {
      for (const s of ['True', 'False', 'Unknown']) counts.set(`${kind}|${s}`, 0);
      for (const obj of inf.list() as Obj[]) {
        const key = resourceKey(kind, obj.metadata.namespace, obj.metadata.name);
        const d = desiredFor(key, obj, obj.status, live);
        if (!d) continue;
        const ready = d.conditions.find((c) => c.type === 'Ready')?.status ?? 'Unknown';
        counts.set(`${kind}|${ready}`, (counts.get(`${kind}|${ready}`) ?? 0) + 1);
        if (leader && statusDiffers(obj.status, d)) {
          const w = written.get(key);
          if (w && w.sig === sig(d) && w.basedOnRv === obj.metadata.resourceVersion) continue;
          statusCtl?.queue.add(key);
        }
      }
    }
    for (const [k, n] of counts) {
      const [kind, status] = k.split('|');
      metrics.resources.set({ kind, condition: 'Ready', status }, n);
    }
    const consentExpiry = nextConsentExpiryMs(result.config, Date.now());
    // an expired consent changes the compile output: recompile at that moment
    clearTimeout(consentTimer);
    consentTimer =
      consentExpiry === undefined
        ? undefined
        : setTimeout(() => {
            if (!stopped) dirty();
          }, consentExpiry + 50);
    consentTimer?.unref();
    // statuses are queued for everyone first; then the failed writes are retried with backoff
    if (failures.length > 0) throw new Error(failures.join('; '));
    // answers age out (a relay's scrapes stalled): look again when the oldest could have
    return live.length > 0 ? { requeueAfterMs: scraper.maxAgeMs } : undefined;
  };

  /**
   * Publishes `config` (leader only): every document on its own, so one that fails to apply keeps
   * its stored version in force while the others go out; then, when sharded, the index naming the
   * hash of every shard as stored, so relays switch to a consistent set at once.
   */
  const publish = async (config: RelayConfig, failures: string[]): Promise<void> => {
    const plan = planPublish({
      config,
      base: configMapName,
      shards,
      previous: new Map(
        (shards > 1 ? docNames : [configMapName]).flatMap((n) => {
          const d = storedDoc(n);
          return d ? [[n, d] as const] : [];
        }),
      ),
    });
    const stored = new Map<string, RelayConfig>();
    const apply = async (name: string, doc: RelayConfig, encoded?: ConfigPayload) => {
      const have = cmInfs.get(name)?.get(name, namespace);
      // content already verified against its hash when decoded: only our labels need checking
      if (!encoded && storedDoc(name)?.hash === doc.hash && labelsMatch(have, doc.hash)) {
        metrics.configApplyTotal.inc({ result: 'unchanged' });
        return true;
      }
      const payload = encoded ?? encodeRelayConfig(doc);
      const want = relayConfigMap(namespace, name, doc, payload);
      if (configMapMatches(have, want)) {
        metrics.configApplyTotal.inc({ result: 'unchanged' });
        return true;
      }
      try {
        const stored = await applyConfigMap(core, want, writeSignal());
        // what the API server stored is what we sent (checked): remember it as decoded at its
        // resourceVersion, so that our own write is not gunzipped, parsed and re-hashed when its
        // watch event comes back or the next change is planned against it
        const rv = stored?.metadata?.resourceVersion;
        if (rv !== undefined && configMapMatches(stored, want)) ownWritten.set(name, { rv, config: doc });
      } catch (err) {
        metrics.configApplyTotal.inc({ result: 'error' });
        failures.push((err as Error).message);
        return false;
      }
      metrics.configApplyTotal.inc({ result: 'success' });
      logger.info('published relay config', {
        configmap: `${namespace}/${name}`,
        hash: doc.hash,
        bytes: payload.bytes,
        compressed: payload.compressed,
        repaired: have?.metadata?.annotations?.['mailplus.io/config-hash'] === doc.hash,
      });
      return true;
    };
    const held = new Map<string, string>();
    let largest = 0;
    for (const d of plan) {
      largest = Math.max(largest, d.payload?.bytes ?? storedBytes(d.name));
      for (const t of d.heldBack)
        held.set(
          t,
          `relay config document ${namespace}/${d.name} would be ${d.tooLargeBytes} bytes, over the ConfigMap limit: the changes of tenant ${t} are not published and its previous config stays in force; raise --config-shards (chart: operator.configShards) or lower the tenant budgets`,
        );
      if (d.tooLargeBytes !== undefined)
        logger.error(
          'relay config document over the ConfigMap limit; holding back the tenants that changed',
          {
            configmap: `${namespace}/${d.name}`,
            bytes: d.tooLargeBytes,
            heldBack: d.heldBack,
          },
        );
      if (await apply(d.name, d.config, d.payload)) stored.set(d.name, d.config);
      else {
        const before = storedDoc(d.name);
        if (before) stored.set(d.name, before);
      }
    }
    shardHeld = held;
    metrics.tenantsHeldBack.set({ reason: BUDGET_REASONS.shardTooLarge }, held.size);
    metrics.configBytes.set(largest);
    let served: RelayConfig | undefined;
    if (shards <= 1) served = stored.get(configMapName);
    else if (plan.every((d) => stored.has(d.name))) {
      const index = shardIndex(
        plan.map((d) => ({ configMap: d.name, hash: (stored.get(d.name) as RelayConfig).hash })),
      );
      // the union is the config itself unless a shard was held back or kept its stored version
      const asPlanned = held.size === 0 && plan.every((d) => stored.get(d.name)?.hash === d.config.hash);
      const union = asPlanned ? undefined : mergeShards(index, stored);
      if (await apply(configMapName, index))
        served = union === undefined ? config : union.ok ? union.config : undefined;
    }
    if (!served) return;
    if (published?.hash !== served.hash) {
      configGeneration++;
      metrics.configGeneration.set(configGeneration);
      ownWrites.add(served.hash);
      if (ownWrites.size > 64) ownWrites.delete(ownWrites.values().next().value as string);
      scraper.expect(served.hash);
    }
    history.remember(served.hash, served.sources ?? {});
    published = served;
  };

  /**
   * Consent-gated capture starting or ending is recorded where people look: a Kubernetes Event on
   * the TenantPolicy and an audit line in the operator's log (who approved it, under which consent
   * reference, until when).
   */
  const reportCaptureTransitions = async (config: CompileResult['config']): Promise<void> => {
    const now = Date.now();
    const changes = captureTransitions(captureSeen?.config, config, now, { prevNow: captureSeen?.at });
    captureSeen = { config, at: now };
    for (const c of changes) {
      logger.info('audit', {
        event: c.kind === 'started' ? 'capture started' : 'capture ended',
        tenant: c.tenant,
        reason: c.reason,
        consentId: c.consentId,
        consentReference: c.consentReference,
        approvedBy: c.approvedBy,
        expiresAt: c.expiresAt,
        maxMessages: c.maxMessages,
      });
      const policy =
        config.tenants.find((t) => t.name === c.tenant)?.policy ??
        tpInf.list().find((p) => (p.metadata.namespace ?? 'default') === c.tenant)?.metadata.name;
      const name = policy?.includes('/') ? policy.split('/')[1] : policy;
      if (!name) continue;
      const obj = tpInf.get(name, c.tenant) as Obj | undefined;
      await events.emit(
        {
          apiVersion: MAILPLUS_API_VERSION,
          kind: 'TenantPolicy',
          namespace: c.tenant,
          name,
          uid: obj?.metadata.uid,
          resourceVersion: obj?.metadata.resourceVersion,
        },
        {
          type: 'Normal',
          reason: c.kind === 'started' ? 'CaptureStarted' : 'CaptureEnded',
          note:
            c.kind === 'started'
              ? `Troubleshooting capture started under consent ${c.consentReference} approved by ${c.approvedBy}, until ${c.expiresAt}, at most ${c.maxMessages} messages`
              : `Troubleshooting capture ended (${c.reason}) for consent ${c.consentReference}`,
        },
        writeSignal(),
      );
    }
  };

  // --- one object's status ---------------------------------------------------------------------------
  const reconcileStatus = async (key: string): Promise<ReconcileResult> => {
    if (!isLeader()) return;
    const { kind, obj } = objectOf(key);
    if (!obj) {
      written.delete(key);
      return;
    }
    const live = reports();
    const d0 = desiredFor(key, obj, obj.status, live);
    if (!d0) {
      // the object moved past the last compile: recompile first
      dirty();
      return;
    }
    if (!statusDiffers(obj.status, d0)) return;
    const before = obj.status?.conditions;
    let wrote: DesiredStatus | undefined;
    let refusal = '';
    const result = await writeStatus(
      {
        api: co,
        signal: writeSignal,
        beforeWrite: o.beforeStatusWrite,
        onConflict: () => metrics.statusWritesTotal.inc({ result: 'conflict' }),
        onRefused: (message) => {
          refusal = message;
        },
      },
      {
        kind,
        namespace: obj.metadata.namespace ?? 'default',
        name: obj.metadata.name,
        generation: obj.metadata.generation ?? 0,
        resourceVersion: obj.metadata.resourceVersion,
      },
      (current) => {
        const status = (current?.status ?? obj.status) as Obj['status'];
        wrote = desiredFor(key, obj, status, live);
        return wrote;
      },
      obj as unknown as Record<string, unknown>,
    );
    if (result === 'gone') {
      metrics.statusWritesTotal.inc({ result: 'gone' });
      written.delete(key);
      return;
    }
    const regarding = {
      apiVersion: MAILPLUS_API_VERSION,
      kind,
      namespace: obj.metadata.namespace ?? 'default',
      name: obj.metadata.name,
      uid: obj.metadata.uid,
      resourceVersion: obj.metadata.resourceVersion,
    };
    if (result === 'refused' && wrote) {
      // Retrying cannot help until the object changes: remember it as handled for this
      // resourceVersion and say why where people look.
      metrics.statusWritesTotal.inc({ result: 'refused' });
      written.set(key, { sig: sig(wrote), basedOnRv: obj.metadata.resourceVersion });
      const label = resourceLabel(kind, obj.metadata.namespace, obj.metadata.name);
      logger.warn('status write refused by the API server', { resource: label, error: refusal });
      await events.emit(
        regarding,
        {
          type: 'Warning',
          reason: 'StatusRefused',
          note: `the API server refuses this object's status (${refusal.slice(0, 600)}); the stored spec fails the installed CRD schema (created under an older one?): fix the spec`,
        },
        writeSignal(),
      );
      return;
    }
    if (result === 'stale' || !wrote) {
      dirty();
      return;
    }
    metrics.statusWritesTotal.inc({ result: 'success' });
    written.set(key, { sig: sig(wrote), basedOnRv: obj.metadata.resourceVersion });
    const label = resourceLabel(kind, obj.metadata.namespace, obj.metadata.name);
    for (const t of transitions(label, before, wrote.conditions)) {
      await events.emit(regarding, t, writeSignal());
    }
  };

  // --- start ----------------------------------------------------------------------------------------
  for (const inf of informers) inf.start();
  aggregate = startController({
    name: 'relayconfig',
    workers: 1,
    reconcile: reconcileAggregate,
    metrics,
    logger,
    retry: { baseMs: 500, maxMs: 30_000 },
  });
  statusCtl = startController({
    name: 'status',
    workers: o.maxConcurrentReconciles,
    reconcile: reconcileStatus,
    metrics,
    logger,
  });

  if (o.leaderElect) {
    elector = new LeaderElector({
      api: coordination,
      namespace,
      name: o.leaseName,
      identity: o.identity,
      ...o.leaseTimings,
      logger,
      setStatus: (l) => metrics.leaderStatus.set({ name: o.leaseName }, l ? 1 : 0),
      onStartedLeading: () => {
        written.clear();
        // what the previous leader published (read back from the ConfigMaps) is what held-back
        // tenants keep, not what this replica saw when it started
        published = undefined;
        inputsDirty = true;
        kick();
      },
      onStoppedLeading: () => {
        o.onLeadershipLost?.();
      },
    });
    elector.start();
  } else {
    metrics.leaderStatus.set({ name: o.leaseName }, 1);
  }

  void (async () => {
    const ok = await Promise.all(informers.map((i) => i.waitForSync(24 * 3600_000)));
    if (stopped || !ok.every(Boolean)) return;
    logger.info('informers synced', {
      tenantPolicies: tpInf.list().length,
      mailRoutes: mrInf.list().length,
      services: svcInf.list().length,
      relayPods: podInf.list().length,
    });
    aggregate?.queue.add(aggregateKey);
  })();

  return {
    metrics,
    ready: () => informers.every((i) => i.synced),
    isLeader,
    lastCompile: () => last,
    async stop() {
      if (stopped) return;
      stopped = true;
      clearTimeout(consentTimer);
      scraper.stop();
      await elector?.stop();
      await Promise.all([aggregate?.stop(), statusCtl?.stop()]);
      await Promise.all(informers.map((i) => i.stop()));
      logger.info('operator stopped', { identity: o.identity });
    },
  };
}
