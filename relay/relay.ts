import type http from 'node:http';
import type { AddressInfo, Server } from 'node:net';
import os from 'node:os';
import { createLogger, type Logger } from '../platform/log.ts';
import { createAdminServer } from './admin-http.ts';
import type { FileWatcher } from './config/file-watch.ts';
import { RelayMetrics } from './observability/metrics.ts';
import { createPseudonymizer } from './observability/pseudonymize.ts';
import { type ApplyResult, RelayConfigState } from './relay-config-state.ts';
import { RELAY_DEFAULTS } from './relay-defaults.ts';
import { ConnectionFront } from './relay-front.ts';
import type { RelayOptions } from './relay-options.ts';
import {
  createDnsChecks,
  createPool,
  createPrivacy,
  createSmtpServer,
  listen,
  type RelaySettings,
  watchCertificate,
} from './relay-services.ts';
import { cidrMatcher } from './smtp/cidr.ts';
import { ConnectionLimiter, DEFAULT_FAIRNESS, UpstreamShares } from './smtp/fairness.ts';
import { RateLimiter } from './smtp/rate-limit.ts';
import { FAIRNESS_REPLY, SESSION_REPLY } from './smtp/replies.ts';
import type { RelayConnection, RelaySmtpServer } from './smtp/smtp-server-overrides.ts';
import { SmtpHandlers } from './smtp/transaction.ts';
import type { UpstreamPoolLike } from './smtp/upstream-contract.ts';
import type { PrivacyHooks } from './trace/privacy.ts';
import type { TraceWriter } from './trace/writer.ts';

export type { ApplyResult } from './relay-config-state.ts';

export type { RelayOptions } from './relay-options.ts';

export interface Relay {
  readonly metrics: RelayMetrics;
  readonly logger: Logger;
  /** Validates and swaps the routing config atomically; an invalid one is refused, the last good kept. */
  applyConfig(config: unknown, source?: string): ApplyResult;
  /** Records a config that could not even be parsed (watchConfigFile uses this). */
  reportConfigError(err: Error, source?: string): void;
  address(): { smtp: AddressInfo; admin?: AddressInfo };
  configInfo(): { hash: string | null; generation: number; loadedAt: string | null };
  readonly draining: boolean;
  /** Stop accepting, let transactions finish until the deadline, then 421 everyone and close the pool. */
  drain(deadlineMs: number): Promise<void>;
  /** Immediate shutdown (drain(0) plus the admin server). */
  close(): Promise<void>;
  /** Keeps a watcher alive with the relay and closes it on close() (CLI: watchConfigFile). */
  own(watcher: FileWatcher): void;
  /** Settles pending captures and writes buffered trace entries (tests; close() does it too). */
  flushTrace(): Promise<void>;
  /** The trace writer, when a trace store is configured. */
  readonly traceWriter?: TraceWriter;
}

/** Option checks that need no resource: a bad value fails before anything is opened. */
function resolveSettings(opts: RelayOptions): RelaySettings {
  if (opts.postmaster !== undefined && !/^[^\s<>@]+@[^\s<>@]+$/.test(opts.postmaster)) {
    throw new TypeError(
      `postmaster must be an address like postmaster@example.com, got "${opts.postmaster}"`,
    );
  }
  cidrMatcher(opts.trustedProxies ?? []);
  if (opts.dnsbl) cidrMatcher(opts.dnsbl.allow); // a bad allow-list entry fails at start-up
  if (opts.fleetId !== undefined && !/^[A-Za-z0-9._-]{1,64}$/.test(opts.fleetId)) {
    throw new TypeError(`fleetId must be 1-64 letters, digits, '.', '_' or '-', got "${opts.fleetId}"`);
  }
  return {
    hostname: opts.hostname ?? os.hostname(),
    maxMessageSize: opts.maxMessageSize ?? RELAY_DEFAULTS.maxMessageSize,
    fleetMark: opts.fleetId === undefined ? undefined : `mailplus-fleet=${opts.fleetId}`,
    fairness: { ...DEFAULT_FAIRNESS, ...opts.fairness },
    now: opts.now ?? Date.now,
  };
}

