import { randomBytes } from 'node:crypto';
import type { SMTPServerAddress, SMTPServerSession } from 'smtp-server';
import type { Tenant, TenantAuthentication, Upstream } from '../../contract/config/types.gen.ts';
import type { Logger } from '../../platform/log.ts';
import { AuthGate, HeaderTooLarge } from '../auth/gate.ts';
import { checkSpf, MessageVerifier, type Resolve, type SpfVerdict } from '../auth/verify.ts';
import type { CaptureTee } from '../capture/recorder.ts';
import type { DnsblChecker } from '../dnsbl/check.ts';
import { tenantDnsblRefusal } from '../dnsbl/rcpt.ts';
import type { RelayMetrics } from '../observability/metrics.ts';
import { decideRecipient } from '../routing/decide.ts';
import type { RoutingTable } from '../routing/table.ts';
import type { PrivacyHooks } from '../trace/privacy.ts';
import { targetLabel } from '../upstream/connection.ts';
import { UpstreamError } from '../upstream/errors.ts';
import { DEFAULT_FAIRNESS, FAIRNESS_REPLY, type FairnessLimits, type UpstreamShares } from './fairness.ts';
import type { RateLimiter } from './rate-limit.ts';
import type { RawSMTPDataStream } from './raw-data-stream.ts';
import { HopCounter, type ReceivedFields, receivedHeader } from './received.ts';
import { type SmtpError, smtpError } from './smtp-error.ts';
import type { MailParams, SmtpReply, UpstreamPoolLike, UpstreamTx } from './upstream-contract.ts';

/**
 * Per-session transaction orchestration: MAIL FROM captures the config snapshot (hot reload: new
 * transactions use the new config, in-flight ones finish on theirs), each RCPT is decided by the
 * routing table and then by the upstream itself (the first accepted recipient opens the upstream
 * transaction, later ones are passed to it), DATA streams the raw bytes through, and the client's
 * 250 is sent strictly after the upstream's 250. Replies follow docs/architecture.md.
 */

export interface ConfigSnapshot {
  table: RoutingTable;
  hash: string;
  generation: number;
}

export interface TransactionDeps {
  snapshot(): ConfigSnapshot | undefined;
  pool: UpstreamPoolLike;
  metrics: RelayMetrics;
  logger: Logger;
  rateLimiter: RateLimiter;
  maxMessageSize: number;
  maxTransactions: number;
  /** Message trace, per-tenant pseudonyms in the log line, consented captures (relay/trace/privacy.ts). */
  privacy: PrivacyHooks;
  /** Our host name in the Received header. */
  hostname: string;
  /** Received header fields a message may arrive with (a loop otherwise); RFC 5321 §6.3. */
  maxHops: number;
  /** Where `RCPT TO:<postmaster>` (no domain, RFC 5321 §4.5.1) goes; unset: refused with 550 5.1.1. */
  postmaster?: string;
  /** Per-transaction fairness limits (relay/smtp/fairness.ts); defaults apply where unset. */
  fairness?: Partial<
    Pick<FairnessLimits, 'upstreamHoldMs' | 'recipientsPerTransaction' | 'recordedRecipients'>
  >;
  /** Upstream connections per client and per tenant; unset: unlimited. */
  upstreamShares?: UpstreamShares;
  /** Closes a client session with 421 (its upstream hold time ran out). */
  endSession?(sessionId: string): void;
  /** Tenant DNS blocklists (TenantPolicy spec.dnsbl) are checked at RCPT through this. */
  dnsbl?: DnsblChecker;
  /** DNS for sender authentication (TenantPolicy spec.authentication); unset: no tenant's checks run. */
  authResolve?: Resolve;
}

export const REPLY = {
  tooManyRecipients: () => smtpError(452, '4.5.3', 'Too many recipients'),
  rateLimited: () => smtpError(451, '4.7.1', 'Rate limit exceeded, try again later'),
  split: () => smtpError(452, '4.5.3', 'Recipient routes elsewhere, send it in a separate transaction'),
  upstreamUnavailable: () => smtpError(451, '4.4.1', 'Upstream unavailable, try again later'),
  upstreamLost: () => smtpError(451, '4.4.2', 'Upstream connection lost, try again later'),
  upstreamProtocol: () => smtpError(451, '4.5.0', 'Upstream protocol error, try again later'),
  tooBig: (n: number) => smtpError(552, '5.3.4', `Message size exceeds fixed limit of ${n} bytes`),
  badLineEnding: () => smtpError(550, '5.6.0', 'Bare CR or LF next to a line-leading dot; message refused'),
  noConfig: () => smtpError(451, '4.3.0', 'Relay has no routing config yet, try again later'),
  noPostmaster: () =>
    smtpError(550, '5.1.1', 'No mailbox for <postmaster> without a domain here; use postmaster@DOMAIN'),
  tooManyHops: () => smtpError(554, '5.4.6', 'Too many hops'),
  loop: (recipient: string) => smtpError(554, '5.4.6', `Mail for <${recipient}> loops back to myself`),
  tooManyTransactions: () =>
    smtpError(421, '4.7.0', 'Too many transactions in one session, closing connection'),
  headerTooLarge: (n: number) =>
    smtpError(552, '5.3.4', `Header section exceeds ${n} bytes (sender authentication reads it whole)`),
};

