import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { ConfigMapWatchMetrics } from '../config/configmap-watch.ts';
import { LIMIT_NAMES } from '../smtp/limit-names.ts';

/**
 * One registry per relay instance (no prom-client global registry), so several relays can run in
 * one process (tests) without clashing. Labels never carry client addresses or mail addresses:
 * only tenant, route (namespace/name), upstream (host:port), results and reasons from fixed sets.
 */
export class RelayMetrics {
  readonly registry = new Registry();
  readonly sessionsTotal: Counter<string>;
  readonly sessionsActive: Gauge<string>;
  readonly recipientsTotal: Counter<'tenant' | 'route' | 'result' | 'reason'>;
  readonly messagesTotal: Counter<'tenant' | 'route' | 'upstream' | 'result' | 'reason'>;
  readonly messageBytesTotal: Counter<'tenant' | 'route' | 'upstream' | 'result'>;
  readonly upstreamLatency: Histogram<'upstream' | 'phase'>;
  readonly upstreamAttemptsTotal: Counter<'upstream' | 'result'>;
  readonly configGeneration: Gauge<string>;
  readonly configLastReloadSuccessful: Gauge<string>;
  readonly configLastReloadSuccessTimestamp: Gauge<string>;
  readonly configReloadsTotal: Counter<'result'>;
  readonly configInfo: Gauge<'hash'>;
  readonly configWatchLastSync: Gauge<'configmap'>;
  readonly configWatchRelists: Counter<'configmap'>;
  readonly configWatchRestarts: Counter<'configmap'>;
  readonly configWatchErrors: Counter<'configmap'>;
  readonly tlsCertificateReloadsTotal: Counter<'result'>;
  readonly proxyProtocolTotal: Counter<'result'>;
  readonly draining: Gauge<string>;
  readonly rateLimiterKeys: Gauge<string>;
  readonly traceWrittenTotal: Counter<string>;
  readonly traceDroppedTotal: Counter<'reason'>;
  readonly traceBufferEntries: Gauge<string>;
  readonly capturesTotal: Counter<'tenant' | 'result'>;
  readonly limitHitsTotal: Counter<'limit'>;
  readonly dnsQueriesTotal: Counter<'type' | 'result'>;
  readonly dnsblVerdictsTotal: Counter<'scope' | 'tenant' | 'verdict'>;
  readonly dnsblLookupsTotal: Counter<'zone' | 'result' | 'source'>;
  readonly dnsblCacheEntries: Gauge<string>;
  readonly authResultsTotal: Counter<'tenant' | 'check' | 'result'>;
  readonly authActionsTotal: Counter<'tenant' | 'action' | 'reason'>;

