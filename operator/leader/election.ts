// Leader election on a coordination.k8s.io/v1 Lease, the way client-go's tools/leaderelection does
// it (docs/operator.md, "High availability"): LeaseDuration 15 s, RenewDeadline 10 s, RetryPeriod
// 2 s; optimistic concurrency through the Lease's resourceVersion (a racing write gets 409 and
// loses); expiry judged on OUR clock from when we last saw the record change (no trust in other
// machines' clocks); a takeover bumps leaseTransitions. Losing the lease aborts `signal` at once;
// the owner then fails stop.

import { apiErrorText, apiStatus, type KubeClient, microTime, timeMs } from '../../platform/kube/client.ts';
import type { Lease, LeaseSpec } from '../../platform/kube/objects.ts';
import type { Logger } from '../../platform/log.ts';

export interface LeaseRecord {
  holder: string;
  leaseDurationSeconds: number;
  renewTime: number;
  acquireTime: number;
  leaseTransitions: number;
  resourceVersion: string;
}

export type LeaseAction = 'create' | 'renew' | 'acquire' | 'follow';

/**
 * What to do with the Lease now. `observedAt` is when we first saw the current record (holder +
 * renewTime); the holder's claim expires leaseDurationSeconds after that on our clock.
 */
export function decideLease(
  record: LeaseRecord | undefined,
  identity: string,
  observedAt: number,
  now: number,
): LeaseAction {
  if (!record) return 'create';
  if (record.holder === identity) return 'renew';
  if (record.holder === '') return 'acquire';
  const duration = record.leaseDurationSeconds > 0 ? record.leaseDurationSeconds : 15;
  return observedAt + duration * 1000 <= now ? 'acquire' : 'follow';
}

/** The Lease spec to write for an action (create/renew/acquire). */
export function leaseSpecFor(
  action: 'create' | 'renew' | 'acquire',
  record: LeaseRecord | undefined,
  identity: string,
  leaseDurationSeconds: number,
  now: Date,
): LeaseSpec {
  const renewing = action === 'renew' && record;
  return {
    holderIdentity: identity,
    leaseDurationSeconds,
    renewTime: microTime(now),
    acquireTime: microTime(renewing ? new Date(record.acquireTime) : now),
    leaseTransitions:
      action === 'create'
        ? 0
        : action === 'acquire'
          ? (record?.leaseTransitions ?? 0) + 1
          : (record?.leaseTransitions ?? 0),
  };
}

export function leaseRecord(lease: Lease): LeaseRecord {
  const s = lease.spec ?? {};
  return {
    holder: s.holderIdentity ?? '',
    leaseDurationSeconds: s.leaseDurationSeconds ?? 0,
    renewTime: timeMs(s.renewTime),
    acquireTime: timeMs(s.acquireTime),
    leaseTransitions: s.leaseTransitions ?? 0,
    resourceVersion: lease.metadata?.resourceVersion ?? '',
  };
}

export interface LeaderElectorOptions {
  client: KubeClient;
  namespace: string;
  name: string;
  identity: string;
  leaseDurationSeconds?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  logger: Logger;
  onStartedLeading(): void;
  onStoppedLeading(): void;
  /** leader_election_master_status. */
  setStatus(leader: boolean): void;
}

export class LeaderElector {
  private readonly o: Required<Omit<LeaderElectorOptions, 'client' | 'logger'>> &
    Pick<LeaderElectorOptions, 'client' | 'logger'>;
  private leader = false;
  private lastRenew = 0;
  private observed: { key: string; at: number } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private abort = new AbortController();
  private running: Promise<void> | undefined;

  constructor(opts: LeaderElectorOptions) {
    this.o = { leaseDurationSeconds: 15, renewDeadlineMs: 10_000, retryPeriodMs: 2_000, ...opts };
  }

  get isLeader(): boolean {
    return this.leader;
  }

  /** Aborted the moment leadership is lost (or on stop). Fresh per term. */
  get signal(): AbortSignal {
    return this.abort.signal;
  }