export async function startRelay(opts: RelayOptions = {}): Promise<Relay> {
  const relay = new RelayInstance(opts, resolveSettings(opts));
  if (opts.config !== undefined) {
    const r = relay.applyConfig(opts.config, 'startRelay');
    if (!r.ok) {
      await relay.abort();
      throw new Error(`startRelay: initial config refused: ${r.error}`);
    }
  }
  await relay.listen(opts);
  return relay;
}

/**
 * One running relay: its config state, its lifecycle (draining, closed), and the parts it owns.
 * Built by startRelay(); the parts are made in relay-services.ts and relay-front.ts.
 */
class RelayInstance implements Relay {
  readonly metrics = new RelayMetrics();
  readonly logger: Logger;
  readonly traceWriter: TraceWriter | undefined;
  private readonly settings: RelaySettings;
  private readonly config: RelayConfigState;
  private readonly pool: UpstreamPoolLike;
  private readonly privacy: PrivacyHooks;
  private readonly handlers: SmtpHandlers;
  private readonly smtp: RelaySmtpServer;
  private readonly front: ConnectionFront;
  private readonly watchers: FileWatcher[] = [];
  private admin: http.Server | undefined;
  private drainingNow = false;
  private closed = false;
  private poolClosed: Promise<void> | undefined;

  constructor(opts: RelayOptions, s: RelaySettings) {
    this.settings = s;
    const metrics = this.metrics;
    const logger = createLogger(opts.logSink);
    this.logger = logger;
    this.config = new RelayConfigState(metrics, logger);
    this.pool = createPool(opts, s, metrics);
    const pseudonymize = createPseudonymizer(opts.pseudonymizeKey);
    const trace = createPrivacy(opts, s, metrics, logger, () => this.config.snapshot, pseudonymize);
    this.privacy = trace.privacy;
    this.traceWriter = trace.traceWriter;
    const dns = createDnsChecks(opts, s, metrics, logger);
    const exempt = cidrMatcher(opts.fairnessExempt ?? []);
    this.handlers = new SmtpHandlers({
      dnsbl: dns.dnsbl,
      authResolve: (name, rrtype) => dns.dnsLookup.resolve(name, rrtype),
      fairness: s.fairness,
      upstreamShares: new UpstreamShares(s.fairness, exempt),
      endSession: (sessionId) => this.endSession(sessionId),
      privacy: this.privacy,
      snapshot: () => this.config.snapshot,
      pool: this.pool,
      metrics,
      logger,
      rateLimiter: new RateLimiter(),
      maxMessageSize: s.maxMessageSize,
      maxTransactions: opts.maxTransactions ?? RELAY_DEFAULTS.maxTransactions,
      postmaster: opts.postmaster,
      hostname: s.hostname,
      maxHops: opts.maxHops ?? RELAY_DEFAULTS.maxHops,
    });
    this.smtp = createSmtpServer(opts, s, this.handlers, metrics, { isDraining: () => this.drainingNow });
    this.smtp.on('error', (err: Error & { code?: string }) => {
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') return;
      logger.warn('smtp session error', { error: err.message, code: err.code });
    });
    if (opts.tlsCert && opts.tlsKey) {
      this.watchers.push(
        watchCertificate({ ...opts, tlsCert: opts.tlsCert, tlsKey: opts.tlsKey }, this.smtp, metrics, logger),
      );
    }
    this.front = new ConnectionFront({
      smtp: this.smtp,
      hostname: s.hostname,
      metrics,
      logger,
      connectionLimiter: new ConnectionLimiter(s.fairness, exempt),
      trustedProxies: opts.trustedProxies ?? [],
      proxyHeaderTimeoutMs: opts.proxyHeaderTimeoutMs ?? RELAY_DEFAULTS.proxyHeaderTimeoutMs,
      connectGate: dns.connectGate,
      isDraining: () => this.drainingNow,
    });
  }

