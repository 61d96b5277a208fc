// The options of startRelay() (relay.ts); their own module so that the parts built from them
// (relay-services.ts) need not import relay.ts.
import type { RelayConfig } from '../contract/config/types.gen.ts';
import type { LogSink } from '../platform/log.ts';
import type { DnsLookup, DnsOptions } from './dns/resolver.ts';
import type { DnsblPolicy } from './dnsbl/policy.ts';
import type { FairnessLimits } from './smtp/fairness.ts';
import type { UpstreamPoolLike } from './smtp/upstream-contract.ts';
import type { TraceStore } from './trace/store.ts';
import type { TraceWriterOptions } from './trace/writer.ts';
import type { PoolOptions } from './upstream/pool.ts';

/** Unset options take RELAY_DEFAULTS (relay-defaults.ts). */
export interface RelayOptions {
  /** SMTP listener; port 0 picks a free one (see address()). */
  listen?: { host?: string; port?: number };
  /** Admin HTTP (/metrics, /healthz, /readyz, /config); false for none. */
  admin?: { host?: string; port?: number } | false;
  /** Our name in the greeting and EHLO reply, and our EHLO name upstream. Default os.hostname(). */
  hostname?: string;
  banner?: string;
  /** PEM files for STARTTLS; reloaded when they change. Without them STARTTLS is not offered. */
  tlsCert?: string;
  tlsKey?: string;
  /** CIDRs whose connections must start with a PROXY v1/v2 header; nobody else's is parsed. */
  trustedProxies?: string[];
  /** How long a trusted proxy may take to send its PROXY header. */
  proxyHeaderTimeoutMs?: number;
  /** Relay-wide limit, advertised as SIZE; raw (dot-stuffed) bytes. */
  maxMessageSize?: number;
  /** Concurrent sessions. */
  maxClients?: number;
  /** Idle timeout (client owes us a command). */
  socketTimeoutMs?: number;
  /** Longest command line. */
  maxCommandLength?: number;
  /** Commands per session before 421 (bounds a session that loops on junk commands). */
  maxCommands?: number;
  /** MAIL transactions per session before 421; senders reconnect for more. */
  maxTransactions?: number;
  /** Session lifetime before 421 4.4.2. */
  maxSessionMs?: number;
  /**
   * Fairness limits per client address, client network, tenant and transaction (smtp/fairness.ts);
   * unset fields take DEFAULT_FAIRNESS, 0 switches a count or time limit off.
   */
  fairness?: Partial<FairnessLimits>;
  /** Client CIDRs exempt from the per-client and per-network limits (Postfix smtpd_client_event_limit_exceptions). */
  fairnessExempt?: string[];
  /** Pause before the greeting, for early-talker detection. */
  greetPauseMs?: number;
  /**
   * Shared by every relay of a fleet: shown in the greeting, and an upstream greeting with it is one of
   * ours, so a route back into the fleet is refused as a loop (554 5.4.6) at RCPT.
   */
  fleetId?: string;
  /** A message arriving with this many Received header fields is a loop: 554 5.4.6 (Postfix's hopcount_limit). */
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
