import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { ConfigMapWatchMetrics } from '../config/configmap-watch.ts';
import { LIMIT_NAMES } from '../smtp/limit-names.ts';

const PREFIX = 'mailplus_relay_';

function counter<const L extends string = string>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: readonly L[] = [],
): Counter<L> {
  return new Counter<L>({ name: `${PREFIX}${name}`, help, labelNames, registers: [registry] });
}

function gauge<const L extends string = string>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: readonly L[] = [],
  /** Sets the values at each scrape. */
  collect?: (this: Gauge<L>) => void,
): Gauge<L> {
  return new Gauge<L>({ name: `${PREFIX}${name}`, help, labelNames, registers: [registry], collect });
}

function histogram<const L extends string = string>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: readonly L[],
  buckets: number[],
): Histogram<L> {
  return new Histogram<L>({
    name: `${PREFIX}${name}`,
    help,
    labelNames,
    buckets,
    registers: [registry],
  });
}

/**
 * One registry per relay instance (no prom-client global registry), so several relays can run in
 * one process (tests) without clashing. Labels never carry client addresses or mail addresses:
 * only tenant, route (namespace/name), upstream (host:port), results and reasons from fixed sets.
 */
export class RelayMetrics {
  readonly registry = new Registry();
  #poolStats: (() => { open: number; idle: number; waiting: number }) | undefined;
  readonly sessionsTotal = counter(this.registry, 'sessions_total', 'SMTP sessions accepted');
  readonly sessionsActive = gauge(this.registry, 'sessions_active', 'SMTP sessions open now');
  readonly recipientsTotal = counter(
    this.registry,
    'recipients_total',
    'RCPT TO verdicts (result: accepted | rejected | deferred)',
    ['tenant', 'route', 'result', 'reason'],
  );
  readonly messagesTotal = counter(
    this.registry,
    'messages_total',
    'Messages after DATA (result: relayed | rejected | deferred | failed)',
    ['tenant', 'route', 'upstream', 'result', 'reason'],
  );
  readonly messageBytesTotal = counter(
    this.registry,
    'message_bytes_total',
    'Raw (dot-stuffed) message bytes received in DATA',
    ['tenant', 'route', 'upstream', 'result'],
  );
  readonly upstreamLatency = histogram(
    this.registry,
    'upstream_latency_seconds',
    'Upstream latency (phase connect: session + MAIL FROM; transaction: DATA until the final reply)',
    ['upstream', 'phase'],
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  );
  readonly upstreamAttemptsTotal = counter(
    this.registry,
    'upstream_attempts_total',
    'Attempts to open an upstream transaction (result: ok | refused | deferred | error)',
    ['upstream', 'result'],
  );
  readonly upstreamConnectionsTotal = counter(
    this.registry,
    'upstream_connections_total',
    'Upstream sessions set up (connect, greeting, EHLO, STARTTLS; result: ok | error); far fewer than messages while pooled connections are reused',
    ['upstream', 'result'],
  );
  readonly upstreamTransactionsTotal = counter(
    this.registry,
    'upstream_transactions_total',
    'Upstream transactions as the pool ended them (outcome: accepted | rejected | deferred | failed | aborted: content not completed | released: ended before DATA)',
    ['upstream', 'outcome'],
  );
  readonly upstreamPoolConnections = gauge(
    this.registry,
    'upstream_pool_connections',
    'Upstream pool now (state: open connections, idle ones among them, waiting: transactions waiting for a connection at maxConnectionsPerTarget)',
    ['state'],
    () => {
      const now = this.#poolStats?.();
      if (now)
        for (const state of ['open', 'idle', 'waiting'] as const)
          this.upstreamPoolConnections.set({ state }, now[state]);
    },
  );
  readonly configGeneration = gauge(
    this.registry,
    'config_generation',
    'Incremented on every successfully applied relay config',
  );
  readonly configLastReloadSuccessful = gauge(
    this.registry,
    'config_last_reload_successful',
    '1 if the last config load succeeded, 0 if it was refused',
  );
  readonly configLastReloadSuccessTimestamp = gauge(
    this.registry,
    'config_last_reload_success_timestamp_seconds',
    'Unix time of the last successful config load',
  );
  readonly configReloadsTotal = counter(
    this.registry,
    'config_reloads_total',
    'Config loads (result: success | failure)',
    ['result'],
  );
  readonly configInfo = gauge(this.registry, 'config_info', 'The active config hash (value 1)', ['hash']);
  // label configmap: the ConfigMap's name, one series per ConfigMap the relay follows
  readonly configWatchLastSync = gauge(
    this.registry,
    'config_watch_last_sync_timestamp_seconds',
    'Unix time the relay last knew it held the current version of its config ConfigMap (LIST, watch event or bookmark, watch ended normally)',
    ['configmap'],
  );
  readonly configWatchRelists = counter(
    this.registry,
    'config_watch_relists_total',
    'LISTs of the config ConfigMap answered (start, 410 Gone, after an error, periodic resync)',
    ['configmap'],
  );
  readonly configWatchRestarts = counter(
    this.registry,
    'config_watch_restarts_total',
    'Config ConfigMap watches restarted after an error or 410 Gone (each after a jittered backoff)',
    ['configmap'],
  );
  readonly configWatchErrors = counter(
    this.registry,
    'config_watch_errors_total',
    'Failed LISTs and watches of the config ConfigMap (API server unreachable, HTTP errors)',
    ['configmap'],
  );
  readonly tlsCertificateReloadsTotal = counter(
    this.registry,
    'tls_certificate_reloads_total',
    'Listener certificate reloads (result: success | failure)',
    ['result'],
  );
  readonly proxyProtocolTotal = counter(
    this.registry,
    'proxy_protocol_total',
    'PROXY protocol headers from trusted proxies (result: ok | local | error | timeout)',
    ['result'],
  );
  readonly draining = gauge(this.registry, 'draining', '1 while the relay drains');
  readonly rateLimiterKeys = gauge(
    this.registry,
    'rate_limiter_keys',
    'Tracked (tenant, client) rate limit buckets in this pod',
  );
  readonly traceWrittenTotal = counter(
    this.registry,
    'trace_written_total',
    'Message-trace entries written to the trace store',
  );
  readonly traceDroppedTotal = counter(
    this.registry,
    'trace_dropped_total',
    'Message-trace entries dropped (reason: buffer_full while the store was unavailable | shutdown)',
    ['reason'],
  );
  readonly traceBufferEntries = gauge(
    this.registry,
    'trace_buffer_entries',
    'Message-trace entries waiting in memory to be written',
  );
  readonly capturesTotal = counter(
    this.registry,
    'captures_total',
    'Consented troubleshooting captures (result: stored | discarded | quota_exhausted | store_unavailable | failed)',
    ['tenant', 'result'],
  );
  readonly limitHitsTotal = counter(
    this.registry,
    'limit_hits_total',
    'Fairness limits hit: refusals and disconnects; recorded_recipients counts recipients not recorded, error_sleep commands delayed (limit: connections_per_client | connections_per_network | upstream_per_client | upstream_per_tenant | upstream_hold_time | recipients_per_transaction | recorded_recipients | errors_per_session | error_sleep)',
    ['limit'],
  );
  readonly dnsQueriesTotal = counter(
    this.registry,
    'dns_queries_total',
    'DNS queries the relay made (type: A for blocklists; TXT, A, AAAA, MX, PTR for sender authentication; result: ok | nxdomain | nodata are answers; timeout | servfail | refused | error are resolver failures)',
    ['type', 'result'],
  );
  readonly dnsblVerdictsTotal = counter(
    this.registry,
    'dnsbl_verdicts_total',
    'DNS blocklist decisions (scope: relay at connect | tenant at RCPT; verdict: pass | reject | allowlisted | tempfail | failed_open)',
    ['scope', 'tenant', 'verdict'],
  );
  readonly dnsblLookupsTotal = counter(
    this.registry,
    'dnsbl_lookups_total',
    'DNS blocklist answers per configured zone (result: listed | not_listed | error; source: dns | cache)',
    ['zone', 'result', 'source'],
  );
  readonly dnsblCacheEntries = gauge(
    this.registry,
    'dnsbl_cache_entries',
    'DNS blocklist answers cached (bounded; kept for their TTL)',
  );
  readonly authResultsTotal = counter(
    this.registry,
    'auth_results_total',
    'Sender authentication results (check: spf | dkim | arc | dmarc; result: the RFC 8601 word, e.g. pass | fail | softfail | neutral | none | temperror | permerror; dkim counts each signature, or none)',
    ['tenant', 'check', 'result'],
  );
  readonly authActionsTotal = counter(
    this.registry,
    'auth_actions_total',
    'What sender authentication did with a message (action: annotated | annotated_spf_only | rejected | deferred; reason: dmarc_pass | dmarc_none | dmarc_fail_POLICY | dmarc_reject | dmarc_quarantine | dns_temperror)',
    ['tenant', 'action', 'reason'],
  );

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    for (const limit of LIMIT_NAMES) this.limitHitsTotal.inc({ limit }, 0);
    // at 0, so that a failure ratio has a denominator before the first query
    this.dnsQueriesTotal.inc({ type: 'A', result: 'ok' }, 0);
    this.dnsQueriesTotal.inc({ type: 'A', result: 'timeout' }, 0);
  }

  setConfig(hash: string, generation: number): void {
    this.configInfo.reset();
    this.configInfo.set({ hash }, 1);
    this.configGeneration.set(generation);
    this.configLastReloadSuccessful.set(1);
    this.configLastReloadSuccessTimestamp.set(Date.now() / 1000);
    this.configReloadsTotal.inc({ result: 'success' });
  }

  /** A load of the config already active (e.g. a refused config reverted): the reload succeeded. */
  configUnchanged(): void {
    this.configLastReloadSuccessful.set(1);
    this.configLastReloadSuccessTimestamp.set(Date.now() / 1000);
    this.configReloadsTotal.inc({ result: 'success' });
  }

  /**
   * Health series of the watch on one config ConfigMap, created at 0 so that a relay that never
   * reaches the API server alerts too (MailPlusRelayConfigWatchStale).
   */
  configWatch(configmap: string): ConfigMapWatchMetrics {
    const l = { configmap };
    this.configWatchLastSync.set(l, 0);
    this.configWatchRelists.inc(l, 0);
    this.configWatchRestarts.inc(l, 0);
    this.configWatchErrors.inc(l, 0);
    return {
      synced: () => this.configWatchLastSync.set(l, Date.now() / 1000),
      relisted: () => this.configWatchRelists.inc(l),
      restarted: () => this.configWatchRestarts.inc(l),
      failed: () => this.configWatchErrors.inc(l),
    };
  }

  /** The upstream pool's occupancy, read at each scrape. */
  upstreamPool(stats: () => { open: number; idle: number; waiting: number }): void {
    this.#poolStats = stats;
  }

  configRefused(): void {
    this.configLastReloadSuccessful.set(0);
    this.configReloadsTotal.inc({ result: 'failure' });
  }

  close(): void {
    this.registry.clear();
  }
}
