// The relay's privacy hooks, called by the SMTP transaction code: the addresses of the log line
// (per-tenant pseudonyms), the trace entries at the end of each transaction, and consented
// captures in the DATA path. Without a trace store only the log-line part is active.

import type { RelayConfig, Tenant } from '../../contract/config/types.gen.ts';
import type { CaptureOutcome, CaptureRecorder, CaptureTee } from '../capture/recorder.ts';
import { captureVerdict } from '../capture/scope.ts';
import {
  type AddressPolicy,
  type FinishedTransaction,
  logAddresses,
  logText,
  traceEntries,
} from './record.ts';
import { expiryMs, retentionSecondsOf } from './retention.ts';
import type { TraceWriter } from './writer.ts';

export interface PrivacyHooks {
  logAddresses(
    config: RelayConfig,
    sender: string,
    recipients: Array<{ address: string; tenant: string }>,
  ): { sender: string; recipients: string[] };
  /** Free text for a log line (an upstream's reply), its addresses shown as logAddresses shows them. */
  logText(config: RelayConfig, tenants: readonly string[], text: string): string;
  finished(config: RelayConfig, tx: FinishedTransaction): void;
  /** Undefined (synchronously) when the message is not to be captured: the fast path. */
  startCapture(
    config: RelayConfig,
    txid: string,
    accepted: Array<{ address: string; tenant: string }>,
  ): Promise<CaptureTee | undefined> | undefined;
  /** Hands a finished capture over; the transaction does not wait for it. */
  endCapture(tee: CaptureTee, keep: boolean): void;
  /** Resolves when pending captures are settled and buffered trace entries written (tests, shutdown). */
  idle(): Promise<void>;
  close(): Promise<void>;
}

export interface PrivacyOptions {
  masterKey?: string;
  relayWide: (address: string) => string;
  writer?: TraceWriter;
  recorder?: CaptureRecorder;
  now: () => number;
  onCaptureOutcome?: (tenant: string, outcome: CaptureOutcome) => void;
}

const tenantMaps = new WeakMap<RelayConfig, Map<string, Tenant>>();
function tenantsOf(config: RelayConfig): Map<string, Tenant> {
  let m = tenantMaps.get(config);
  if (!m) {
    m = new Map(config.tenants.map((t) => [t.name, t]));
    tenantMaps.set(config, m);
  }
  return m;
}

export function createPrivacyHooks(o: PrivacyOptions): PrivacyHooks {
  const pending = new Set<Promise<unknown>>();
  const track = <T>(p: Promise<T>): Promise<T> => {
    pending.add(p);
    void p.finally(() => pending.delete(p)).catch(() => {});
    return p;
  };
  const policy = (config: RelayConfig): AddressPolicy => ({
    masterKey: o.masterKey,
    relayWide: o.relayWide,
    tenants: tenantsOf(config),
  });
  return {
    logAddresses: (config, sender, recipients) => logAddresses(sender, recipients, policy(config)),
    logText: (config, tenants, text) => logText(text, tenants, policy(config)),
    finished(config, tx) {
      if (!o.writer) return;
      for (const e of traceEntries(tx, policy(config))) {
        o.writer.record(e, expiryMs(tx.timeMs, retentionSecondsOf(config, e.tenant)));
      }
    },
    startCapture(config, txid, accepted) {
      if (!o.recorder) return undefined;
      const tenants = tenantsOf(config);
      // fast path: no tenant of this transaction has a consent
      if (!accepted.some((r) => tenants.get(r.tenant)?.capture)) return undefined;
      const v = captureVerdict(tenants, accepted, o.now());
      if (!v.capture) return undefined;
      return track(o.recorder.begin(v.tenant, v.consent, txid));
    },
    endCapture(tee, keep) {
      track(tee.finish(keep));
    },
    async idle() {
      while (pending.size > 0) await Promise.allSettled([...pending]);
      await o.writer?.flush();
    },
    async close() {
      while (pending.size > 0) await Promise.allSettled([...pending]);
      await o.writer?.close();
    },
  };
}
