// Relay report Leases → RelayReport (pure), and the selector the operator watches them with.
import { CONFIG_HASH_ANNOTATION } from '../relay/config-configmap-watch.ts';
import { FLEET_LABEL, REPORT_COMPONENT, REPORT_COMPONENT_LABEL } from '../relay/report-lease.ts';
import type { RelayReport } from './compile/programmed.ts';
import { timeMs } from './kube/client.ts';

export function defaultRelayLeaseSelector(fleet: string): string {
  return `${REPORT_COMPONENT_LABEL}=${REPORT_COMPONENT},${FLEET_LABEL}=${fleet}`;
}

interface LeaseLike {
  metadata?: { name?: string; annotations?: Record<string, string> };
  spec?: { holderIdentity?: string; renewTime?: unknown; leaseDurationSeconds?: number };
}

export function relayReport(lease: LeaseLike): RelayReport {
  return {
    id: lease.spec?.holderIdentity || lease.metadata?.name || '',
    hash: lease.metadata?.annotations?.[CONFIG_HASH_ANNOTATION],
    renewedAt: timeMs(lease.spec?.renewTime),
    leaseDurationSeconds: lease.spec?.leaseDurationSeconds ?? 0,
  };
}

/** Milliseconds until the first live report expires (when Programmed must be re-evaluated), or undefined. */
export function nextExpiryMs(live: RelayReport[], now: number): number | undefined {
  let next: number | undefined;
  for (const r of live) {
    const at = r.renewedAt + r.leaseDurationSeconds * 1000 - now;
    if (at > 0 && (next === undefined || at < next)) next = at;
  }
  return next;
}
