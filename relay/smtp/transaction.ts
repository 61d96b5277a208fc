import type { SMTPServerAddress, SMTPServerSession } from 'smtp-server';
import type { Tenant, Upstream } from '../../contract/config/types.gen.ts';
import type { Logger } from '../../platform/log.ts';
import { checkSpf, type Resolve } from '../auth/verify.ts';
import type { DnsblChecker } from '../dnsbl/check.ts';
import { tenantDnsblRefusal } from '../dnsbl/rcpt.ts';
import type { RelayMetrics } from '../observability/metrics.ts';
import { decideRecipient, type RecipientDecision } from '../routing/decide.ts';
import { joinsTransaction, transactionScope } from '../routing/transaction-scope.ts';
import type { PrivacyHooks } from '../trace/privacy.ts';
import { targetLabel } from '../upstream/connection.ts';
import { UpstreamError } from '../upstream/errors.ts';
import { DataTransfer, isProtocolError } from './data-transfer.ts';
import { DEFAULT_FAIRNESS, type FairnessLimits, type UpstreamShares } from './fairness.ts';
import type { RateLimiter } from './rate-limit.ts';
import type { RawSMTPDataStream } from './raw-data-stream.ts';
import { FAIRNESS_REPLY, REPLY, type SmtpError, smtpError, upstreamRefusal } from './replies.ts';
import { logUpstreamError, reportTransaction } from './transaction-report.ts';
import {
  type ConfigSnapshot,
  mailParams,
  type RecipientResult,
  Transaction,
  type TransactionOutcome,
} from './transaction-state.ts';
import type { SmtpReply, UpstreamPoolLike, UpstreamTx } from './upstream-contract.ts';

/**
 * Per-session transaction orchestration: MAIL FROM captures the config snapshot (hot reload: new
 * transactions use the new config, in-flight ones finish on theirs), each RCPT is decided by the
 * routing table and then by the upstream itself (the first accepted recipient opens the upstream
 * transaction, later ones are passed to it), DATA streams the raw bytes through (data-transfer.ts),
 * and the client's 250 is sent strictly after the upstream's 250. Replies: replies.ts, tabled in
 * docs/architecture.md.
 */

export type { ConfigSnapshot } from './transaction-state.ts';

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

/** RFC 5321 §4.5.1: `<Postmaster>` without a domain, any case, must be accepted. */
function isBarePostmaster(address: string): boolean {
  return address.toLowerCase() === 'postmaster';
}

interface SessionState {
  tx: Transaction | undefined;
  transactions: number;
}

/** One RCPT the routing table relays: what the checks and the upstream step work on. */
interface RcptCase {
  t: Transaction;
  d: Extract<RecipientDecision, { action: 'relay' }>;
  /** As received: routing, limits, the log and the trace use it. */
  address: string;
  /** What the upstream is given (the rewritten address, when the route rewrites). */
  forward: string;
  tenant: Tenant;
  route: string;
  scope: string;
  clientIp: string;
}

/** A refusal of one recipient, with its metric reason. */
interface Refusal {
  err: SmtpError;
  reason: string;
}

/** The transaction ended (client gone, hold time) while a RCPT was waiting: no reply is owed. */
const GONE = 'gone';

