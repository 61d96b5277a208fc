// What a transaction leaves behind: its log lines (metadata only, addresses in the form the
// tenant's privacy settings ask for), its trace entry and its authentication counters.

import type { Logger } from '../../platform/log.ts';
import type { AuthGate } from '../auth/gate.ts';
import type { RelayMetrics } from '../observability/metrics.ts';
import type { PrivacyHooks } from '../trace/privacy.ts';
import { UpstreamError } from '../upstream/errors.ts';
import type { Transaction, TransactionOutcome } from './transaction-state.ts';

export interface ReportDeps {
  logger: Logger;
  metrics: RelayMetrics;
  privacy: PrivacyHooks;
}

/**
 * An upstream failure for the log. The error quotes the upstream's reply, which may name addresses:
 * they are shown as the transaction's own addresses are (a pseudonymising tenant's form).
 */
export function logUpstreamError(
  deps: ReportDeps,
  t: Transaction,
  tenants: readonly string[],
  upstream: string,
  err: unknown,
): void {
  const error = deps.privacy.logText(t.snapshot.table.config, tenants, (err as Error).message);
  const kind = err instanceof UpstreamError ? err.kind : undefined;
  const msg =
    kind === 'protocol'
      ? 'upstream protocol error'
      : kind === 'loop'
        ? 'mail loop'
        : 'upstream attempt failed';
  deps.logger.warn(msg, { txid: t.id, upstream, error });
}

/** Counts a message's authentication results and what was done, per tenant (no addresses). */
export function countAuth(
  metrics: RelayMetrics,
  tenant: string,
  r: Awaited<ReturnType<AuthGate['finish']>>,
): void {
  metrics.authResultsTotal.inc({ tenant, check: 'spf', result: r.outcome.spf });
  for (const d of r.outcome.dkim) metrics.authResultsTotal.inc({ tenant, check: 'dkim', result: d });
  metrics.authResultsTotal.inc({ tenant, check: 'arc', result: r.outcome.arc });
  metrics.authResultsTotal.inc({ tenant, check: 'dmarc', result: r.outcome.dmarc });
  const action =
    r.decision.action === 'accept' ? r.annotation : r.decision.action === 'reject' ? 'rejected' : 'deferred';
  metrics.authActionsTotal.inc({ tenant, action, reason: r.decision.reason });
}

/** The recipients of the log line: shown addresses, and rewritten ones in the same form. */
function loggedRecipients(privacy: PrivacyHooks, t: Transaction) {
  const config = t.snapshot.table.config;
  const shown = privacy.logAddresses(config, t.sender, t.recipients);
  // the rewritten addresses in the same form as the originals (a pseudonymising tenant's pseudonym)
  const rewritten = t.recipients.some((r) => r.rewrittenTo !== undefined)
    ? privacy.logAddresses(
        config,
        t.sender,
        t.recipients.map((r) => ({ address: r.rewrittenTo ?? '', tenant: r.tenant })),
      ).recipients
    : undefined;
  const recipients = t.recipients.map((r, i) => ({
    address: shown.recipients[i],
    result: r.result,
    code: r.code,
    ...(r.reason !== undefined ? { reason: r.reason } : {}),
    ...(r.rewrittenTo !== undefined && rewritten ? { rewrittenTo: rewritten[i] } : {}),
  }));
  return { sender: shown.sender, recipients };
}

/** The one `transaction` log line and the trace entry of a finished transaction. */
export function reportTransaction(deps: ReportDeps, t: Transaction, o: TransactionOutcome): void {
  const durationMs = Math.round(performance.now() - t.startedAt);
  const shown = loggedRecipients(deps.privacy, t);
  deps.logger.info('transaction', {
    txid: t.id,
    session: t.session,
    clientIp: t.clientIp,
    tls: t.tls,
    configHash: t.snapshot.hash,
    tenants: [...t.tenants.keys()],
    routes: [...t.routes],
    sender: shown.sender,
    recipients: shown.recipients,
    ...(t.notRecorded.size > 0
      ? {
          recipientsNotRecorded: [...t.notRecorded.values()].map((n) => ({
            result: n.result,
            code: n.code,
            count: n.count,
          })),
        }
      : {}),
    size: o.size,
    upstream: t.upstreamLabel || undefined,
    result: o.result,
    code: o.code || undefined,
    reason: o.reason,
    clientDisconnected: o.clientGone || undefined,
    durationMs,
  });
  deps.privacy.finished(t.snapshot.table.config, {
    timeMs: Date.now(),
    txid: t.id,
    clientIp: t.clientIp,
    tls: t.tls,
    sender: t.sender,
    recipients: t.notRecorded.size > 0 ? [...t.recipients, ...t.notRecordedMarkers()] : t.recipients,
    size: o.size,
    upstream: t.upstreamLabel,
    result: o.result,
    code: o.code,
    durationMs,
  });
}
