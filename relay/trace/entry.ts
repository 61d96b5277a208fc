// The message-trace entry: the metadata of one SMTP transaction as seen by one tenant, and nothing
// more. No content, no subject, no headers: the relay never parses the message, so it cannot leak
// what it does not read. The same fields as the relay's per-transaction log line.

export type TraceResult = 'relayed' | 'rejected' | 'deferred' | 'failed' | 'abandoned';

export interface TraceRecipient {
  /** As given in RCPT TO, or the tenant's pseudonym (h:<hmac>@domain) when it asked for pseudonyms. */
  address: string;
  result: 'accepted' | 'rejected' | 'deferred';
  code: number;
  reason?: string;
  /**
   * Set on a marker line (address '', reason 'not_recorded'): this many further refused recipients
   * with this result were counted but not recorded (the relay's recorded-recipients limit).
   */
  omitted?: number;
  /**
   * The address the route rewrote it to for the upstream (MailRoute forward.rewrite), in the same
   * form as address; absent when the route does not rewrite.
   */
  rewrittenTo?: string;
}

export interface TraceEntry {
  /** ISO 8601 time the transaction ended. */
  time: string;
  txid: string;
  /** The tenant this entry belongs to ('' for recipients no tenant holds: relay_denied). */
  tenant: string;
  /** The first route of this tenant's recipients ('' when none was accepted). */
  route: string;
  clientIp: string;
  tls: boolean;
  /** Envelope sender ('<>' for the null sender), or its pseudonym. */
  sender: string;
  /** This tenant's recipients only. */
  recipients: TraceRecipient[];
  /** Raw message bytes received in DATA (0 when there was no DATA). */
  size: number;
  upstream: string;
  result: TraceResult;
  /** Final SMTP code sent to the client (0 when the transaction ended without one). */
  code: number;
  durationMs: number;
}

/** A stored entry: what the store adds (row id, expiry). */
export interface StoredTraceEntry extends TraceEntry {
  id: number;
  expiresAt: string;
}

export const TRACE_RESULTS: readonly TraceResult[] = [
  'relayed',
  'rejected',
  'deferred',
  'failed',
  'abandoned',
];

/** Lower-cased forms under which an entry is found by address ('<>' and '' are not addresses). */
export function entryAddresses(e: TraceEntry): Array<{ address: string; role: 'sender' | 'recipient' }> {
  const out: Array<{ address: string; role: 'sender' | 'recipient' }> = [];
  const seen = new Set<string>();
  const add = (a: string, role: 'sender' | 'recipient') => {
    const lower = normalizeAddress(a);
    if (lower === '' || seen.has(`${role}\0${lower}`)) return;
    seen.add(`${role}\0${lower}`);
    out.push({ address: lower, role });
  };
  add(e.sender, 'sender');
  for (const r of e.recipients) {
    add(r.address, 'recipient');
    // access and erasure requests find an entry by the rewritten address too
    if (r.rewrittenTo !== undefined) add(r.rewrittenTo, 'recipient');
  }
  return out;
}

/** Lower-case, without angle brackets; '' for the null sender. */
export function normalizeAddress(a: string): string {
  let s = a.trim();
  if (s.startsWith('<') && s.endsWith('>')) s = s.slice(1, -1).trim();
  return s === '<>' ? '' : s.toLowerCase();
}
