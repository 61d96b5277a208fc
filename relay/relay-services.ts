// The parts startRelay() assembles, each built from the relay's options: the upstream pool, the
// privacy hooks (trace, captures, pseudonyms), DNS and blocklists, the SMTP server with its session
// limits, and the certificate watch. relay.ts wires them together.
import fs from 'node:fs';
import type net from 'node:net';
import type { Logger } from '../platform/log.ts';
import { CaptureRecorder } from './capture/recorder.ts';
import type { FileWatcher } from './config/file-watch.ts';
import { createDnsLookup, type DnsLookup } from './dns/resolver.ts';
import { DnsblChecker } from './dnsbl/check.ts';
import { dnsblConnectGate } from './dnsbl/connect-gate.ts';
import type { RelayMetrics } from './observability/metrics.ts';
import { RELAY_DEFAULTS } from './relay-defaults.ts';
import type { RelayOptions } from './relay-options.ts';
import type { FairnessLimits } from './smtp/fairness.ts';
import type { RawSMTPDataStream } from './smtp/raw-data-stream.ts';
import { RelaySmtpServer, type SessionHooks } from './smtp/smtp-server-overrides.ts';
import type { ConfigSnapshot, SmtpHandlers } from './smtp/transaction.ts';
import type { UpstreamPoolLike } from './smtp/upstream-contract.ts';
import { loadKeyPair, watchKeyPair } from './tls/certificates.ts';
import { createPrivacyHooks, type PrivacyHooks } from './trace/privacy.ts';
import { purgePlan } from './trace/retention.ts';
import { TraceWriter } from './trace/writer.ts';
import { targetLabel } from './upstream/connection.ts';
import { UpstreamPool } from './upstream/pool.ts';

/** Options resolved against RELAY_DEFAULTS, and what several parts share. */
export interface RelaySettings {
  hostname: string;
  maxMessageSize: number;
  /** `mailplus-fleet=ID` in our greeting and the upstream's: a loop (--fleet-id). */
  fleetMark: string | undefined;
  fairness: FairnessLimits;
  now: () => number;
}

export function createPool(opts: RelayOptions, s: RelaySettings, metrics: RelayMetrics): UpstreamPoolLike {
  if (opts.pool) return opts.pool;
  const { caFile, heloName, ...poolRest } = opts.upstream ?? {};
  const pool = new UpstreamPool({
    ...poolRest,
    heloName: heloName ?? s.hostname,
    fleetMark: s.fleetMark,
    ...(caFile ? { ca: fs.readFileSync(caFile) } : {}),
    onConnect: (target, _ms, ok) =>
      metrics.upstreamConnectionsTotal.inc({ upstream: targetLabel(target), result: ok ? 'ok' : 'error' }),
    onTransaction: (target, _ms, r) =>
      metrics.upstreamTransactionsTotal.inc({ upstream: targetLabel(target), outcome: r.outcome }),
  });
  metrics.upstreamPool(() => pool.stats());
  return pool;
}

/**
 * Message trace, consented captures and per-tenant pseudonyms. Without a trace store only the
 * pseudonyms of the log lines are active.
 */
export function createPrivacy(
  opts: RelayOptions,
  s: RelaySettings,
  metrics: RelayMetrics,
  logger: Logger,
  snapshot: () => ConfigSnapshot | undefined,
  relayWide: (address: string) => string,
): { privacy: PrivacyHooks; traceWriter: TraceWriter | undefined } {
  const where = opts.traceStore;
  let traceWriter: TraceWriter | undefined;
  if (where !== undefined) {
    const { purgeIntervalMs, ...tuning } = opts.traceWriter ?? {};
    traceWriter = new TraceWriter({
      maxBufferBytes: RELAY_DEFAULTS.traceBufferBytes,
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
      purge: { intervalMs: purgeIntervalMs, plan: () => purgePlan(snapshot()?.table.config, s.now()) },
    });
  }
  const tw = traceWriter;
  const recorder = tw
    ? new CaptureRecorder({
        store: () => tw.current(),
        now: s.now,
        logger,
        onOutcome: (tenant, result) => metrics.capturesTotal.inc({ tenant, result }),
      })
    : undefined;
  const privacy = createPrivacyHooks({
    masterKey: opts.pseudonymizeKey,
    relayWide,
    writer: tw,
    recorder,
    now: s.now,
  });
  return { privacy, traceWriter };
}

