// The aggregate reconcile, one key for the whole fleet: compile every resource from the caches when
// an input changed (pure), publish the result (leader only), record capture starting or ending,
// sweep every object's status (queueing the ones that differ), and schedule a recompile at the
// next consent expiry. Failures worth retrying are thrown after the sweep (the work queue retries
// with backoff); refusals retrying cannot fix are conditions on the resources concerned instead
// (config-publisher.ts).

import { MAILPLUS_API_VERSION } from '../contract/kube.ts';
import type { Logger } from '../platform/log.ts';
import type { TenantPolicy } from './api/types.gen.ts';
import {
  BUDGET_REASONS,
  type BudgetResult,
  enforceTenantBudgets,
  type TenantBudgets,
} from './compile/budgets.ts';
import { captureTransitions } from './compile/capture-transitions.ts';
import { type CompileCache, type CompileResult, compile, sourcesOf } from './compile/compile.ts';
import type { Transition } from './conditions/api-conditions.ts';
import type { RelayReport } from './conditions/programmed.ts';
import { type ConfigPublisher, PUBLISH_REFUSED } from './config-publisher.ts';
import type { ReconcileResult } from './controller/controller.ts';
import type { OperatorMetrics } from './metrics.ts';
import type { PublishedConfig } from './published-config.ts';
import type { RelayScraper } from './relay-scraper.ts';
import type { EventRecorder } from './status/events.ts';
import type { StatusReconciler } from './status-reconciler.ts';
import { referencedServices, type WatchedResources } from './watched-resources.ts';

type RelayConfig = CompileResult['config'];

/** Milliseconds until the earliest troubleshooting consent in the config expires, if any. */
function nextConsentExpiryMs(config: RelayConfig, now: number): number | undefined {
  let next: number | undefined;
  for (const t of config.tenants) {
    if (!t.capture) continue;
    const left = Date.parse(t.capture.expiresAt) - now;
    if (left > 0 && (next === undefined || left < next)) next = left;
  }
  return next;
}

export interface RelayConfigReconcilerOptions {
  resources: WatchedResources;
  published: PublishedConfig;
  publisher: ConfigPublisher;
  statuses: StatusReconciler;
  scraper: RelayScraper;
  events: EventRecorder;
  compileCache: CompileCache;
  /** What the compiled config's hash is (CompileOptions.hash). */
  configHash?: 'document' | 'union';
  budgets: TenantBudgets;
  metrics: OperatorMetrics;
  logger: Logger;
  isLeader(): boolean;
  signal(): AbortSignal | undefined;
  /** The live relays and what each serves (refreshes nothing). */
  reports(): RelayReport[];
  /** The relay pods of the cache as targets for the scraper. */
  refreshTargets(): void;
  /** Queues a status key. */
  enqueueStatus(key: string): void;
  /** Marks the inputs changed and queues this reconcile (the consent timer). */
  requestCompile(): void;
}

export class RelayConfigReconciler {
  /** An input changed since the last compile. */
  inputsDirty = true;
  /** The last compile (budgets enforced). */
  last: BudgetResult | undefined;
  /** The config and time of the last capture evaluation (Events and audit lines on transitions). */
  private captureSeen: { config: RelayConfig; at: number } | undefined;
  /** Recompiles when the earliest consent expires (an expired consent changes the compile output). */
  private consentTimer: NodeJS.Timeout | undefined;
  /** Tenant → the PublishRefused message its TenantPolicy got an Event for (one per refusal). */
  private refusalsTold = new Map<string, string>();
  private stopped = false;
  private readonly o: RelayConfigReconcilerOptions;

  constructor(o: RelayConfigReconcilerOptions) {
    this.o = o;
  }

