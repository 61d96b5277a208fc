// Capture start/end transitions between two relay configs, for the operator's Events and audit log
// lines ("capture started/ended for tenant T"). Pure: the caller passes the configs and the time.
//
// - started:  the next config carries a consent (tenant.capture) that the previous one did not
//             (new tenant, or a different consent id), and it has not expired at `now`.
// - ended:    a consent of the previous config is gone or replaced (reason 'removed' / 'replaced'),
//             or is still there but expired at `now` ('expired'), or its maxMessages are used up
//             ('exhausted', when the caller passes the used counts from the store).
// A consent that expired is reported once: when prev still had it active at prevNow (or no prevNow
// was given) — the operator passes the time of the previous evaluation to avoid repeats.
import type { Capture, RelayConfig } from '../../contract/config/types.gen.ts';

export interface CaptureTransition {
  tenant: string;
  kind: 'started' | 'ended';
  reason: 'consented' | 'expired' | 'removed' | 'replaced' | 'exhausted';
  consentId: string;
  consentReference: string;
  approvedBy: string;
  expiresAt: string;
  maxMessages: number;
}

const active = (c: Capture, nowMs: number) => nowMs < Date.parse(c.expiresAt);

function captures(config: RelayConfig | undefined): Map<string, Capture> {
  const m = new Map<string, Capture>();
  for (const t of config?.tenants ?? []) if (t.capture) m.set(t.name, t.capture);
  return m;
}

function transition(
  tenant: string,
  kind: CaptureTransition['kind'],
  reason: CaptureTransition['reason'],
  c: Capture,
): CaptureTransition {
  return {
    tenant,
    kind,
    reason,
    consentId: c.id,
    consentReference: c.consentReference,
    approvedBy: c.approvedBy,
    expiresAt: c.expiresAt,
    maxMessages: c.maxMessages,
  };
}

export function captureTransitions(
  prevConfig: RelayConfig | undefined,
  nextConfig: RelayConfig | undefined,
  now: number | Date,
  opts: {
    /** Time of the previous evaluation: an expiry already reported then is not reported again. */
    prevNow?: number | Date;
    /** Messages captured so far per consent id (from the store), to report 'exhausted'. */
    used?: ReadonlyMap<string, number>;
    /** The same counts at the previous evaluation: 'exhausted' is reported once, when crossed. */
    prevUsed?: ReadonlyMap<string, number>;
  } = {},
): CaptureTransition[] {
  const nowMs = new Date(now).getTime();
  const prevNowMs = opts.prevNow === undefined ? undefined : new Date(opts.prevNow).getTime();
  const prev = captures(prevConfig);
  const next = captures(nextConfig);
  const out: CaptureTransition[] = [];
  const wasLive = (c: Capture) => prevNowMs === undefined || active(c, prevNowMs);
  const exhausted = (c: Capture) =>
    opts.used !== undefined &&
    (opts.used.get(c.id) ?? 0) >= c.maxMessages &&
    (opts.prevUsed?.get(c.id) ?? 0) < c.maxMessages;
  for (const [tenant, p] of prev) {
    const n = next.get(tenant);
    if (!n) {
      if (wasLive(p)) out.push(transition(tenant, 'ended', active(p, nowMs) ? 'removed' : 'expired', p));
    } else if (n.id !== p.id) {
      if (wasLive(p)) out.push(transition(tenant, 'ended', active(p, nowMs) ? 'replaced' : 'expired', p));
    } else if (!active(n, nowMs) && wasLive(n)) {
      out.push(transition(tenant, 'ended', 'expired', n));
    } else if (active(n, nowMs) && exhausted(n)) {
      out.push(transition(tenant, 'ended', 'exhausted', n));
    }
  }
  for (const [tenant, n] of next) {
    const p = prev.get(tenant);
    if ((!p || p.id !== n.id) && active(n, nowMs)) out.push(transition(tenant, 'started', 'consented', n));
  }
  return out.sort(
    (a, b) => (a.tenant < b.tenant ? -1 : a.tenant > b.tenant ? 1 : 0) || (a.kind === 'ended' ? -1 : 1),
  );
}
