// The operator shell: informers feed caches; any relevant change marks the aggregate relay config
// dirty and queues ONE key (coalesced over a short batch window); its reconcile compiles the whole
// set from the caches (pure), publishes the ConfigMap when the hash changed (leader only), and
// queues per-object status keys whose status differs; the status controller writes them through
// /status (SSA) and records Events on transitions. Relay pods and their answers to "which config
// do you serve" (RelayScraper) only re-evaluate Programmed (no recompile).

import { decodeRelayConfigMap } from '../relay/config-configmap-watch.ts';
import type { Logger } from '../relay/observability/log.ts';
import type { MailRoute, TenantPolicy } from './api/types.gen.ts';
import { captureTransitions } from './compile/capture-transitions.ts';
import { type CompileResult, compile } from './compile/compile.ts';
import {
  ConfigHistory,
  programmedCondition,
  type RelayReport,
  withProgrammed,
} from './compile/programmed.ts';
import type { ResourceStatus } from './compile/status.ts';
import { type Controller, type ReconcileResult, startController } from './controller/controller.ts';
import { k8s, requestOptions } from './kube/client.ts';
import { ResilientInformer } from './kube/informer.ts';
import { LeaderElector } from './leader/election.ts';
import { OperatorMetrics } from './metrics.ts';
import {
  applyConfigMap,
  CONFIGMAP_LIMIT,
  configMapMatches,
  encodeRelayConfig,
  relayConfigMap,
} from './publish/configmap.ts';
import { relayReports, relayTargets } from './relay-reports.ts';
import { RelayScraper, type RelayScraperOptions } from './relay-scraper.ts';
import { MAILPLUS_API_VERSION } from './resources/load.ts';
import { resourceKey, resourceLabel, type Service } from './resources/types.ts';
import { type DesiredStatus, desiredStatus, statusDiffers, transitions } from './status/conditions.ts';
import { EventRecorder } from './status/events.ts';
import { type MailPlusKind, type StatusTarget, writeStatus } from './status/writer.ts';

export interface OperatorOptions {
  kc: k8s.KubeConfig;
  /** The operator's namespace: ConfigMap, leader Lease, relay pods. */
  namespace: string;
  configMapName: string;
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

  let stopped = false;
  let inputsDirty = true;
  let last: CompileResult | undefined;
  let lastServices = new Set<string>();
  let configGeneration = 0;
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