type Opened = { tx?: UpstreamTx; reply?: SmtpReply; label: string; protocolError?: boolean; loop?: boolean };

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
    s.tx = new Transaction(snapshot, address.address, mailParams(address.args), session);
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
    this.finish(t, {
      result: 'abandoned',
      code: 421,
      reason: 'upstream_hold_time',
      size: 0,
      clientGone: false,
    });
    this.deps.endSession?.(t.session);
  }

  /** One recipient: the routing decision, the relay's checks, then the upstream's own verdict. */
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
    const c: RcptCase = {
      t,
      d,
      address,
      forward: d.rewrittenTo ?? address,
      tenant: d.tenant,
      route: d.route.name,
      scope: transactionScope(d),
      clientIp: session.remoteAddress,
    };
    const refusal = await this.checkRecipient(c);
    if (refusal === GONE) return undefined;
    if (refusal) return this.refuse(c, refusal);
    const answer = await this.upstreamRcpt(c);
    if (answer === GONE) return undefined;
    if ('err' in answer) return this.refuse(c, answer);
    if (answer.code >= 300) {
      return this.refuse(c, {
        err: upstreamRefusal(answer, address, d.rewrittenTo),
        reason: answer.code < 500 ? 'upstream_deferred' : 'upstream_rejected',
      });
    }
    this.accept(c);
    return undefined;
  }

  private refuse(c: RcptCase, r: Refusal): SmtpError {
    const code = r.err.responseCode;
    const result = code < 500 ? 'deferred' : 'rejected';
    this.recordRecipient(c.t, c.address, result, code, r.reason, c.tenant.name, c.route, c.d.rewrittenTo);
    return r.err;
  }

  /** The relay's own limits and policies for a routed recipient, before any upstream is asked. */
  private async checkRecipient(c: RcptCase): Promise<Refusal | typeof GONE | undefined> {
    const { t, tenant } = c;
    if (t.acceptedCount >= this.limits.recipientsPerTransaction) {
      this.deps.metrics.limitHitsTotal.inc({ limit: 'recipients_per_transaction' });
      return { err: FAIRNESS_REPLY.tooManyRecipients(), reason: 'too_many_recipients' };
    }
    const dnsbl = await this.tenantDnsbl(c);
    if (dnsbl) return dnsbl;
    const max = tenant.limits.maxRecipients;
    if (max !== undefined && (t.acceptedPerTenant.get(tenant.name) ?? 0) >= max) {
      return { err: REPLY.tooManyRecipients(), reason: 'too_many_recipients' };
    }
    if (!joinsTransaction(t.scope, c.scope)) return { err: REPLY.split(), reason: 'split' };
    const tenantMax = tenant.limits.maxMessageSize;
    if (tenantMax !== undefined && t.params.size !== undefined && t.params.size > tenantMax) {
      return { err: REPLY.tooBig(tenantMax), reason: 'too_big' };
    }
    if (t.broken) return { err: REPLY.upstreamUnavailable(), reason: 'upstream_unavailable' };
    return this.rateLimit(c);
  }

  /** The tenant's DNS blocklists (TenantPolicy spec.dnsbl), looked up once per transaction. */
  private async tenantDnsbl(c: RcptCase): Promise<Refusal | typeof GONE | undefined> {
    const { t, tenant } = c;
    if (!tenant.dnsbl || !this.deps.dnsbl) return undefined;
    if (!t.dnsblChecked.has(tenant.name)) {
      const r = await tenantDnsblRefusal(
        this.deps.dnsbl,
        tenant.name,
        tenant.dnsbl,
        c.clientIp,
        this.deps.logger,
      );
      if (t.done) return GONE;
      t.dnsblChecked.set(tenant.name, r && smtpError(r.code, r.enhanced, r.text));
    }
    const err = t.dnsblChecked.get(tenant.name);
    if (!err) return undefined;
    return { err, reason: err.responseCode < 500 ? 'dnsbl_tempfail' : 'dnsbl_listed' };
  }

  /** The tenant's rate limit, counted once per transaction and client address. */
  private rateLimit(c: RcptCase): Refusal | undefined {
    const { t, tenant } = c;
    const rate = tenant.limits.rate;
    if (!rate || t.rateCounted.has(tenant.name)) return undefined;
    const limiter = this.deps.rateLimiter;
    const ok = limiter.take(`${tenant.name}\0${c.clientIp}`, rate);
    this.deps.metrics.rateLimiterKeys.set(limiter.size);
    if (!ok) return { err: REPLY.rateLimited(), reason: 'rate_limited' };
    t.rateCounted.add(tenant.name);
    return undefined;
  }

  /** The upstream's reply to this RCPT: opening the upstream transaction for the first recipient. */
  private async upstreamRcpt(c: RcptCase): Promise<SmtpReply | Refusal | typeof GONE> {
    const t = c.t;
    if (c.d.rewrittenTo !== undefined && t.utx && t.forwarded.has(c.forward.toLowerCase())) {
      // another recipient already reached this mailbox upstream in this transaction: like Postfix's
      // cleanup, drop the duplicate (the upstream's 250 for that address stands for both)
      return { code: 250, text: 'duplicate of an accepted recipient', lines: [] };
    }
    if (!t.utx) return this.openUpstream(c);
    try {
      const reply = await t.utx.rcpt(c.forward);
      return t.done ? GONE : reply;
    } catch (err) {
      t.broken = true;
      t.utx?.abort();
      t.utx = undefined;
      if (isProtocolError(err)) {
        logUpstreamError(this.deps, t, [c.tenant.name], t.upstreamLabel, err);
        return { err: REPLY.upstreamProtocol(), reason: 'upstream_protocol_error' };
      }
      return { err: REPLY.upstreamUnavailable(), reason: 'upstream_unavailable' };
    }
  }

  /** The first recipient: take an upstream share, then the route's upstreams in order. */
  private async openUpstream(c: RcptCase): Promise<SmtpReply | Refusal | typeof GONE> {
    const t = c.t;
    const shares = this.deps.upstreamShares;
    if (shares && !t.releaseShare) {
      const share = shares.take(t.clientIp, c.tenant.name);
      if (!share.ok) {
        this.deps.metrics.limitHitsTotal.inc({ limit: share.limit });
        const err =
          share.limit === 'upstream_per_client'
            ? FAIRNESS_REPLY.upstreamPerClient(t.clientIp)
            : FAIRNESS_REPLY.upstreamPerTenant();
        return { err, reason: share.limit };
      }
      t.releaseShare = share.release;
    }
    const opened = await this.open(t, c.d.upstreams, c.forward, c.address, c.tenant.name);
    if (t.done) {
      // the session went away while the upstream was being opened
      opened.tx?.release();
      return GONE;
    }
    if (!opened.tx) {
      t.releaseShare?.();
      t.releaseShare = undefined;
      return openRefusal(opened, c);
    }
    t.utx = opened.tx;
    t.upstreamLabel = opened.label;
    t.lastProgressAt = performance.now();
    return opened.reply as SmtpReply;
  }

  /** An accepted recipient joins the transaction; the first one fixes its scope and starts SPF. */
  private accept(c: RcptCase): void {
    const { t, tenant, route } = c;
    t.scope = c.scope;
    if (tenant.authentication && this.deps.authResolve && !t.spf) {
      t.auth = tenant.authentication;
      t.authTenant = tenant.name;
      // SPF needs only the envelope: it runs while the client sends further RCPTs and DATA
      t.spf = checkSpf(
        { ip: t.clientIp, helo: t.received.helo, sender: t.sender },
        this.deps.authResolve,
        t.auth.authservId ?? this.deps.hostname,
      );
    }
    t.forwarded.add(c.forward.toLowerCase());
    if (!t.tenants.has(tenant.name)) t.tenants.set(tenant.name, tenant);
    t.routes.add(route);
    if (!t.firstTenant) {
      t.firstTenant = tenant.name;
      t.firstRoute = route;
    }
    t.acceptedPerTenant.set(tenant.name, (t.acceptedPerTenant.get(tenant.name) ?? 0) + 1);
    t.lastProgressAt = performance.now();
    this.recordRecipient(t, c.address, 'accepted', 250, '', tenant.name, route, c.d.rewrittenTo);
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
  ): Promise<Opened> {
    const m = this.deps.metrics;
    let protocolError = false;
    for (const target of upstreams) {
      const label = targetLabel(target);
      const started = performance.now();
      try {
        const begun = await this.deps.pool.begin(
          target,
          t.sender,
          t.upstreamParams(this.deps.hostname, receivedRecipient),
        );
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
        logUpstreamError(this.deps, t, [tenant], label, err);
        // the route leads back to this relay or its fleet: no other upstream of it makes that right
        if (loop) return { label, loop: true };
      }
    }
    // every upstream failed or deferred: the client gets 451 4.4.1, not one upstream's text
    return { label: '', protocolError };
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
    new DataTransfer(this.deps, t, stream).run().then(
      ({ reply, outcome }) => {
        this.countMessage(t, outcome);
        this.finish(t, outcome);
        cb(reply.err, reply.message);
      },
      (err: Error) => {
        this.deps.logger.error('data handler failed', { error: err.message, txid: t.id });
        cb(REPLY.upstreamLost());
      },
    );
  }

  private countMessage(t: Transaction, o: TransactionOutcome): void {
    const labels = { tenant: t.firstTenant, route: t.firstRoute, upstream: t.upstreamLabel };
    const result = o.result === 'abandoned' ? 'failed' : o.result;
    this.deps.metrics.messagesTotal.inc({ ...labels, result, reason: o.reason });
    this.deps.metrics.messageBytesTotal.inc({ ...labels, result }, o.size);
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
      this.finish(t, { result: 'abandoned', code: 0, reason: 'reset', size: 0, clientGone: false });
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
    this.finish(t, {
      result: 'abandoned',
      code: 0,
      reason: 'client_disconnected',
      size: 0,
      clientGone: true,
    });
  }

  private finish(t: Transaction, outcome: TransactionOutcome): void {
    if (t.done) return;
    t.done = true;
    clearTimeout(t.holdTimer);
    t.releaseShare?.();
    t.releaseShare = undefined;
    reportTransaction(this.deps, t, outcome);
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

/** Why no upstream of the route took the first recipient. */
function openRefusal(opened: Opened, c: RcptCase): Refusal {
  if (opened.reply) {
    const err = upstreamRefusal(opened.reply, c.address, c.d.rewrittenTo);
    return { err, reason: opened.reply.code < 500 ? 'upstream_deferred' : 'upstream_rejected' };
  }
  if (opened.loop) return { err: REPLY.loop(c.address), reason: 'mail_loop' };
  if (opened.protocolError) return { err: REPLY.upstreamProtocol(), reason: 'upstream_protocol_error' };
  return { err: REPLY.upstreamUnavailable(), reason: 'upstream_unavailable' };
}