  start(): void {
    this.o.setStatus(false);
    const tick = async () => {
      if (this.stopped) return;
      this.running = this.tryAcquireOrRenew();
      await this.running;
      if (!this.stopped) this.timer = setTimeout(tick, this.o.retryPeriodMs);
    };
    void tick();
  }

  private async tryAcquireOrRenew(): Promise<void> {
    const now = Date.now();
    const { client, namespace, name, identity, leaseDurationSeconds } = this.o;
    const timeoutMs = Math.max(1000, Math.min(this.o.renewDeadlineMs / 2, 5000));
    const leases = `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/leases`;
    try {
      let lease: Lease | undefined;
      try {
        lease = await client.get<Lease>(`${leases}/${encodeURIComponent(name)}`, { timeoutMs });
      } catch (err) {
        if (apiStatus(err) !== 404) throw err;
      }
      const record = lease ? leaseRecord(lease) : undefined;
      if (record) {
        const key = `${record.holder}|${record.renewTime}|${record.resourceVersion}`;
        if (this.observed?.key !== key) this.observed = { key, at: now };
      }
      const action = decideLease(record, identity, this.observed?.at ?? now, now);
      if (action === 'follow') {
        if (this.leader) this.lose(`lease taken by ${record?.holder}`);
        return;
      }
      const spec = leaseSpecFor(action, record, identity, leaseDurationSeconds, new Date(now));
      if (action === 'create') {
        await client.request('POST', leases, {
          body: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name, namespace }, spec },
          timeoutMs,
        });
      } else {
        await client.request('PUT', `${leases}/${encodeURIComponent(name)}`, {
          body: {
            apiVersion: 'coordination.k8s.io/v1',
            kind: 'Lease',
            metadata: { ...lease?.metadata, name, namespace, resourceVersion: record?.resourceVersion },
            spec,
          },
          timeoutMs,
        });
      }
      this.lastRenew = now;
      if (!this.leader && !this.stopped) {
        this.leader = true;
        this.abort = new AbortController();
        this.o.setStatus(true);
        this.o.logger.info('became leader', {
          lease: `${namespace}/${name}`,
          identity,
          takeover: action === 'acquire',
          leaseTransitions: spec.leaseTransitions,
        });
        this.o.onStartedLeading();
      }
    } catch (err) {
      const code = apiStatus(err);
      if (code !== 409) {
        this.o.logger.warn('leader election: lease request failed', {
          lease: `${namespace}/${name}`,
          error: apiErrorText(err),
        });
      }
      if (this.leader && Date.now() - this.lastRenew > this.o.renewDeadlineMs) {
        this.lose(`could not renew the lease within ${this.o.renewDeadlineMs} ms: ${apiErrorText(err)}`);
      } else if (this.leader && code === 409) {
        // someone else wrote the Lease: re-read at the next tick decides; our term is over
        // only if they hold it now
      }
    }
  }

  private lose(why: string): void {
    if (!this.leader) return;
    this.leader = false;
    this.abort.abort(new Error(`leadership lost: ${why}`));
    this.o.setStatus(false);
    this.o.logger.error('leadership lost', { lease: `${this.o.namespace}/${this.o.name}`, reason: why });
    this.o.onStoppedLeading();
  }

  /** Stops campaigning; a leader releases the Lease (holder cleared) so a standby takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running?.catch(() => {});
    if (!this.leader) return;
    this.leader = false;
    this.abort.abort(new Error('shutting down'));
    this.o.setStatus(false);
    const { client, namespace, name } = this.o;
    const path = `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/leases/${encodeURIComponent(name)}`;
    try {
      const lease = await client.get<Lease>(path, { timeoutMs: 3000 });
      if (lease.spec?.holderIdentity !== this.o.identity) return;
      await client.request('PUT', path, {
        body: {
          ...lease,
          spec: { ...lease.spec, holderIdentity: undefined, leaseDurationSeconds: 1, renewTime: microTime() },
        },
        timeoutMs: 3000,
      });
      this.o.logger.info('released the leader lease', { lease: `${namespace}/${name}` });
    } catch (err) {
      this.o.logger.warn('could not release the leader lease', { error: apiErrorText(err) });
    }
  }
}