/** RFC 5321 §4.5.1: `<Postmaster>` without a domain, any case, must be accepted. */
function isBarePostmaster(address: string): boolean {
  return address.toLowerCase() === 'postmaster';
}

/** A reply the protocol does not allow at that step (relay/upstream/reply.ts), or a malformed one. */
function isProtocolError(err: unknown): boolean {
  return err instanceof UpstreamError && err.kind === 'protocol';
}

/**
 * The upstream's refusal for the client. An upstream that names the rewritten recipient is shown
 * naming the one the client sent: the rewritten address is the tenant's internal business.
 */
function upstreamRefusal(r: SmtpReply, recipient?: string, rewrittenTo?: string): SmtpError {
  const enhanced = r.enhancedCode ?? `${Math.floor(r.code / 100)}.0.0`;
  const text =
    recipient !== undefined && rewrittenTo !== undefined
      ? r.text.replace(new RegExp(escapeRegExp(rewrittenTo), 'gi'), recipient)
      : r.text;
  return smtpError(r.code, enhanced, `upstream: ${text}`);
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

type RecipientResult = 'accepted' | 'rejected' | 'deferred';
type MessageResult = 'relayed' | 'rejected' | 'deferred' | 'failed' | 'abandoned';

interface RecipientLog {
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
interface NotRecorded {
  tenant: string;
  result: RecipientResult;
  /** The code of the first one not recorded. */
  code: number;
  count: number;
}

class Transaction {
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
  /**
   * Sender authentication of the transaction (its recipients' tenants share one policy, see
   * authKey), the tenant it counts for, and SPF, started at the first accepted recipient.
   */
  auth: TenantAuthentication | undefined;
  authKey: string | undefined;
  authTenant = '';
  spf: Promise<SpfVerdict> | undefined;
  firstTenant = '';
  firstRoute = '';
  upstreamKey: string | undefined;
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
}

interface SessionState {
  tx: Transaction | undefined;
  transactions: number;
}

export class SmtpHandlers {
  private readonly deps: TransactionDeps;
  private readonly limits: Pick<
    FairnessLimits,
    'upstreamHoldMs' | 'recipientsPerTransaction' | 'recordedRecipients'
  >;
  private readonly sessions = new Map<string, SessionState>();
  private active = 0;
  private idleWaiters: Array<() => void> = [];

  constructor(deps: TransactionDeps) {
    this.deps = deps;
    this.limits = {
      upstreamHoldMs: deps.fairness?.upstreamHoldMs ?? DEFAULT_FAIRNESS.upstreamHoldMs,
      recipientsPerTransaction:
        deps.fairness?.recipientsPerTransaction ?? DEFAULT_FAIRNESS.recipientsPerTransaction,
      recordedRecipients: deps.fairness?.recordedRecipients ?? DEFAULT_FAIRNESS.recordedRecipients,
    };
  }

  private state(session: SMTPServerSession): SessionState {
    let s = this.sessions.get(session.id);
    if (!s) {
      s = { tx: undefined, transactions: 0 };
      this.sessions.set(session.id, s);
    }
    return s;
  }

  inTransaction(session: SMTPServerSession): boolean {
    return this.sessions.get(session.id)?.tx !== undefined;
  }

  /** Transactions (MAIL FROM seen, not finished) in this relay. */
  get activeTransactions(): number {
    return this.active;
  }

  whenIdle(): Promise<void> {
    if (this.active === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const snapshot = this.deps.snapshot();
    if (!snapshot) {
      cb(REPLY.noConfig());
      return;
    }
    const s = this.state(session);
    if (s.transactions >= this.deps.maxTransactions) {
      cb(REPLY.tooManyTransactions());
      return;
    }
    s.transactions++;
    const args = address.args || {};
    const params: MailParams = {};
    if (args.SIZE) params.size = Number(args.SIZE);
    if (args.BODY) params.body = String(args.BODY).toUpperCase() === '8BITMIME' ? '8BITMIME' : '7BIT';
    if (args.SMTPUTF8) params.smtputf8 = true;
    s.tx = new Transaction(snapshot, address.address, params, session);
    this.active++;
    cb();
  }

  onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const s = this.state(session);
    const t = s.tx;
    if (!t) {
      cb(REPLY.upstreamUnavailable());
      return;
    }
    const rcpt = isBarePostmaster(address.address) ? this.deps.postmaster : address.address;
    if (rcpt === undefined) {
      this.recordRecipient(t, address.address, 'rejected', 550, 'no_postmaster', '', '');
      cb(REPLY.noPostmaster());
      return;
    }
    // <postmaster> is routed, forwarded and recorded as the configured address (as Postfix appends
    // $myorigin): the upstream never sees a domainless recipient
    // the hold clock does not run while the upstream is answering this RCPT
    clearTimeout(t.holdTimer);
    this.rcpt(t, rcpt, session).then(
      (err) => {
        this.armHold(t);
        cb(err);
      },
      (err: Error) => {
        this.deps.logger.error('rcpt handler failed', { error: err.message, session: session.id });
        cb(REPLY.upstreamUnavailable());
      },
    );
  }

  private recordRecipient(
    t: Transaction,
    address: string,
    result: RecipientResult,
    code: number,
    reason: string,
    tenant: string,
    route: string,
    rewrittenTo?: string,
  ): void {
    this.deps.metrics.recipientsTotal.inc({ tenant, route, result, reason });
    if (result === 'accepted') t.acceptedCount++;
    // accepted recipients are always recorded (bounded by recipientsPerTransaction); refused ones
    // only up to the limit, so a session of junk RCPTs cannot grow the log line and trace row
    if (result !== 'accepted' && t.recipients.length >= this.limits.recordedRecipients) {
      const key = `${tenant}\0${result}`;
      const n = t.notRecorded.get(key);
      if (n) n.count++;
      else t.notRecorded.set(key, { tenant, result, code, count: 1 });
      this.deps.metrics.limitHitsTotal.inc({ limit: 'recorded_recipients' });
      return;
    }
    t.recipients.push({
      address,
      result,
      code,
      ...(result === 'accepted' ? {} : { reason }),
      tenant,
      route,
      ...(rewrittenTo !== undefined ? { rewrittenTo } : {}),
    });
  }

  /** (Re)starts the hold clock of a transaction that holds an upstream, from its last progress. */
  private armHold(t: Transaction): void {
    clearTimeout(t.holdTimer);
    const holdMs = this.limits.upstreamHoldMs;
    if (holdMs <= 0 || !t.utx || t.done || t.inData) return;
    const left = Math.max(0, holdMs - (performance.now() - t.lastProgressAt));
    t.holdTimer = setTimeout(() => this.holdExpired(t), left);
    t.holdTimer.unref();
  }

  /** The client held an upstream connection without progress: give it back and end the session (Postfix smtpd_timeout). */
  private holdExpired(t: Transaction): void {
    if (t.done || t.inData || !t.utx) return;
    t.utx.release();
    t.utx = undefined;
    t.broken = true;
    this.deps.metrics.limitHitsTotal.inc({ limit: 'upstream_hold_time' });
    this.finish(t, 'abandoned', 421, 'upstream_hold_time', 0, false);
    this.deps.endSession?.(t.session);
  }

  private async rcpt(
    t: Transaction,
    address: string,
    session: SMTPServerSession,
  ): Promise<SmtpError | undefined> {
    const d = decideRecipient(t.snapshot.table, {
      recipient: address,
      sender: t.sender,
      clientIp: session.remoteAddress,
      tls: !!session.secure,
    });
    if (d.action === 'reject') {
      const result = d.code < 500 ? 'deferred' : 'rejected';
      this.recordRecipient(t, address, result, d.code, d.reason, d.tenant?.name ?? '', d.route?.name ?? '');
      return smtpError(d.code, d.enhancedCode, d.message);
    }
    const tenant = d.tenant;
    const route = d.route.name;
    // what the upstream is given; routing, limits, the log and the trace keep `address`
    const forward = d.rewrittenTo ?? address;
    const refuse = (err: SmtpError, reason: string) => {
      this.recordRecipient(
        t,
        address,
        err.responseCode < 500 ? 'deferred' : 'rejected',
        err.responseCode,
        reason,
        tenant.name,
        route,
        d.rewrittenTo,
      );
      return err;
    };
    if (t.acceptedCount >= this.limits.recipientsPerTransaction) {
      this.deps.metrics.limitHitsTotal.inc({ limit: 'recipients_per_transaction' });
      return refuse(FAIRNESS_REPLY.tooManyRecipients(), 'too_many_recipients');
    }
    if (tenant.dnsbl && this.deps.dnsbl) {
      if (!t.dnsblChecked.has(tenant.name)) {
        const refusal = await tenantDnsblRefusal(
          this.deps.dnsbl,
          tenant.name,
          tenant.dnsbl,
          session.remoteAddress,
          this.deps.logger,
        );
        if (t.done) return undefined;
        t.dnsblChecked.set(tenant.name, refusal && smtpError(refusal.code, refusal.enhanced, refusal.text));
      }
      const refusal = t.dnsblChecked.get(tenant.name);
      if (refusal) return refuse(refusal, refusal.responseCode < 500 ? 'dnsbl_tempfail' : 'dnsbl_listed');
    }
    const max = tenant.limits.maxRecipients;
    if (max !== undefined && (t.acceptedPerTenant.get(tenant.name) ?? 0) >= max) {
      return refuse(REPLY.tooManyRecipients(), 'too_many_recipients');
    }
    if (t.upstreamKey !== undefined && t.upstreamKey !== d.upstreamKey) return refuse(REPLY.split(), 'split');
    // one Authentication-Results header and one verdict per message: tenants whose policies differ
    // get separate transactions
    const authKey = tenant.authentication ? JSON.stringify(tenant.authentication) : '';
    if (t.authKey !== undefined && t.authKey !== authKey) return refuse(REPLY.split(), 'split');
    const tenantMax = tenant.limits.maxMessageSize;
    if (tenantMax !== undefined && t.params.size !== undefined && t.params.size > tenantMax) {
      return refuse(REPLY.tooBig(tenantMax), 'too_big');
    }
    if (t.broken) return refuse(REPLY.upstreamUnavailable(), 'upstream_unavailable');
    const rate = tenant.limits.rate;
    if (rate && !t.rateCounted.has(tenant.name)) {
      if (!this.deps.rateLimiter.take(`${tenant.name}\0${session.remoteAddress}`, rate)) {
        this.deps.metrics.rateLimiterKeys.set(this.deps.rateLimiter.size);
        return refuse(REPLY.rateLimited(), 'rate_limited');
      }
      this.deps.metrics.rateLimiterKeys.set(this.deps.rateLimiter.size);
      t.rateCounted.add(tenant.name);
    }

    let reply: SmtpReply;
    if (d.rewrittenTo !== undefined && t.utx && t.forwarded.has(forward.toLowerCase())) {
      // another recipient already reached this mailbox upstream in this transaction: like Postfix's
      // cleanup, drop the duplicate (the upstream's 250 for that address stands for both)
      reply = { code: 250, text: 'duplicate of an accepted recipient', lines: [] };
    } else if (!t.utx) {
      const shares = this.deps.upstreamShares;
      if (shares && !t.releaseShare) {
        const share = shares.take(t.clientIp, tenant.name);
        if (!share.ok) {
          this.deps.metrics.limitHitsTotal.inc({ limit: share.limit });
          const err =
            share.limit === 'upstream_per_client'
              ? FAIRNESS_REPLY.upstreamPerClient(t.clientIp)
              : FAIRNESS_REPLY.upstreamPerTenant();
          return refuse(err, share.limit);
        }
        t.releaseShare = share.release;
      }
      const opened = await this.open(t, d.upstreams, forward, address, tenant.name);
      if (t.done) {
        // the session went away while the upstream was being opened
        opened.tx?.release();
        return undefined;
      }
      if (!opened.tx) {
        t.releaseShare?.();
        t.releaseShare = undefined;
        if (opened.reply) {
          const err = upstreamRefusal(opened.reply, address, d.rewrittenTo);
          return refuse(err, opened.reply.code < 500 ? 'upstream_deferred' : 'upstream_rejected');
        }
        if (opened.loop) return refuse(REPLY.loop(address), 'mail_loop');
        if (opened.protocolError) return refuse(REPLY.upstreamProtocol(), 'upstream_protocol_error');
        return refuse(REPLY.upstreamUnavailable(), 'upstream_unavailable');
      }
      t.utx = opened.tx;
      t.upstreamLabel = opened.label;
      t.lastProgressAt = performance.now();
      reply = opened.reply as SmtpReply;
    } else {
      try {
        reply = await t.utx.rcpt(forward);
      } catch (err) {
        t.broken = true;
        t.utx?.abort();
        t.utx = undefined;
        if (isProtocolError(err)) {
          this.logUpstreamError(t, [tenant.name], t.upstreamLabel, err);
          return refuse(REPLY.upstreamProtocol(), 'upstream_protocol_error');
        }
        return refuse(REPLY.upstreamUnavailable(), 'upstream_unavailable');
      }
      if (t.done) return undefined;
    }
    if (reply.code >= 300) {
      return refuse(
        upstreamRefusal(reply, address, d.rewrittenTo),
        reply.code < 500 ? 'upstream_deferred' : 'upstream_rejected',
      );
    }
    t.upstreamKey = d.upstreamKey;
    t.authKey = authKey;
    if (tenant.authentication && this.deps.authResolve && !t.spf) {
      t.auth = tenant.authentication;
      t.authTenant = tenant.name;
      // SPF needs only the envelope: it runs while the client sends further RCPTs and DATA
      t.spf = checkSpf(
        { ip: t.clientIp, helo: t.received.helo, sender: t.sender },
        this.deps.authResolve,
        this.authservId(t.auth),
      );
    }
    t.forwarded.add(forward.toLowerCase());
    if (!t.tenants.has(tenant.name)) t.tenants.set(tenant.name, tenant);
    t.routes.add(route);
    if (!t.firstTenant) {
      t.firstTenant = tenant.name;
      t.firstRoute = route;
    }
    t.acceptedPerTenant.set(tenant.name, (t.acceptedPerTenant.get(tenant.name) ?? 0) + 1);
    t.lastProgressAt = performance.now();
    this.recordRecipient(t, address, 'accepted', 250, '', tenant.name, route, d.rewrittenTo);
    return undefined;
  }

  /**
   * Tries the upstreams in order: connection failures, 4xx at MAIL FROM or at the first RCPT move
   * on to the next; a 5xx is the upstream's permanent verdict and goes back to the client.
   */
  private async open(
    t: Transaction,
    upstreams: Upstream[],
    firstRecipient: string,
    /** As received: the Received header's `for` clause (what SIZE is grown by). */
    receivedRecipient: string,
    tenant: string,
  ): Promise<{ tx?: UpstreamTx; reply?: SmtpReply; label: string; protocolError?: boolean; loop?: boolean }> {
    const m = this.deps.metrics;
    let protocolError = false;
    for (const target of upstreams) {
      const label = targetLabel(target);
      const started = performance.now();
      try {
        const begun = await this.deps.pool.begin(target, t.sender, this.upstreamParams(t, receivedRecipient));
        m.upstreamLatency.observe(
          { upstream: label, phase: 'connect' },
          (performance.now() - started) / 1000,
        );
        if (!begun.ok) {
          if (begun.reply.code >= 500) {
            m.upstreamAttemptsTotal.inc({ upstream: label, result: 'refused' });
            return { reply: begun.reply, label };
          }
          m.upstreamAttemptsTotal.inc({ upstream: label, result: 'deferred' });
          continue;
        }
        if (t.done) return { tx: begun.tx, label };
        const reply = await begun.tx.rcpt(firstRecipient);
        if (reply.code >= 200 && reply.code < 300) {
          m.upstreamAttemptsTotal.inc({ upstream: label, result: 'ok' });
          return { tx: begun.tx, reply, label };
        }
        begun.tx.release();
        if (reply.code >= 500) {
          m.upstreamAttemptsTotal.inc({ upstream: label, result: 'refused' });
          return { reply, label };
        }
        m.upstreamAttemptsTotal.inc({ upstream: label, result: 'deferred' });
      } catch (err) {
        const protocol = isProtocolError(err);
        protocolError ||= protocol;
        const loop = err instanceof UpstreamError && err.kind === 'loop';
        // one `error` result for every failed attempt (the upstream-errors alert counts them); the
        // log line and the recipient's reason say which kind
        m.upstreamAttemptsTotal.inc({ upstream: label, result: 'error' });
        this.logUpstreamError(t, [tenant], label, err);
        // the route leads back to this relay or its fleet: no other upstream of it makes that right
        if (loop) return { label, loop: true };
      }
    }
    // every upstream failed or deferred: the client gets 451 4.4.1, not one upstream's text
    return { label: '', protocolError };
  }

  private authservId(a: TenantAuthentication): string {
    return a.authservId ?? this.deps.hostname;
  }

  /** Counts a message's authentication results and what was done, per tenant (no addresses). */
  private countAuth(tenant: string, r: Awaited<ReturnType<AuthGate['finish']>>): void {
    const m = this.deps.metrics;
    m.authResultsTotal.inc({ tenant, check: 'spf', result: r.outcome.spf });
    for (const d of r.outcome.dkim) m.authResultsTotal.inc({ tenant, check: 'dkim', result: d });
    m.authResultsTotal.inc({ tenant, check: 'arc', result: r.outcome.arc });
    m.authResultsTotal.inc({ tenant, check: 'dmarc', result: r.outcome.dmarc });
    const action =
      r.decision.action === 'accept'
        ? r.annotation
        : r.decision.action === 'reject'
          ? 'rejected'
          : 'deferred';
    m.authActionsTotal.inc({ tenant, action, reason: r.decision.reason });
  }

  /** Our Received header for this transaction; the `for` clause only for a single recipient. */
  private received(t: Transaction, recipient: string | undefined): Buffer {
    return receivedHeader({ ...t.received, by: this.deps.hostname, recipient, date: new Date() });
  }

  /**
   * MAIL parameters toward the upstream: a declared SIZE grows by our Received header (the longest it
   * can be: with the first recipient's `for` clause), so the upstream is told the size it will get;
   * the client's identity goes along for XCLIENT.
   */
  private upstreamParams(t: Transaction, firstRecipient: string): MailParams {
    const r = t.received;
    const params: MailParams = {
      ...t.params,
      // for routes whose upstream takes XCLIENT: the next hop sees the real client
      client: { addr: r.clientIp, helo: r.helo, proto: r.protocol === 'SMTP' ? 'SMTP' : 'ESMTP' },
    };
    if (t.params.size !== undefined) params.size = t.params.size + this.received(t, firstRecipient).length;
    return params;
  }

  /**
   * An upstream failure for the log. The error quotes the upstream's reply, which may name addresses:
   * they are shown as the transaction's own addresses are (a pseudonymising tenant's form).
   */
  private logUpstreamError(t: Transaction, tenants: readonly string[], upstream: string, err: unknown): void {
    const raw = (err as Error).message;
    const error = this.deps.privacy.logText(t.snapshot.table.config, tenants, raw);
    const kind = err instanceof UpstreamError ? err.kind : undefined;
    const msg =
      kind === 'protocol'
        ? 'upstream protocol error'
        : kind === 'loop'
          ? 'mail loop'
          : 'upstream attempt failed';
    this.deps.logger.warn(msg, {
      txid: t.id,
      upstream,
      error,
    });
  }

  onData(
    stream: RawSMTPDataStream,
    session: SMTPServerSession,
    cb: (err?: Error | null, message?: string) => void,
  ): void {
    const t = this.sessions.get(session.id)?.tx;
    if (!t) {
      stream.resume();
      cb(REPLY.upstreamUnavailable());
      return;
    }
    t.inData = true;
    clearTimeout(t.holdTimer);
    this.data(t, stream).then(
      ({ err, message }) => cb(err, message),
      (err: Error) => {
        this.deps.logger.error('data handler failed', { error: err.message, txid: t.id });
        cb(REPLY.upstreamLost());
      },
    );
  }

  private async data(
    t: Transaction,
    stream: RawSMTPDataStream,
  ): Promise<{ err?: SmtpError; message?: string }> {
    const started = performance.now();
    let limit = this.deps.maxMessageSize;
    for (const tenant of t.tenants.values()) {
      if (tenant.limits.maxMessageSize !== undefined) limit = Math.min(limit, tenant.limits.maxMessageSize);
    }
    let failure: { err: SmtpError; reason: string; result: MessageResult } | undefined;
    let utx = t.utx;
    const fail = (err: SmtpError, reason: string, result: MessageResult, how: 'abort' | 'release') => {
      if (failure) return;
      failure = { err, reason, result };
      if (utx) {
        if (how === 'abort') utx.abort();
        else utx.release();
      }
      utx = undefined;
      t.utx = undefined;
      // drain the rest of the client's message; the reply goes out after its terminator
      stream.resume();
    };
    let clientGone = false;
    const ended = new Promise<void>((resolve) => {
      stream.once('end', () => resolve());
      stream.once('close', () => {
        if (!stream.readableEnded) {
          clientGone = true;
          fail(REPLY.upstreamLost(), 'client_disconnected', 'failed', 'abort');
          resolve();
        }
      });
      stream.on('error', () => {
        // the client went away; handled by 'close'
      });
    });
    stream.once('bad-line-ending', () => fail(REPLY.badLineEnding(), 'bad_line_ending', 'rejected', 'abort'));

    // consented capture: decided now (expiry checked per message), reserved in the store while the
    // upstream answers DATA; undefined at once for everyone else (the fast path)
    const privacy = this.deps.privacy;
    const capturing =
      utx && !t.broken
        ? privacy.startCapture(
            t.snapshot.table.config,
            t.id,
            t.recipients.filter((r) => r.result === 'accepted'),
          )
        : undefined;
    if (!utx || t.broken) {
      fail(REPLY.upstreamUnavailable(), 'upstream_unavailable', 'deferred', 'abort');
    } else {
      // backpressure: nothing is read from the client until the upstream said 354
      try {
        const reply = await utx.data();
        if (reply.code !== 354) {
          fail(
            upstreamRefusal(reply),
            reply.code < 500 ? 'upstream_deferred' : 'upstream_rejected',
            reply.code < 500 ? 'deferred' : 'rejected',
            'release',
          );
        }
      } catch (err) {
        if (isProtocolError(err)) {
          this.logUpstreamError(t, [...t.tenants.keys()], t.upstreamLabel, err);
          fail(REPLY.upstreamProtocol(), 'upstream_protocol_error', 'deferred', 'abort');
        } else fail(REPLY.upstreamLost(), 'upstream_failed', 'deferred', 'abort');
      }
    }
    let tee: CaptureTee | undefined;
    if (capturing) {
      tee = await capturing.catch(() => undefined);
      if (tee && failure) {
        privacy.endCapture(tee, false);
        tee = undefined;
      }
    }
    let gate: AuthGate | undefined;
    if (!failure && utx && t.auth && t.spf && this.deps.authResolve) {
      // SPF was started at RCPT; its result goes into a streamed message's header
      const spf = await t.spf;
      gate = new AuthGate(
        t.auth,
        this.authservId(t.auth),
        spf,
        new MessageVerifier(t.spf, this.deps.authResolve, t.sender),
        utx,
      );
    }
    if (!failure && utx) {
      const out = utx;
      const sink = gate ?? out;
      const accepted = t.recipients.filter((r) => r.result === 'accepted');
      // prepended to the client's bytes, which follow untouched; not part of a consented capture
      // (that is the client's message) nor of the size limits (they count what the client sent)
      out.write(this.received(t, accepted.length === 1 ? accepted[0].address : undefined));
      const hops = new HopCounter();
      let bytes = 0;
      stream.on('data', (chunk: Buffer) => {
        if (failure) return;
        bytes += chunk.length;
        if (bytes > limit) return fail(REPLY.tooBig(limit), 'too_big', 'rejected', 'abort');
        if (hops.push(chunk) >= this.deps.maxHops) {
          return fail(REPLY.tooManyHops(), 'too_many_hops', 'rejected', 'abort');
        }
        tee?.write(chunk);
        let flowing: boolean;
        try {
          flowing = sink.write(chunk);
        } catch (err) {
          if (err instanceof HeaderTooLarge) {
            return fail(REPLY.headerTooLarge(err.limit), 'header_too_large', 'rejected', 'abort');
          }
          return fail(REPLY.upstreamLost(), 'upstream_failed', 'deferred', 'abort');
        }
        if (!flowing) {
          stream.pause();
          // the pool also emits 'drain' when the connection dies; end() then rejects (451 4.4.2)
          out.once('drain', () => {
            if (!failure) stream.resume();
          });
        }
      });
    }
    await ended;
    if (!failure && stream.byteLength > limit) fail(REPLY.tooBig(limit), 'too_big', 'rejected', 'abort');
    if (!failure && stream.badLineEnding) fail(REPLY.badLineEnding(), 'bad_line_ending', 'rejected', 'abort');
    if (gate && !failure) {
      // the decision falls before the upstream is given the final dot: a refused message is
      // aborted there (the connection is dropped), never committed
      const r = await gate.finish();
      this.countAuth(t.authTenant, r);
      if (r.decision.action !== 'accept') {
        const d = r.decision;
        this.deps.logger.info(
          `message ${d.action === 'reject' ? 'rejected' : 'deferred'}: sender authentication`,
          {
            txid: t.id,
            tenant: t.authTenant,
            reason: d.reason,
            spf: r.outcome.spf,
            dkim: r.outcome.dkim,
            dmarc: r.outcome.dmarc,
            domain: r.outcome.domain,
          },
        );
        fail(
          smtpError(d.code, d.enhanced, d.text),
          `auth_${d.reason}`,
          d.action === 'reject' ? 'rejected' : 'deferred',
          'abort',
        );
      }
    } else if (gate) gate.abort();
    // kept only when the whole message was received and handed to the upstream
    if (tee) privacy.endCapture(tee, !failure);
    let result: { err?: SmtpError; message?: string };
    let code: number;
    let msgResult: MessageResult;
    let reason: string;
    if (failure) {
      result = { err: failure.err };
      code = failure.err.responseCode;
      msgResult = failure.result;
      reason = failure.reason;
    } else {
      const out = utx as UpstreamTx;
      try {
        const final = await out.end();
        this.deps.metrics.upstreamLatency.observe(
          { upstream: t.upstreamLabel, phase: 'transaction' },
          (performance.now() - started) / 1000,
        );
        out.release();
        t.utx = undefined;
        code = final.code;
        if (final.code >= 200 && final.code < 300) {
          result = { message: `2.0.0 OK ${final.text}`.trim() };
          msgResult = 'relayed';
          reason = 'ok';
        } else {
          result = { err: upstreamRefusal(final) };
          msgResult = final.code < 500 ? 'deferred' : 'rejected';
          reason = final.code < 500 ? 'upstream_deferred' : 'upstream_rejected';
        }
      } catch (err) {
        out.abort();
        t.utx = undefined;
        const protocol = isProtocolError(err);
        if (protocol) this.logUpstreamError(t, [...t.tenants.keys()], t.upstreamLabel, err);
        result = { err: protocol ? REPLY.upstreamProtocol() : REPLY.upstreamLost() };
        code = 451;
        msgResult = 'deferred';
        reason = protocol ? 'upstream_protocol_error' : 'upstream_failed';
      }
    }
    const size = stream.byteLength;
    const labels = { tenant: t.firstTenant, route: t.firstRoute, upstream: t.upstreamLabel };
    const metricResult = msgResult === 'abandoned' ? 'failed' : msgResult;
    this.deps.metrics.messagesTotal.inc({ ...labels, result: metricResult, reason });
    this.deps.metrics.messageBytesTotal.inc({ ...labels, result: metricResult }, size);
    this.finish(t, msgResult, code, reason, size, clientGone);
    return result;
  }

  /** RSET, EHLO, STARTTLS, and after DATA: the envelope is gone. */
  onReset(session: SMTPServerSession): void {
    const s = this.sessions.get(session.id);
    const t = s?.tx;
    if (!s || !t) return;
    if (t.inData && !t.done) return; // the DATA handler finishes it
    s.tx = undefined;
    if (!t.done) {
      t.utx?.release();
      t.utx = undefined;
      this.finish(t, 'abandoned', 0, 'reset', 0, false);
    }
  }

  onClose(session: SMTPServerSession): void {
    const s = this.sessions.get(session.id);
    this.sessions.delete(session.id);
    const t = s?.tx;
    if (!t || t.done) return;
    if (t.inData) return; // the data stream is destroyed and the DATA handler aborts
    t.utx?.release();
    t.utx = undefined;
    this.finish(t, 'abandoned', 0, 'client_disconnected', 0, true);
  }

  private finish(
    t: Transaction,
    result: MessageResult,
    code: number,
    reason: string,
    size: number,
    clientGone: boolean,
  ): void {
    if (t.done) return;
    t.done = true;
    clearTimeout(t.holdTimer);
    t.releaseShare?.();
    t.releaseShare = undefined;
    const privacy = this.deps.privacy;
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
    const durationMs = Math.round(performance.now() - t.startedAt);
    this.deps.logger.info('transaction', {
      txid: t.id,
      session: t.session,
      clientIp: t.clientIp,
      tls: t.tls,
      configHash: t.snapshot.hash,
      tenants: [...t.tenants.keys()],
      routes: [...t.routes],
      sender: shown.sender,
      recipients: t.recipients.map((r, i) => ({
        address: shown.recipients[i],
        result: r.result,
        code: r.code,
        ...(r.reason !== undefined ? { reason: r.reason } : {}),
        ...(r.rewrittenTo !== undefined && rewritten ? { rewrittenTo: rewritten[i] } : {}),
      })),
      ...(t.notRecorded.size > 0
        ? {
            recipientsNotRecorded: [...t.notRecorded.values()].map((n) => ({
              result: n.result,
              code: n.code,
              count: n.count,
            })),
          }
        : {}),
      size,
      upstream: t.upstreamLabel || undefined,
      result,
      code: code || undefined,
      reason,
      clientDisconnected: clientGone || undefined,
      durationMs,
    });
    privacy.finished(config, {
      timeMs: Date.now(),
      txid: t.id,
      clientIp: t.clientIp,
      tls: t.tls,
      sender: t.sender,
      recipients: t.notRecorded.size > 0 ? [...t.recipients, ...notRecordedMarkers(t)] : t.recipients,
      size,
      upstream: t.upstreamLabel,
      result,
      code,
      durationMs,
    });
    this.active--;
    if (this.active === 0) {
      // after the reply to the client has been written (it is sent once this handler returns)
      setImmediate(() => {
        if (this.active !== 0) return;
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const w of waiters) w();
      });
    }
  }
}

/** Trace markers for the refused recipients that were counted but not recorded (address ''). */
function notRecordedMarkers(t: Transaction) {
  return [...t.notRecorded.values()].map((n) => ({
    address: '',
    result: n.result,
    code: n.code,
    reason: 'not_recorded',
    omitted: n.count,
    tenant: n.tenant,
    route: '',
  }));
}