  const common = { kc, metrics, logger, resyncMs: o.resyncMs, staleAfterMs: o.staleAfterMs };
  // A LIST on a connection that went dark after its TLS handshake would otherwise wait for the HTTP
  // client's own timeout (minutes) while the informer and its staleness check wait on it.
  const listDeadline = () => requestOptions({ timeoutMs: 60_000 });
  const tpInf = new ResilientInformer<TenantPolicy>({
    ...common,
    kind: 'TenantPolicy',
    path: `/apis/${GROUP}/${VERSION}/tenantpolicies`,
    list: () =>
      co.listClusterCustomObject(
        { group: GROUP, version: VERSION, plural: 'tenantpolicies' },
        listDeadline(),
      ),
    onChange: dirty,
    onResync: dirty,
  });
  const mrInf = new ResilientInformer<MailRoute>({
    ...common,
    kind: 'MailRoute',
    path: `/apis/${GROUP}/${VERSION}/mailroutes`,
    list: () =>
      co.listClusterCustomObject({ group: GROUP, version: VERSION, plural: 'mailroutes' }, listDeadline()),
    onChange: dirty,
    onResync: dirty,
  });
  const svcInf = new ResilientInformer<k8s.V1Service>({
    ...common,
    kind: 'Service',
    path: '/api/v1/services',
    list: () => core.listServiceForAllNamespaces({}, listDeadline()),
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
  const cmInf = new ResilientInformer<k8s.V1ConfigMap>({
    ...common,
    kind: 'ConfigMap',
    path: `/api/v1/namespaces/${namespace}/configmaps`,
    fieldSelector: `metadata.name=${configMapName}`,
    list: () =>
      core.listNamespacedConfigMap(
        { namespace, fieldSelector: `metadata.name=${configMapName}` },
        listDeadline(),
      ),
    onChange: (verb, cm) => {
      // configs published before we started (another replica, a previous run): remember their sources
      if (verb !== 'delete') {
        const hash = cm.metadata?.annotations?.['mailplus.io/config-hash'];
        if (hash && (!history.sources(hash) || (hash !== published?.hash && !ownWrites.has(hash)))) {
          try {
            const c = decodeRelayConfigMap(cm);
            history.remember(c.hash, c.sources ?? {});
            if (!ownWrites.has(c.hash)) published = c;
          } catch {
            // tampered or foreign: republished below
          }
        }
      }
      kick();
    },
  });
  const informers = [tpInf, mrInf, svcInf, podInf, cmInf];

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
    const programmed = programmedCondition({
      key,
      generation,
      currentSources: last.config.sources ?? {},
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
      const result = compile(
        {
          tenantPolicies: tpInf.list(),
          mailRoutes,
          services: svcInf.list().map(toService),
        },
        { now: Date.now(), previous: published },
      );
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

    if (leader) {
      const payload = encodeRelayConfig(result.config);
      const want = relayConfigMap(namespace, configMapName, result.config, payload);
      const have = cmInf.get(configMapName, namespace);
      if (!configMapMatches(have, want)) {
        if (payload.bytes > CONFIGMAP_LIMIT - 16 * 1024) {
          metrics.configApplyTotal.inc({ result: 'error' });
          throw new Error(
            `relay config is ${payload.bytes} bytes${payload.compressed ? ' gzip-compressed' : ''}, over the ConfigMap limit of ${CONFIGMAP_LIMIT}; reduce the number of MailRoutes or split the fleet`,
          );
        }
        try {
          await applyConfigMap(core, want, writeSignal());
        } catch (err) {
          metrics.configApplyTotal.inc({ result: 'error' });
          throw err;
        }
        published = result.config;
        ownWrites.add(result.config.hash);
        if (ownWrites.size > 64) ownWrites.delete(ownWrites.values().next().value as string);
        configGeneration++;
        scraper.expect(result.config.hash);
        metrics.configApplyTotal.inc({ result: 'success' });
        metrics.configGeneration.set(configGeneration);
        metrics.configBytes.set(payload.bytes);
        logger.info('published relay config', {
          configmap: fleet,
          hash: result.config.hash,
          bytes: payload.bytes,
          compressed: payload.compressed,
          repaired:
            have !== undefined &&
            have.metadata?.annotations?.['mailplus.io/config-hash'] === result.config.hash,
        });
      } else {
        published = result.config;
        metrics.configApplyTotal.inc({ result: 'unchanged' });
        metrics.configBytes.set(payload.bytes);
      }
    }

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
    // answers age out (a relay's scrapes stalled): look again when the oldest could have
    return live.length > 0 ? { requeueAfterMs: scraper.maxAgeMs } : undefined;
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
    const result = await writeStatus(
      {
        api: co,
        signal: writeSignal,
        beforeWrite: o.beforeStatusWrite,
        onConflict: () => metrics.statusWritesTotal.inc({ result: 'conflict' }),
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
    if (result === 'stale' || !wrote) {
      dirty();
      return;
    }
    metrics.statusWritesTotal.inc({ result: 'success' });
    written.set(key, { sig: sig(wrote), basedOnRv: obj.metadata.resourceVersion });
    const label = resourceLabel(kind, obj.metadata.namespace, obj.metadata.name);
    for (const t of transitions(label, before, wrote.conditions)) {
      await events.emit(
        {
          apiVersion: MAILPLUS_API_VERSION,
          kind,
          namespace: obj.metadata.namespace ?? 'default',
          name: obj.metadata.name,
          uid: obj.metadata.uid,
          resourceVersion: obj.metadata.resourceVersion,
        },
        t,
        writeSignal(),
      );
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
