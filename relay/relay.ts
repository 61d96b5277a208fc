import fs from 'node:fs';
import type http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import { verifyRelayConfig } from '../contract/config/load.ts';
import type { RelayConfig } from '../contract/config/types.gen.ts';
import { createLogger, type Logger, type LogSink } from '../platform/log.ts';
import { createAdminServer } from './admin-http.ts';
import { CaptureRecorder } from './capture/recorder.ts';
import type { FileWatcher } from './config/file-watch.ts';
import { createDnsLookup, type DnsLookup, type DnsOptions } from './dns/resolver.ts';
import { DnsblChecker } from './dnsbl/check.ts';
import { dnsblConnectGate } from './dnsbl/connect-gate.ts';
import type { DnsblPolicy } from './dnsbl/policy.ts';
import { RelayMetrics } from './observability/metrics.ts';
import { createPseudonymizer } from './observability/pseudonymize.ts';
import { buildRoutingTable } from './routing/table.ts';
import { cidrMatcher } from './smtp/cidr.ts';
import { ConnectionLimiter, DEFAULT_FAIRNESS, type FairnessLimits, UpstreamShares } from './smtp/fairness.ts';
import { readProxyHeader } from './smtp/proxy-accept.ts';
import { RateLimiter } from './smtp/rate-limit.ts';
import type { RawSMTPDataStream } from './smtp/raw-data-stream.ts';
import { FAIRNESS_REPLY, SESSION_REPLY } from './smtp/replies.ts';
import { type RelayConnection, RelaySmtpServer } from './smtp/smtp-server-overrides.ts';
import { type ConfigSnapshot, SmtpHandlers } from './smtp/transaction.ts';
import type { UpstreamPoolLike } from './smtp/upstream-contract.ts';
import { loadKeyPair, watchKeyPair } from './tls/certificates.ts';
import { createPrivacyHooks } from './trace/privacy.ts';
import { purgePlan } from './trace/retention.ts';
import type { TraceStore } from './trace/store.ts';
import { TraceWriter, type TraceWriterOptions } from './trace/writer.ts';
import { targetLabel } from './upstream/connection.ts';
import { type PoolOptions, UpstreamPool } from './upstream/pool.ts';