  async reconcile(): Promise<ReconcileResult> {
    if (this.inputsDirty || !this.last) this.compileInputs();
    const result = this.last as CompileResult;
    const leader = this.o.isLeader();
    const failures = leader ? await this.o.publisher.publish(result.config, result.sourceRuns) : [];
    if (leader) await this.reportCaptureTransitions(result.config);
    if (leader) await this.reportRefusals(result.config);
    this.o.refreshTargets();
    const live = this.o.reports();
    this.o.metrics.liveRelays.set(live.length);
    this.o.metrics.relaysUnreachable.set(live.filter((r) => r.error !== undefined).length);
    this.o.statuses.sweep(live, leader, this.o.enqueueStatus);
    this.scheduleConsentExpiry(result.config);
    // statuses are queued for everyone first; then the failed writes are retried with backoff
    if (failures.length > 0) throw new Error(failures.join('; '));
    // answers age out (a relay's scrapes stalled): look again when the oldest could have
    return live.length > 0 ? { requeueAfterMs: this.o.scraper.maxAgeMs } : undefined;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.consentTimer);
  }

  /** Compiles the caches (pure) against what relays serve, and enforces the tenant budgets. */
  private compileInputs(): void {
    const { resources, published, metrics, logger } = this.o;
    this.inputsDirty = false;
    this.o.publisher.forgetRefusals();
    const started = performance.now();
    const inputs = resources.compileInputs();
    // The clock is an input of the pure compile: troubleshooting consents hold until they expire
    // (the reconcile requeues itself for the next expiry). What relays serve (read back from the
    // ConfigMaps after a restart or a leader change): an invalid resource's last valid version and
    // an over-budget tenant's section stay in force.
    const previous = published.currentOrStored();
    const compiled = compile(inputs, {
      now: Date.now(),
      previous,
      cache: this.o.compileCache,
      hash: this.o.configHash,
    });
    const result = enforceTenantBudgets(compiled, this.o.budgets, previous);
    metrics.tenantsHeldBack.set({ reason: BUDGET_REASONS.overBudget }, result.overBudget.size);
    for (const [tenant, over] of result.overBudget) {
      if (this.last?.overBudget.get(tenant)?.join() !== over.join())
        logger.warn('tenant over budget; its previous config stays in force', { tenant, over });
    }
    resources.referenced = referencedServices(inputs.mailRoutes);
    const changed = this.last?.config.hash !== result.config.hash;
    this.last = result;
    published.history.remember(result.config.hash, sourcesOf(result.config), result.sourceRuns);
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

  /**
   * Consent-gated capture starting or ending is recorded where people look: a Kubernetes Event on
   * the TenantPolicy and an audit line in the operator's log (who approved it, under which consent
   * reference, until when).
   */
  private async reportCaptureTransitions(config: RelayConfig): Promise<void> {
    const now = Date.now();
    const changes = captureTransitions(this.captureSeen?.config, config, now, {
      prevNow: this.captureSeen?.at,
    });
    this.captureSeen = { config, at: now };
    for (const c of changes) {
      this.o.logger.info('audit', {
        event: c.kind === 'started' ? 'capture started' : 'capture ended',
        tenant: c.tenant,
        reason: c.reason,
        consentId: c.consentId,
        consentReference: c.consentReference,
        approvedBy: c.approvedBy,
        expiresAt: c.expiresAt,
        maxMessages: c.maxMessages,
      });
      await this.emitOnPolicy(config, c.tenant, {
        type: 'Normal',
        reason: c.kind === 'started' ? 'CaptureStarted' : 'CaptureEnded',
        note:
          c.kind === 'started'
            ? `Troubleshooting capture started under consent ${c.consentReference} approved by ${c.approvedBy}, until ${c.expiresAt}, at most ${c.maxMessages} messages`
            : `Troubleshooting capture ended (${c.reason}) for consent ${c.consentReference}`,
      });
    }
  }

  /**
   * A tenant whose changes the API server refuses to store (PublishRefused) gets a Warning Event on
   * its TenantPolicy once per refusal; Ready's transition alone would say nothing when it was
   * already False (no relays, a lagging rollout).
   */
  private async reportRefusals(config: RelayConfig): Promise<void> {
    const told = this.refusalsTold;
    this.refusalsTold = new Map();
    for (const [tenant, held] of this.o.publisher.heldBack) {
      if (held.reason !== PUBLISH_REFUSED) continue;
      this.refusalsTold.set(tenant, held.message);
      if (told.get(tenant) === held.message) continue;
      await this.emitOnPolicy(config, tenant, {
        type: 'Warning',
        reason: PUBLISH_REFUSED,
        note: held.message.slice(0, 1000),
      });
    }
  }

  private async emitOnPolicy(config: RelayConfig, tenant: string, t: Transition): Promise<void> {
    const name = this.policyName(config, tenant);
    if (!name) return;
    const obj = this.o.resources.tenantPolicies.get(name, tenant) as TenantPolicy | undefined;
    await this.o.events.emit(
      {
        apiVersion: MAILPLUS_API_VERSION,
        kind: 'TenantPolicy',
        namespace: tenant,
        name,
        uid: obj?.metadata.uid,
        resourceVersion: obj?.metadata.resourceVersion,
      },
      t,
      this.o.signal(),
    );
  }

  /** The name of a tenant's TenantPolicy: as the config records it, else as the cache holds it. */
  private policyName(config: RelayConfig, tenant: string): string | undefined {
    const policy =
      config.tenants.find((t) => t.name === tenant)?.policy ??
      this.o.resources.tenantPolicies.list().find((p) => (p.metadata.namespace ?? 'default') === tenant)
        ?.metadata.name;
    return policy?.includes('/') ? policy.split('/')[1] : policy;
  }

  /** An expired consent changes the compile output: recompile at that moment. */
  private scheduleConsentExpiry(config: RelayConfig): void {
    const consentExpiry = nextConsentExpiryMs(config, Date.now());
    clearTimeout(this.consentTimer);
    this.consentTimer =
      consentExpiry === undefined
        ? undefined
        : setTimeout(() => {
            if (!this.stopped) this.o.requestCompile();
          }, consentExpiry + 50);
    this.consentTimer?.unref();
  }
}
