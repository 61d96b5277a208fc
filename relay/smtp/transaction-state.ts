// The state of one SMTP transaction (MAIL FROM to the end of DATA, RSET or disconnect), as the
// RCPT and DATA phases (transaction.ts, data-transfer.ts) read and update it.
import { randomBytes } from 'node:crypto';
import type { SMTPServerSession } from 'smtp-server';
import type { Tenant, TenantAuthentication } from '../../contract/config/types.gen.ts';
import type { SpfVerdict } from '../auth/verify.ts';
import type { RoutingTable } from '../routing/table.ts';
import { type ReceivedFields, receivedHeader } from './received.ts';
import type { SmtpError } from './replies.ts';
import type { MailParams, UpstreamTx } from './upstream-contract.ts';

export interface ConfigSnapshot {
  table: RoutingTable;
  hash: string;
  generation: number;
}

export type RecipientResult = 'accepted' | 'rejected' | 'deferred';
export type MessageResult = 'relayed' | 'rejected' | 'deferred' | 'failed' | 'abandoned';

export interface RecipientLog {
  address: string;
  result: RecipientResult;
  code: number;
  reason?: string;
  /** For the trace and per-tenant pseudonyms; not logged ('' when no tenant holds the domain). */
  tenant: string;
  route: string;
  /** The RCPT TO the upstream was given, when the route rewrites recipients (forward.rewrite). */
  rewrittenTo?: string;
}

/** Refused recipients past the recorded limit: counted per tenant and result, addresses dropped. */
export interface NotRecorded {
  tenant: string;
  result: RecipientResult;
  /** The code of the first one not recorded. */
  code: number;
  count: number;
}

/** How a transaction ended, for its log line, trace entry and metrics. */
export interface TransactionOutcome {
  result: MessageResult;
  code: number;
  reason: string;
  size: number;
  clientGone: boolean;
}

export class Transaction {
  readonly id = randomBytes(8).toString('hex');
  readonly startedAt = performance.now();
  readonly snapshot: ConfigSnapshot;
  readonly sender: string;
  readonly params: MailParams;
  readonly recipients: RecipientLog[] = [];
  readonly tenants = new Map<string, Tenant>();
  readonly routes = new Set<string>();
  readonly acceptedPerTenant = new Map<string, number>();
  readonly rateCounted = new Set<string>();
  /** Refused recipients not recorded (keyed tenant + result), bounded by the number of tenants. */
  readonly notRecorded = new Map<string, NotRecorded>();
  acceptedCount = 0;
  /** Gives back this transaction's upstream share (per client, per tenant); set while it holds one. */
  releaseShare: (() => void) | undefined;
  /** Fires when the client made no progress (accepted RCPT, DATA) for the hold time while holding an upstream. */
  holdTimer: NodeJS.Timeout | undefined;
  lastProgressAt = 0;
  /** Lower-cased RCPT TO addresses the upstream accepted (duplicates after rewriting are dropped). */
  readonly forwarded = new Set<string>();
  /** A tenant's DNSBL refusal (or undefined: passed), decided once per transaction. */
  readonly dnsblChecked = new Map<string, SmtpError | undefined>();
  /** Upstream set and authentication settings of the accepted recipients (relay/routing/transaction-scope.ts). */
  scope: string | undefined;
  /**
   * Sender authentication of the transaction (its recipients' tenants share one policy, see
   * scope), the tenant it counts for, and SPF, started at the first accepted recipient.
   */
  auth: TenantAuthentication | undefined;
  authTenant = '';
  spf: Promise<SpfVerdict> | undefined;
  firstTenant = '';
  firstRoute = '';
  upstreamLabel = '';
  utx: UpstreamTx | undefined;
  /** The upstream connection died during the envelope: later commands cannot succeed. */
  broken = false;
  inData = false;
  done = false;

  readonly session: string;
  readonly clientIp: string;
  readonly tls: boolean;
  /** For the Received header, as the session stood at MAIL FROM. */
  readonly received: Omit<ReceivedFields, 'by' | 'recipient' | 'date'>;

  constructor(snapshot: ConfigSnapshot, sender: string, params: MailParams, session: SMTPServerSession) {
    this.snapshot = snapshot;
    this.session = session.id;
    this.clientIp = session.remoteAddress;
    this.tls = !!session.secure;
    this.sender = sender;
    this.params = params;
    const cipher = session.tlsOptions || undefined;
    const protocol = session.transmissionType || 'SMTP';
    this.received = {
      helo: session.hostNameAppearsAs || undefined,
      clientIp: session.remoteAddress,
      // RFC 6531 §3.7.3 (and Postfix): an SMTPUTF8 transaction is received "with UTF8SMTP[S][A]"
      protocol: params.smtputf8 && protocol.startsWith('ESMTP') ? `UTF8SMTP${protocol.slice(5)}` : protocol,
      tls: this.tls && cipher ? { version: cipher.version, cipher: cipher.name } : undefined,
      id: this.id,
    };
  }

  accepted(): RecipientLog[] {
    return this.recipients.filter((r) => r.result === 'accepted');
  }

  /** Our Received header for this transaction; the `for` clause only for a single recipient. */
  receivedHeader(by: string, recipient: string | undefined): Buffer {
    return receivedHeader({ ...this.received, by, recipient, date: new Date() });
  }

  /**
   * MAIL parameters toward the upstream: a declared SIZE grows by our Received header (the longest it
   * can be: with the first recipient's `for` clause), so the upstream is told the size it will get;
   * the client's identity goes along for XCLIENT.
   */
  upstreamParams(by: string, firstRecipient: string): MailParams {
    const r = this.received;
    const params: MailParams = {
      ...this.params,
      // for routes whose upstream takes XCLIENT: the next hop sees the real client
      client: { addr: r.clientIp, helo: r.helo, proto: r.protocol === 'SMTP' ? 'SMTP' : 'ESMTP' },
    };
    if (this.params.size !== undefined) {
      params.size = this.params.size + this.receivedHeader(by, firstRecipient).length;
    }
    return params;
  }

  /** Trace markers for the refused recipients that were counted but not recorded (address ''). */
  notRecordedMarkers() {
    return [...this.notRecorded.values()].map((n) => ({
      address: '',
      result: n.result,
      code: n.code,
      reason: 'not_recorded',
      omitted: n.count,
      tenant: n.tenant,
      route: '',
    }));
  }
}

/** MAIL FROM parameters as smtp-server parsed them, for the upstream. */
export function mailParams(args: Record<string, unknown> | false | undefined): MailParams {
  const a = args || {};
  const params: MailParams = {};
  if (a.SIZE) params.size = Number(a.SIZE);
  if (a.BODY) params.body = String(a.BODY).toUpperCase() === '8BITMIME' ? '8BITMIME' : '7BIT';
  if (a.SMTPUTF8) params.smtputf8 = true;
  return params;
}