export interface RelayOptions {
  /** SMTP listener; port 0 picks a free one (see address()). Default 0.0.0.0:2525. */
  listen?: { host?: string; port?: number };
  /** Admin HTTP (/metrics, /healthz, /readyz, /config); false for none. Default 0.0.0.0:9090. */
  admin?: { host?: string; port?: number } | false;
  /** Our name in the greeting and EHLO reply, and our EHLO name upstream. Default os.hostname(). */
  hostname?: string;
  banner?: string;
  /** PEM files for STARTTLS; reloaded when they change. Without them STARTTLS is not offered. */
  tlsCert?: string;
  tlsKey?: string;
  /** CIDRs whose connections must start with a PROXY v1/v2 header; nobody else's is parsed. */
  trustedProxies?: string[];
  /** Default 5000. */
  proxyHeaderTimeoutMs?: number;
  /** Relay-wide limit, advertised as SIZE; raw (dot-stuffed) bytes. Default 25 MiB. */
  maxMessageSize?: number;
  /** Default 1000 concurrent sessions. */
  maxClients?: number;
  /** Idle timeout (client owes us a command). Default 60 s. */
  socketTimeoutMs?: number;
  /** Default 2048 bytes: RFC 5321 allows 512, each ESMTP extension (SIZE, BODY, SMTPUTF8, DSN) may add more. */
  maxCommandLength?: number;
  /** Commands per session before 421 (bounds a session that loops on junk commands). Default 10 000. */
  maxCommands?: number;
  /** MAIL transactions per session before 421; senders reconnect for more. Default 1000. */
  maxTransactions?: number;
  /** Session lifetime before 421 4.4.2. Default 10 min. */
  maxSessionMs?: number;
  /**
   * Fairness limits per client address, client network, tenant and transaction (smtp/fairness.ts);
   * unset fields take DEFAULT_FAIRNESS, 0 switches a count or time limit off.
   */
  fairness?: Partial<FairnessLimits>;
  /** Client CIDRs exempt from the per-client and per-network limits (Postfix smtpd_client_event_limit_exceptions). */
  fairnessExempt?: string[];
  /** Pause before the greeting, for early-talker detection. Default 0. */
  greetPauseMs?: number;
  /**
   * Shared by every relay of a fleet: shown in the greeting, and an upstream greeting with it is one of
   * ours, so a route back into the fleet is refused as a loop (554 5.4.6) at RCPT.
   */
  fleetId?: string;
  /** A message arriving with this many Received header fields is a loop: 554 5.4.6. Default 50 (Postfix's hopcount_limit). */
  maxHops?: number;
  /**
   * Where `RCPT TO:<postmaster>` without a domain goes (RFC 5321 §4.5.1): routed and forwarded as this
   * address. Unset: refused with 550 5.1.1.
   */
  postmaster?: string;
  /** HMAC key for pseudonymised addresses in logs; unset logs addresses as given. */
  pseudonymizeKey?: string;
  /** Upstream pool options (heloName defaults to hostname); caFile adds a CA for verified TLS. */
  upstream?: Omit<PoolOptions, 'heloName' | 'ca'> & { heloName?: string; caFile?: string };
  /** Initial routing config; without one /readyz stays 503 and MAIL gets 451. */
  config?: RelayConfig;
  /** Where JSON log lines go. Default stdout. */
  logSink?: LogSink;
  /** Replace the upstream pool (tests). */
  pool?: UpstreamPoolLike;
  /** Certificate file watching (tests shorten these). */
  certWatch?: { debounceMs?: number; pollMs?: number };
  /**
   * Message trace and consented captures: `sqlite:PATH`, `postgres://…`, or an opener (tests).
   * Unset: no trace, no captures. The store may be down: mail flows, entries are buffered.
   */
  traceStore?: string | (() => Promise<TraceStore>);
  /** Trace writer tuning (buffer size, batch size, flush and purge intervals). */
  traceWriter?: Omit<TraceWriterOptions, 'open' | 'metrics' | 'logger' | 'purge'> & {
    purgeIntervalMs?: number;
  };
  /** The clock for consent expiry and trace times (tests). Default Date.now. */
  now?: () => number;
  /** DNS servers, per-try timeout and tries for every lookup the relay makes (default: the system resolver). */
  dns?: DnsOptions;
  /** Relay-wide DNS blocklists, checked at connect before the greeting (tenants add theirs at RCPT). */
  dnsbl?: DnsblPolicy;
  /** DNSBL answer cache bounds (tests shorten them). */
  dnsblCache?: { maxEntries?: number; minTtlS?: number; maxTtlS?: number };
  /** Replace the DNS lookup (unit tests of the wiring; integration tests use a real server via dns). */
  dnsLookup?: DnsLookup;
}

export type ApplyResult = { ok: true; hash: string; generation: number } | { ok: false; error: string };

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

const MiB = 1024 * 1024;