  /** The session's upstream hold time ran out (transaction.ts): 421 and close. */
  private endSession(sessionId: string): void {
    for (const c of this.smtp.connections as Set<RelayConnection>) {
      if (c.session.id === sessionId) c.send(421, FAIRNESS_REPLY.holdTimeout(this.settings.hostname));
    }
  }

  /** Opens the SMTP listener and the admin server. */
  async listen(opts: RelayOptions): Promise<void> {
    const D = RELAY_DEFAULTS;
    const listenOpts = opts.listen ?? {};
    await listen(this.front.server, listenOpts.port ?? D.listen.port, listenOpts.host ?? D.listen.host);
    if (opts.admin !== false) {
      const adminOpts = opts.admin ?? {};
      this.admin = createAdminServer({
        registry: this.metrics.registry,
        ready: () => this.config.snapshot !== undefined && !this.drainingNow,
        config: () => this.configInfo(),
      });
      await listen(
        this.admin as unknown as Server,
        adminOpts.port ?? D.admin.port,
        adminOpts.host ?? D.admin.host,
      );
    }
    const a = this.address();
    this.logger.info('relay started', {
      smtp: `${a.smtp.address}:${a.smtp.port}`,
      admin: a.admin ? `${a.admin.address}:${a.admin.port}` : null,
      tls: !!(opts.tlsCert && opts.tlsKey),
      trustedProxies: opts.trustedProxies ?? [],
      maxMessageSize: this.settings.maxMessageSize,
    });
  }

  get draining(): boolean {
    return this.drainingNow;
  }

  applyConfig(config: unknown, source = 'applyConfig'): ApplyResult {
    return this.config.apply(config, source);
  }

  reportConfigError(err: Error, source = 'applyConfig'): void {
    this.config.refuse(err, source);
  }

  address(): { smtp: AddressInfo; admin?: AddressInfo } {
    const out: { smtp: AddressInfo; admin?: AddressInfo } = {
      smtp: this.front.server.address() as AddressInfo,
    };
    if (this.admin) out.admin = this.admin.address() as AddressInfo;
    return out;
  }

  configInfo(): { hash: string | null; generation: number; loadedAt: string | null } {
    return this.config.info();
  }

  private connections(): RelayConnection[] {
    return [...this.smtp.connections] as RelayConnection[];
  }

  async drain(deadlineMs: number): Promise<void> {
    if (!this.drainingNow) {
      this.drainingNow = true;
      this.metrics.draining.set(1);
      this.logger.info('draining', {
        deadlineMs,
        sessions: this.smtp.connections.size,
        transactions: this.handlers.activeTransactions,
      });
      // The listener stays open while draining so that a client arriving now is told 421 (try
      // later) rather than getting a connection reset; it closes once drained.
    }
    for (const c of this.connections()) if (!c.busy) c.send(421, SESSION_REPLY.draining);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.handlers.whenIdle(),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, deadlineMs);
      }),
    ]);
    clearTimeout(timer);
    for (const c of this.connections()) c.send(421, SESSION_REPLY.draining);
    if (this.front.server.listening) this.front.server.close();
    this.poolClosed ??= this.pool.close();
    await this.poolClosed;
    this.logger.info('drained', { transactionsLeft: this.handlers.activeTransactions });
  }

  /** Start-up failed before anything listened: release what was opened. */
  async abort(): Promise<void> {
    this.closed = true;
    for (const w of this.watchers) w.close();
    await this.pool.close();
    await this.privacy.close();
    this.metrics.close();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.watchers) w.close();
    await this.drain(0);
    for (const c of this.connections()) c._socket.destroy();
    const admin = this.admin;
    if (admin) {
      await new Promise<void>((resolve) => admin.close(() => resolve()));
      admin.closeAllConnections();
    }
    const front = this.front.server;
    await new Promise<void>((resolve) => {
      if (!front.listening) return resolve();
      front.close(() => resolve());
    });
    // smtp-server's own net.Server never listened (our front server accepts); nothing to close
    await this.privacy.close();
    this.metrics.close();
  }

  own(watcher: FileWatcher): void {
    this.watchers.push(watcher);
  }

  flushTrace(): Promise<void> {
    return this.privacy.idle();
  }
}