/** DNS for blocklists and sender authentication, the blocklist checker and the connect-time gate. */
export function createDnsChecks(opts: RelayOptions, s: RelaySettings, metrics: RelayMetrics, logger: Logger) {
  const dnsLookup: DnsLookup =
    opts.dnsLookup ??
    createDnsLookup(
      { timeoutMs: RELAY_DEFAULTS.dnsTimeoutMs, tries: RELAY_DEFAULTS.dnsTries, ...opts.dns },
      (result, type) => metrics.dnsQueriesTotal.inc({ type, result }),
    );
  const dnsbl = new DnsblChecker({
    lookup: dnsLookup,
    now: s.now,
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
  return { dnsLookup, dnsbl, connectGate };
}

/** smtp-server with our overrides, its session limits, and our handlers for MAIL, RCPT and DATA. */
export function createSmtpServer(
  opts: RelayOptions,
  s: RelaySettings,
  handlers: SmtpHandlers,
  metrics: RelayMetrics,
  hooks: Pick<SessionHooks, 'isDraining'>,
): RelaySmtpServer {
  const D = RELAY_DEFAULTS;
  const keyPair = opts.tlsCert && opts.tlsKey ? loadKeyPair(opts.tlsCert, opts.tlsKey) : undefined;
  return new RelaySmtpServer(
    {
      name: s.hostname,
      banner: [opts.banner, s.fleetMark].filter(Boolean).join(' ') || undefined,
      // smtp-server's logger prints protocol traffic (addresses, commands): never
      logger: false,
      disableReverseLookup: true,
      size: s.maxMessageSize,
      hideSTARTTLS: !keyPair,
      ...(keyPair ? { key: keyPair.key, cert: keyPair.cert } : {}),
      // inbound MX relay: no AUTH at all; authOptional also disables the unauthenticated-command
      // counter (maxAllowedUnauthenticatedCommands), which would otherwise cap sessions at 10 commands
      authOptional: true,
      disabledCommands: ['AUTH'],
      hideENHANCEDSTATUSCODES: false,
      maxClients: opts.maxClients ?? D.maxClients,
      socketTimeout: opts.socketTimeoutMs ?? D.socketTimeoutMs,
      closeTimeout: D.closeTimeoutMs,
      maxCommandLength: opts.maxCommandLength ?? D.maxCommandLength,
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
      greetPauseMs: opts.greetPauseMs ?? D.greetPauseMs,
      maxCommands: opts.maxCommands ?? D.maxCommands,
      maxSessionMs: opts.maxSessionMs ?? D.maxSessionMs,
      maxMessageSize: s.maxMessageSize,
      softErrorLimit: s.fairness.softErrorLimit,
      hardErrorLimit: s.fairness.hardErrorLimit,
      errorSleepMs: s.fairness.errorSleepMs,
      hooks: {
        onLimit: (limit) => metrics.limitHitsTotal.inc({ limit }),
        onReset: (session) => handlers.onReset(session),
        isDraining: hooks.isDraining,
        inTransaction: (session) => handlers.inTransaction(session),
      },
    },
  );
}

/**
 * STARTTLS builds each TLSSocket from smtp-server's secureContext map ('*'), which
 * updateSecureContext rebuilds: new handshakes use the new pair, live sessions keep theirs.
 */
export function watchCertificate(
  opts: RelayOptions & { tlsCert: string; tlsKey: string },
  smtp: RelaySmtpServer,
  metrics: RelayMetrics,
  logger: Logger,
): FileWatcher {
  return watchKeyPair(
    opts.tlsCert,
    opts.tlsKey,
    (pair) => {
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
  );
}

export function listen(server: net.Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