function listen(server: net.Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

export async function startRelay(opts: RelayOptions = {}): Promise<Relay> {
  if (opts.postmaster !== undefined && !/^[^\s<>@]+@[^\s<>@]+$/.test(opts.postmaster)) {
    throw new TypeError(
      `postmaster must be an address like postmaster@example.com, got "${opts.postmaster}"`,
    );
  }
  const hostname = opts.hostname ?? os.hostname();
  const maxMessageSize = opts.maxMessageSize ?? 25 * MiB;
  const logger = createLogger(opts.logSink);
  const metrics = new RelayMetrics();
  const pseudonymize = createPseudonymizer(opts.pseudonymizeKey);
  const trusted = cidrMatcher(opts.trustedProxies ?? []);
  if (opts.dnsbl) cidrMatcher(opts.dnsbl.allow); // a bad allow-list entry fails at start-up
  const proxyTimeout = opts.proxyHeaderTimeoutMs ?? 5000;
  const watchers: FileWatcher[] = [];

  let snapshot: ConfigSnapshot | undefined;
  let loadedAt: string | null = null;
  let generation = 0;
  let draining = false;
  let closed = false;
  let poolClosed: Promise<void> | undefined;

  if (opts.fleetId !== undefined && !/^[A-Za-z0-9._-]{1,64}$/.test(opts.fleetId)) {
    throw new TypeError(`fleetId must be 1-64 letters, digits, '.', '_' or '-', got "${opts.fleetId}"`);
  }
  const fleetMark = opts.fleetId === undefined ? undefined : `mailplus-fleet=${opts.fleetId}`;
  const { caFile, heloName, ...poolRest } = opts.upstream ?? {};
  const pool: UpstreamPoolLike =
    opts.pool ??
    new UpstreamPool({
      ...poolRest,
      heloName: heloName ?? hostname,
      fleetMark,
      ...(caFile ? { ca: fs.readFileSync(caFile) } : {}),
      onConnect: (target, _ms, ok) =>
        metrics.upstreamConnectionsTotal.inc({ upstream: targetLabel(target), result: ok ? 'ok' : 'error' }),
      onTransaction: (target, _ms, r) =>
        metrics.upstreamTransactionsTotal.inc({ upstream: targetLabel(target), outcome: r.outcome }),
    });
  const poolStats = pool.stats?.bind(pool);
  if (poolStats) metrics.upstreamPool(poolStats);

  const now = opts.now ?? Date.now;
  let traceWriter: TraceWriter | undefined;
  if (opts.traceStore !== undefined) {
    const where = opts.traceStore;
    const { purgeIntervalMs, ...tuning } = opts.traceWriter ?? {};
    traceWriter = new TraceWriter({
      ...tuning,
      // the store drivers (pg, node:sqlite) load only when a trace store is configured
      open:
        typeof where === 'string'
          ? async () => (await import('./trace/open.ts')).openTraceStore(where)
          : where,
      logger,
      metrics: {
        written: (n) => metrics.traceWrittenTotal.inc(n),
        dropped: (n, reason) => metrics.traceDroppedTotal.inc({ reason }, n),
        buffered: (n) => metrics.traceBufferEntries.set(n),
      },
      purge: { intervalMs: purgeIntervalMs, plan: () => purgePlan(snapshot?.table.config, now()) },
    });
  }
  const tw = traceWriter;
  const privacy = createPrivacyHooks({
    masterKey: opts.pseudonymizeKey,
    relayWide: pseudonymize,
    writer: tw,
    recorder: tw
      ? new CaptureRecorder({
          store: () => tw.current(),
          now,
          logger,
          onOutcome: (tenant, result) => metrics.capturesTotal.inc({ tenant, result }),
        })
      : undefined,
    now,
  });

  const dnsLookup =
    opts.dnsLookup ??
    createDnsLookup(opts.dns, (result, type) => metrics.dnsQueriesTotal.inc({ type, result }));
  const dnsbl = new DnsblChecker({
    lookup: dnsLookup,
    now,
    cacheEntries: opts.dnsblCache?.maxEntries,
    minTtlS: opts.dnsblCache?.minTtlS,
    maxTtlS: opts.dnsblCache?.maxTtlS,
    metrics: {
      verdict: (scope, tenant, verdict) => metrics.dnsblVerdictsTotal.inc({ scope, tenant, verdict }),
      lookup: (zone, result, source) => metrics.dnsblLookupsTotal.inc({ zone, result, source }),
      cacheEntries: (n) => metrics.dnsblCacheEntries.set(n),
    },
  });
  const connectGate = opts.dnsbl?.zones.length ? dnsblConnectGate(dnsbl, opts.dnsbl, logger) : undefined;

  const fairness: FairnessLimits = { ...DEFAULT_FAIRNESS, ...opts.fairness };
  const exempt = cidrMatcher(opts.fairnessExempt ?? []);
  const connectionLimiter = new ConnectionLimiter(fairness, exempt);
  const handlers = new SmtpHandlers({
    dnsbl,
    authResolve: (name, rrtype) => dnsLookup.resolve(name, rrtype),
    fairness,
    upstreamShares: new UpstreamShares(fairness, exempt),
    endSession: (sessionId) => {
      // the SMTP server is created below, with these handlers; this runs only once it exists
      for (const c of smtp.connections as Set<RelayConnection>) {
        if (c.session.id === sessionId) c.send(421, FAIRNESS_REPLY.holdTimeout(hostname));
      }
    },
    privacy,
    snapshot: () => snapshot,
    pool,
    metrics,
    logger,
    rateLimiter: new RateLimiter(),
    maxMessageSize,
    maxTransactions: opts.maxTransactions ?? 1000,
    postmaster: opts.postmaster,
    hostname,
    maxHops: opts.maxHops ?? 50,
  });

  const keyPair = opts.tlsCert && opts.tlsKey ? loadKeyPair(opts.tlsCert, opts.tlsKey) : undefined;
  const smtp = new RelaySmtpServer(
    {
      name: hostname,
      banner: [opts.banner, fleetMark].filter(Boolean).join(' ') || undefined,
      // smtp-server's logger prints protocol traffic (addresses, commands): never
      logger: false,
      disableReverseLookup: true,
      size: maxMessageSize,
      hideSTARTTLS: !keyPair,
      ...(keyPair ? { key: keyPair.key, cert: keyPair.cert } : {}),
      // inbound MX relay: no AUTH at all; authOptional also disables the unauthenticated-command
      // counter (maxAllowedUnauthenticatedCommands), which would otherwise cap sessions at 10 commands
      authOptional: true,
      disabledCommands: ['AUTH'],
      hideENHANCEDSTATUSCODES: false,
      maxClients: opts.maxClients ?? 1000,
      socketTimeout: opts.socketTimeoutMs ?? 60_000,
      closeTimeout: 5_000,
      maxCommandLength: opts.maxCommandLength ?? 2048,
      onMailFrom: (address, session, cb) => handlers.onMailFrom(address, session, cb),
      onRcptTo: (address, session, cb) => handlers.onRcptTo(address, session, cb),
      onData: (stream, session, cb) => handlers.onData(stream as RawSMTPDataStream, session, cb),
      onClose: (session) => {
        // not the socket's 'close': STARTTLS replaces the socket and drops its listeners; smtp-server
        // calls onClose exactly once per connection, on the raw or the TLS socket
        metrics.sessionsActive.dec();
        handlers.onClose(session);
      },
    },
    {
      greetPauseMs: opts.greetPauseMs ?? 0,
      maxCommands: opts.maxCommands ?? 10_000,
      maxSessionMs: opts.maxSessionMs ?? 10 * 60_000,
      maxMessageSize,
      softErrorLimit: fairness.softErrorLimit,
      hardErrorLimit: fairness.hardErrorLimit,
      errorSleepMs: fairness.errorSleepMs,
      hooks: {
        onLimit: (limit) => metrics.limitHitsTotal.inc({ limit }),
        onReset: (session) => handlers.onReset(session),
        isDraining: () => draining,
        inTransaction: (session) => handlers.inTransaction(session),
      },
    },
  );
  smtp.on('error', (err: Error & { code?: string }) => {
    if (err.code === 'ECONNRESET' || err.code === 'EPIPE') return;
    logger.warn('smtp session error', { error: err.message, code: err.code });
  });

  if (opts.tlsCert && opts.tlsKey) {
    watchers.push(
      watchKeyPair(
        opts.tlsCert,
        opts.tlsKey,
        (pair) => {
          // STARTTLS builds each TLSSocket from smtp-server's secureContext map ('*'), which
          // updateSecureContext rebuilds: new handshakes use the new pair, live sessions keep theirs
          smtp.updateSecureContext({ key: pair.key, cert: pair.cert });
          metrics.tlsCertificateReloadsTotal.inc({ result: 'success' });
          logger.info('tls certificate reloaded', { cert: opts.tlsCert });
        },
        (err) => {
          metrics.tlsCertificateReloadsTotal.inc({ result: 'failure' });
          logger.error('tls certificate reload failed, keeping the previous one', {
            cert: opts.tlsCert,
            error: err.message,
          });
        },
        opts.certWatch,
      ),
    );
  }

  let refusalLoggedAt = 0;
  let refusalsUnlogged = 0;
  const handOver = (socket: net.Socket, remote?: { address: string; port: number }) => {
    const client = remote?.address ?? socket.remoteAddress ?? '';
    const admitted = connectionLimiter.admit(client);
    if (!admitted.ok) {
      metrics.limitHitsTotal.inc({ limit: admitted.limit });
      // one line per second at most: a flood of refused connections must not flood the log too
      refusalsUnlogged++;
      if (Date.now() - refusalLoggedAt >= 1000) {
        logger.warn('connection refused by a fairness limit', {
          clientIp: client,
          limit: admitted.limit,
          refusedSinceLastLine: refusalsUnlogged,
        });
        refusalLoggedAt = Date.now();
        refusalsUnlogged = 0;
      }
      socket.end(`${FAIRNESS_REPLY.tooManyConnections(hostname, client)}\r\n`);
      setTimeout(() => socket.destroy(), 5000).unref();
      return;
    }
    socket.once('close', admitted.release);
    if (!connectGate) return startSession(socket, remote);
    connectGate(socket, client).then(
      (ok) => {
        if (ok && !socket.destroyed) startSession(socket, remote);
      },
      (err: Error) => {
        logger.error('dnsbl check failed', { error: err.message });
        if (!socket.destroyed) startSession(socket, remote);
      },
    );
  };
  const startSession = (socket: net.Socket, remote?: { address: string; port: number }) => {
    metrics.sessionsTotal.inc();
    metrics.sessionsActive.inc();
    smtp.connect(socket, remote ? { remoteAddress: remote.address, remotePort: remote.port } : {});
  };

  const front = net.createServer((socket) => {
    socket.on('error', () => {
      // a reset before the session starts; smtp-server handles errors after the hand-over
    });
    if (draining) {
      socket.end(`421 ${SESSION_REPLY.draining}\r\n`);
      return;
    }
    if (!trusted(socket.remoteAddress)) return handOver(socket);
    readProxyHeader(socket, proxyTimeout).then((r) => {
      if (!r.ok) {
        metrics.proxyProtocolTotal.inc({ result: r.reason === 'timeout' ? 'timeout' : 'error' });
        logger.warn('proxy protocol header refused', { reason: r.reason, detail: r.detail });
        socket.destroy();
        return;
      }
      const h = r.header;
      if (h.command === 'LOCAL' || h.family === 'UNKNOWN' || !h.sourceAddress) {
        // health checks of the proxy itself: the connection's own addresses apply
        metrics.proxyProtocolTotal.inc({ result: 'local' });
        return handOver(socket);
      }
      metrics.proxyProtocolTotal.inc({ result: 'ok' });
      handOver(socket, { address: h.sourceAddress, port: h.sourcePort ?? 0 });
    });
  });

  let admin: http.Server | undefined;

  const relay: Relay = {
    metrics,
    logger,
    get draining() {
      return draining;
    },
    applyConfig(config: unknown, source = 'applyConfig'): ApplyResult {
      try {
        const c = verifyRelayConfig(config, source);
        if (snapshot && snapshot.hash === c.hash) {
          // e.g. a refused config reverted to the active one: the last reload did succeed
          metrics.configUnchanged();
          return { ok: true, hash: c.hash, generation };
        }
        const table = buildRoutingTable(c);
        generation++;
        // one assignment: transactions that start from now on see the new table, the ones in flight
        // keep the snapshot they captured at MAIL FROM
        snapshot = { table, hash: c.hash, generation };
        loadedAt = new Date().toISOString();
        metrics.setConfig(c.hash, generation);
        logger.info('config applied', { source, hash: c.hash, generation, tenants: c.tenants.length });
        return { ok: true, hash: c.hash, generation };
      } catch (err) {
        relay.reportConfigError(err as Error, source);
        return { ok: false, error: (err as Error).message };
      }
    },
    reportConfigError(err: Error, source = 'applyConfig') {
      metrics.configRefused();
      logger.error(snapshot ? 'config refused, keeping the last good one' : 'config refused, no config yet', {
        source,
        error: err.message,
        activeHash: snapshot?.hash ?? null,
      });
    },
    address() {
      const out: { smtp: AddressInfo; admin?: AddressInfo } = { smtp: front.address() as AddressInfo };
      if (admin) out.admin = admin.address() as AddressInfo;
      return out;
    },
    configInfo() {
      return { hash: snapshot?.hash ?? null, generation, loadedAt };
    },
    async drain(deadlineMs: number) {
      if (!draining) {
        draining = true;
        metrics.draining.set(1);
        logger.info('draining', {
          deadlineMs,
          sessions: smtp.connections.size,
          transactions: handlers.activeTransactions,
        });
        // The listener stays open while draining so that a client arriving now is told 421 (try
        // later) rather than getting a connection reset; it closes once drained.
      }
      const conns = () => [...smtp.connections] as RelayConnection[];
      for (const c of conns()) if (!c.busy) c.send(421, SESSION_REPLY.draining);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        handlers.whenIdle(),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, deadlineMs);
        }),
      ]);
      clearTimeout(timer);
      for (const c of conns()) c.send(421, SESSION_REPLY.draining);
      if (front.listening) front.close();
      poolClosed ??= pool.close();
      await poolClosed;
      logger.info('drained', { transactionsLeft: handlers.activeTransactions });
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const w of watchers) w.close();
      await relay.drain(0);
      for (const c of [...smtp.connections] as RelayConnection[]) c._socket.destroy();
      if (admin) {
        const a = admin;
        await new Promise<void>((resolve) => a.close(() => resolve()));
        a.closeAllConnections();
      }
      await new Promise<void>((resolve) => {
        if (!front.listening) return resolve();
        front.close(() => resolve());
      });
      // smtp-server's own net.Server never listened (our front server accepts); nothing to close
      await privacy.close();
      metrics.close();
    },
    own(watcher: FileWatcher) {
      watchers.push(watcher);
    },
    flushTrace: () => privacy.idle(),
    traceWriter,
  };

  if (opts.config !== undefined) {
    const r = relay.applyConfig(opts.config, 'startRelay');
    if (!r.ok) {
      await pool.close();
      await privacy.close();
      metrics.close();
      throw new Error(`startRelay: initial config refused: ${r.error}`);
    }
  }

  const listenOpts = opts.listen ?? {};
  await listen(front, listenOpts.port ?? 2525, listenOpts.host ?? '0.0.0.0');
  if (opts.admin !== false) {
    const adminOpts = opts.admin ?? {};
    admin = createAdminServer({
      registry: metrics.registry,
      ready: () => snapshot !== undefined && !draining,
      config: () => relay.configInfo(),
    });
    await listen(admin as unknown as net.Server, adminOpts.port ?? 9090, adminOpts.host ?? '0.0.0.0');
  }
  const a = relay.address();
  logger.info('relay started', {
    smtp: `${a.smtp.address}:${a.smtp.port}`,
    admin: a.admin ? `${a.admin.address}:${a.admin.port}` : null,
    tls: !!keyPair,
    trustedProxies: opts.trustedProxies ?? [],
    maxMessageSize,
  });
  return relay;
}