  constructor() {
    const registers = [this.registry];
    const p = 'mailplus_relay_';
    collectDefaultMetrics({ register: this.registry });
    this.sessionsTotal = new Counter({
      name: `${p}sessions_total`,
      help: 'SMTP sessions accepted',
      registers,
    });
    this.sessionsActive = new Gauge({
      name: `${p}sessions_active`,
      help: 'SMTP sessions open now',
      registers,
    });
    this.recipientsTotal = new Counter({
      name: `${p}recipients_total`,
      help: 'RCPT TO verdicts (result: accepted | rejected | deferred)',
      labelNames: ['tenant', 'route', 'result', 'reason'],
      registers,
    });
    this.messagesTotal = new Counter({
      name: `${p}messages_total`,
      help: 'Messages after DATA (result: relayed | rejected | deferred | failed)',
      labelNames: ['tenant', 'route', 'upstream', 'result', 'reason'],
      registers,
    });
    this.messageBytesTotal = new Counter({
      name: `${p}message_bytes_total`,
      help: 'Raw (dot-stuffed) message bytes received in DATA',
      labelNames: ['tenant', 'route', 'upstream', 'result'],
      registers,
    });
    this.upstreamLatency = new Histogram({
      name: `${p}upstream_latency_seconds`,
      help: 'Upstream latency (phase connect: session + MAIL FROM; transaction: DATA until the final reply)',
      labelNames: ['upstream', 'phase'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.upstreamAttemptsTotal = new Counter({
      name: `${p}upstream_attempts_total`,
      help: 'Attempts to open an upstream transaction (result: ok | refused | deferred | error)',
      labelNames: ['upstream', 'result'],
      registers,
    });
    this.configGeneration = new Gauge({
      name: `${p}config_generation`,
      help: 'Incremented on every successfully applied relay config',
      registers,
    });
    this.configLastReloadSuccessful = new Gauge({
      name: `${p}config_last_reload_successful`,
      help: '1 if the last config load succeeded, 0 if it was refused',
      registers,
    });
    this.configLastReloadSuccessTimestamp = new Gauge({
      name: `${p}config_last_reload_success_timestamp_seconds`,
      help: 'Unix time of the last successful config load',
      registers,
    });
    this.configReloadsTotal = new Counter({
      name: `${p}config_reloads_total`,
      help: 'Config loads (result: success | failure)',
      labelNames: ['result'],
      registers,
    });
    this.configInfo = new Gauge({
      name: `${p}config_info`,
      help: 'The active config hash (value 1)',
      labelNames: ['hash'],
      registers,
    });
    // label configmap: the ConfigMap's name, one series per ConfigMap the relay follows
    this.configWatchLastSync = new Gauge({
      name: `${p}config_watch_last_sync_timestamp_seconds`,
      help: 'Unix time the relay last knew it held the current version of its config ConfigMap (LIST, watch event or bookmark, watch ended normally)',
      labelNames: ['configmap'],
      registers,
    });
    this.configWatchRelists = new Counter({
      name: `${p}config_watch_relists_total`,
      help: 'LISTs of the config ConfigMap answered (start, 410 Gone, after an error, periodic resync)',
      labelNames: ['configmap'],
      registers,
    });
    this.configWatchRestarts = new Counter({
      name: `${p}config_watch_restarts_total`,
      help: 'Config ConfigMap watches restarted after an error or 410 Gone (each after a jittered backoff)',
      labelNames: ['configmap'],
      registers,
    });
    this.configWatchErrors = new Counter({
      name: `${p}config_watch_errors_total`,
      help: 'Failed LISTs and watches of the config ConfigMap (API server unreachable, HTTP errors)',
      labelNames: ['configmap'],
      registers,
    });
    this.tlsCertificateReloadsTotal = new Counter({
      name: `${p}tls_certificate_reloads_total`,
      help: 'Listener certificate reloads (result: success | failure)',
      labelNames: ['result'],
      registers,
    });
    this.proxyProtocolTotal = new Counter({
      name: `${p}proxy_protocol_total`,
      help: 'PROXY protocol headers from trusted proxies (result: ok | local | error | timeout)',
      labelNames: ['result'],
      registers,
    });
    this.draining = new Gauge({ name: `${p}draining`, help: '1 while the relay drains', registers });
    this.rateLimiterKeys = new Gauge({
      name: `${p}rate_limiter_keys`,
      help: 'Tracked (tenant, client) rate limit buckets in this pod',
      registers,
    });
    this.traceWrittenTotal = new Counter({
      name: `${p}trace_written_total`,
      help: 'Message-trace entries written to the trace store',
      registers,
    });
    this.traceDroppedTotal = new Counter({
      name: `${p}trace_dropped_total`,
      help: 'Message-trace entries dropped (reason: buffer_full while the store was unavailable | shutdown)',
      labelNames: ['reason'],
      registers,
    });
    this.traceBufferEntries = new Gauge({
      name: `${p}trace_buffer_entries`,
      help: 'Message-trace entries waiting in memory to be written',
      registers,
    });
    this.capturesTotal = new Counter({
      name: `${p}captures_total`,
      help: 'Consented troubleshooting captures (result: stored | discarded | quota_exhausted | store_unavailable | failed)',
      labelNames: ['tenant', 'result'],
      registers,
    });
    this.limitHitsTotal = new Counter({
      name: `${p}limit_hits_total`,
      help: 'Fairness limits hit: refusals and disconnects; recorded_recipients counts recipients not recorded, error_sleep commands delayed (limit: connections_per_client | connections_per_network | upstream_per_client | upstream_per_tenant | upstream_hold_time | recipients_per_transaction | recorded_recipients | errors_per_session | error_sleep)',
      labelNames: ['limit'],
      registers,
    });
    for (const limit of LIMIT_NAMES) this.limitHitsTotal.inc({ limit }, 0);
    this.dnsQueriesTotal = new Counter({
      name: `${p}dns_queries_total`,
      help: 'DNS queries the relay made (type: A for blocklists; TXT, A, AAAA, MX, PTR for sender authentication; result: ok | nxdomain | nodata are answers; timeout | servfail | refused | error are resolver failures)',
      labelNames: ['type', 'result'],
      registers,
    });
    // at 0, so that a failure ratio has a denominator before the first query
    this.dnsQueriesTotal.inc({ type: 'A', result: 'ok' }, 0);
    this.dnsQueriesTotal.inc({ type: 'A', result: 'timeout' }, 0);
    this.dnsblVerdictsTotal = new Counter({
      name: `${p}dnsbl_verdicts_total`,
      help: 'DNS blocklist decisions (scope: relay at connect | tenant at RCPT; verdict: pass | reject | allowlisted | tempfail | failed_open)',
      labelNames: ['scope', 'tenant', 'verdict'],
      registers,
    });
    this.dnsblLookupsTotal = new Counter({
      name: `${p}dnsbl_lookups_total`,
      help: 'DNS blocklist answers per configured zone (result: listed | not_listed | error; source: dns | cache)',
      labelNames: ['zone', 'result', 'source'],
      registers,
    });
    this.dnsblCacheEntries = new Gauge({
      name: `${p}dnsbl_cache_entries`,
      help: 'DNS blocklist answers cached (bounded; kept for their TTL)',
      registers,
    });
    this.authResultsTotal = new Counter({
      name: `${p}auth_results_total`,
      help: 'Sender authentication results (check: spf | dkim | arc | dmarc; result: the RFC 8601 word, e.g. pass | fail | softfail | neutral | none | temperror | permerror; dkim counts each signature, or none)',
      labelNames: ['tenant', 'check', 'result'],
      registers,
    });
    this.authActionsTotal = new Counter({
      name: `${p}auth_actions_total`,
      help: 'What sender authentication did with a message (action: annotated | annotated_spf_only | rejected | deferred; reason: dmarc_pass | dmarc_none | dmarc_fail_POLICY | dmarc_reject | dmarc_quarantine | dns_temperror)',
      labelNames: ['tenant', 'action', 'reason'],
      registers,
    });
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

  configRefused(): void {
    this.configLastReloadSuccessful.set(0);
    this.configReloadsTotal.inc({ result: 'failure' });
  }

  close(): void {
    this.registry.clear();
  }
}
