import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { formatDuration } from '../contract/grammar/duration.ts';
import { formatSize } from '../contract/grammar/size.ts';
import { parseDnsServer } from '../relay/dns/resolver.ts';
import { type DnsblPolicy, parseDnsblSite } from '../relay/dnsbl/policy.ts';
import { RELAY_DEFAULTS } from '../relay/relay-defaults.ts';
import { cidrMatcher } from '../relay/smtp/cidr.ts';
import { DEFAULT_FAIRNESS, type FairnessLimits } from '../relay/smtp/fairness.ts';
import { CliError } from './errors.ts';
import { type HostPort, list, parseByteSize, parseDurationMs, parseHostPort, str } from './flags.ts';

/** Flags shared by every command that runs the relay (`relay`, `dev`). */
export const relayFlagSpec = {
  listen: { type: 'string' },
  'admin-listen': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  hostname: { type: 'string' },
  'trusted-proxy': { type: 'string', multiple: true },
  'max-message-size': { type: 'string' },
  'max-clients': { type: 'string' },
  'max-transactions-per-session': { type: 'string' },
  'upstream-ca': { type: 'string' },
  'greet-pause': { type: 'string' },
  'drain-timeout': { type: 'string' },
  'pseudonymize-key-file': { type: 'string' },
  'trace-store': { type: 'string' },
  postmaster: { type: 'string' },
  'fleet-id': { type: 'string' },
  'max-hops': { type: 'string' },
  'max-connections-per-client': { type: 'string' },
  'max-connections-per-network': { type: 'string' },
  'max-upstream-per-client': { type: 'string' },
  'max-upstream-per-tenant': { type: 'string' },
  'upstream-hold-timeout': { type: 'string' },
  'max-recipients': { type: 'string' },
  'max-recorded-recipients': { type: 'string' },
  'client-limit-exempt': { type: 'string', multiple: true },
  'soft-error-limit': { type: 'string' },
  'hard-error-limit': { type: 'string' },
  'error-sleep': { type: 'string' },
  'trace-buffer-size': { type: 'string' },
  'dns-server': { type: 'string', multiple: true },
  'dns-timeout': { type: 'string' },
  'dns-tries': { type: 'string' },
  'dnsbl-site': { type: 'string', multiple: true },
  'dnsbl-threshold': { type: 'string' },
  'dnsbl-allow': { type: 'string', multiple: true },
  'dnsbl-fail': { type: 'string' },
} as const;

const D = RELAY_DEFAULTS;
const F = DEFAULT_FAIRNESS;
const hostPort = (a: { host: string; port: number }) => `${a.host}:${a.port}`;

export const relayFlagHelp = `Relay options:
  --listen HOST:PORT            SMTP listener (default ${hostPort(D.listen)})
  --admin-listen HOST:PORT      HTTP /metrics, /healthz, /readyz, /config (default ${hostPort(D.admin)})
  --tls-cert FILE --tls-key FILE
                                certificate for STARTTLS; reloaded when the files change
  --hostname NAME               name in the greeting and EHLO to upstreams (default: this host's name)
  --trusted-proxy CIDR          accept PROXY protocol v1/v2 from these load balancers (repeatable)
  --max-message-size SIZE       relay-wide limit advertised with SIZE (default ${formatSize(D.maxMessageSize)})
  --max-clients N               concurrent SMTP sessions (default ${D.maxClients})
  --max-transactions-per-session N
                                messages per connection before 421, the sender reconnects
                                (default ${D.maxTransactions})
  --upstream-ca FILE            extra CA certificates trusted for upstream TLS verification
  --greet-pause DURATION        wait before the greeting to catch early talkers (default ${formatDuration(D.greetPauseMs)})
  --drain-timeout DURATION      on SIGTERM, how long in-flight transactions may finish (default ${formatDuration(D.drainTimeoutMs)})
  --pseudonymize-key-file FILE  replace addresses in logs with a keyed HMAC (key read from FILE); also the
                                master key of per-tenant pseudonyms (TenantPolicy spec.privacy.pseudonymize)
  --postmaster ADDRESS          where RCPT TO:<postmaster> without a domain goes (RFC 5321 §4.5.1), e.g.
                                postmaster@example.com, routed like any recipient (unset: refused, 550 5.1.1)
  --fleet-id ID                 the same on every relay of a fleet: shown in the greeting, so a route back
                                into the fleet is refused as a mail loop (554 5.4.6) at RCPT
  --max-hops N                  Received header fields that make a message a loop (default ${D.maxHops})
  --dns-server IP[:PORT]        DNS server for every lookup the relay makes (repeatable or comma list;
                                default: the system resolver, /etc/resolv.conf)
  --dns-timeout DURATION        per-try DNS timeout (default ${formatDuration(D.dnsTimeoutMs)})
  --dns-tries N                 tries per DNS query, the first included (default ${D.dnsTries})
  --dnsbl-site ZONE[=CODES][*WEIGHT]
                                DNS blocklist checked at connect, Postfix postscreen_dnsbl_sites syntax:
                                zen.example*2, bl.example=127.0.0.[2..11], wl.example*-2 (repeatable)
  --dnsbl-threshold N           refuse (554 5.7.1) when the listed zones' weights reach N (default ${D.dnsblThreshold})
  --dnsbl-allow CIDR            clients never checked (repeatable or comma list)
  --dnsbl-fail open|closed      a failed lookup lets the client in (open, default) or gets 421 4.7.1 (closed)
  --trace-store STORE           message trace and consented captures: sqlite:PATH or postgres://USER@HOST/DB
                                (default: env MAILPLUS_TRACE_STORE; unset: no trace, no captures)
  --trace-buffer-size SIZE      memory for trace entries while the store is unreachable; past it
                                entries are dropped and counted (default ${formatSize(D.traceBufferBytes)})

Fairness limits (0 switches a limit off; refusals count in mailplus_relay_limit_hits_total):
  --max-connections-per-client N
                                concurrent connections from one address, then 421 4.7.0 (default ${F.connectionsPerClient})
  --max-connections-per-network N
                                concurrent connections from one /24 (IPv4) or /64 (IPv6) (default ${F.connectionsPerNetwork})
  --max-upstream-per-client N   upstream connections one client address holds at once, then
                                RCPT gets 450 4.7.1 (default ${F.upstreamPerClient})
  --max-upstream-per-tenant N   upstream connections held at once for one tenant, then RCPT gets
                                451 4.4.5 (default ${F.upstreamPerTenant}: only the pool's 50 per upstream)
  --upstream-hold-timeout DURATION
                                how long a session may hold an upstream connection without an
                                accepted RCPT or DATA; then it is released and the client gets
                                421 4.4.2 and is disconnected (default ${formatDuration(F.upstreamHoldMs)})
  --max-recipients N            accepted recipients per transaction, then 452 4.5.3 (default ${F.recipientsPerTransaction})
  --max-recorded-recipients N   recipients kept per transaction in the log line and trace; further
                                refused ones are only counted (default ${F.recordedRecipients})
  --soft-error-limit N          errors (4xx/5xx replies) a session may make without delivering mail
                                before every further command waits --error-sleep (default ${F.softErrorLimit})
  --hard-error-limit N          errors without delivering mail, then 421 4.7.0 and disconnect
                                (default ${F.hardErrorLimit})
  --error-sleep DURATION        the wait past the soft error limit (default ${formatDuration(F.errorSleepMs)})
  --client-limit-exempt CIDR    clients the per-client and per-network limits do not apply to,
                                e.g. an in-cluster sender (repeatable)
`;

export interface RelayFlags {
  listen: HostPort;
  admin: HostPort;
  tls?: { certFile: string; keyFile: string };
  hostname: string;
  trustedProxies: string[];
  maxMessageSize: number;
  maxClients: number;
  maxTransactions: number;
  upstreamCaFile?: string;
  greetPauseMs: number;
  drainTimeoutMs: number;
  pseudonymizeKey?: string;
  postmaster?: string;
  fleetId?: string;
  maxHops: number;
  dns: { servers: string[]; timeoutMs: number; tries: number };
  /** Relay-wide DNS blocklists; undefined without --dnsbl-site. */
  dnsbl?: DnsblPolicy;
  /** sqlite:PATH or postgres://…; from --trace-store or MAILPLUS_TRACE_STORE. */
  traceStore?: string;
  traceBufferBytes: number;
  fairness: FairnessLimits;
  clientLimitExempt: string[];
}

export function readRelayFlags(values: Record<string, string | boolean | string[] | undefined>): RelayFlags {
  const cert = str(values['tls-cert']);
  const key = str(values['tls-key']);
  if (Boolean(cert) !== Boolean(key)) throw new CliError('--tls-cert and --tls-key go together');
  const maxClients = Number(str(values['max-clients']) ?? D.maxClients);
  if (!Number.isInteger(maxClients) || maxClients < 1)
    throw new CliError('--max-clients must be a whole number ≥ 1');
  const maxTransactions = Number(str(values['max-transactions-per-session']) ?? D.maxTransactions);
  if (!Number.isInteger(maxTransactions) || maxTransactions < 1) {
    throw new CliError('--max-transactions-per-session must be a whole number ≥ 1');
  }
  const keyFile = str(values['pseudonymize-key-file']);
  let pseudonymizeKey: string | undefined;
  if (keyFile) {
    try {
      pseudonymizeKey = readFileSync(keyFile, 'utf8').trim();
    } catch (err) {
      throw new CliError(`--pseudonymize-key-file: cannot read ${keyFile}: ${(err as Error).message}`);
    }
    if (pseudonymizeKey.length < 16)
      throw new CliError('--pseudonymize-key-file: the key must be at least 16 bytes');
  }
  const postmaster = str(values.postmaster);
  if (postmaster !== undefined && !/^[^\s<>@]+@[^\s<>@]+\.[^\s<>@]+$/.test(postmaster)) {
    throw new CliError(`--postmaster: "${postmaster}" is not an address; use e.g. postmaster@example.com`);
  }
  const fleetId = str(values['fleet-id']);
  if (fleetId !== undefined && !/^[A-Za-z0-9._-]{1,64}$/.test(fleetId)) {
    throw new CliError(`--fleet-id: "${fleetId}" must be 1-64 letters, digits, '.', '_' or '-'`);
  }
  const maxHops = Number(str(values['max-hops']) ?? D.maxHops);
  if (!Number.isInteger(maxHops) || maxHops < 1) throw new CliError('--max-hops must be a whole number ≥ 1');
  return {
    dns: readDnsFlags(values),
    dnsbl: readDnsblFlags(values),
    postmaster,
    fleetId,
    maxHops,
    listen: parseHostPort(str(values.listen) ?? hostPort(D.listen), '--listen'),
    admin: parseHostPort(str(values['admin-listen']) ?? hostPort(D.admin), '--admin-listen'),
    tls: cert && key ? { certFile: cert, keyFile: key } : undefined,
    hostname: str(values.hostname) ?? hostname(),
    trustedProxies: list(values['trusted-proxy']),
    maxMessageSize: optional(
      values['max-message-size'],
      D.maxMessageSize,
      parseByteSize,
      '--max-message-size',
    ),
    maxClients,
    maxTransactions,
    upstreamCaFile: str(values['upstream-ca']),
    greetPauseMs: optional(values['greet-pause'], D.greetPauseMs, parseDurationMs, '--greet-pause'),
    drainTimeoutMs: optional(values['drain-timeout'], D.drainTimeoutMs, parseDurationMs, '--drain-timeout'),
    pseudonymizeKey,
    traceStore: readTraceStoreFlag(str(values['trace-store'])),
    traceBufferBytes: optional(
      values['trace-buffer-size'],
      D.traceBufferBytes,
      parseByteSize,
      '--trace-buffer-size',
    ),
    fairness: readFairnessFlags(values),
    clientLimitExempt: readExempt(list(values['client-limit-exempt'])),
  };
}

/** A flag's parsed value, or the default (already a number) when the flag is unset. */
function optional(
  value: string | boolean | string[] | undefined,
  fallback: number,
  parse: (v: string, flag: string) => number,
  flag: string,
): number {
  const v = str(value);
  return v === undefined ? fallback : parse(v, flag);
}

function readExempt(cidrs: string[]): string[] {
  try {
    cidrMatcher(cidrs);
  } catch (err) {
    throw new CliError(`--client-limit-exempt: ${(err as Error).message}`);
  }
  return cidrs;
}

function count(values: Record<string, unknown>, flag: string, fallback: number): number {
  const v = str(values[flag] as string | undefined);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n)) {
    throw new CliError(`--${flag}: "${v}" is not a whole number ≥ 0 (0 switches the limit off)`);
  }
  return n;
}

function readFairnessFlags(values: Record<string, string | boolean | string[] | undefined>): FairnessLimits {
  const d = DEFAULT_FAIRNESS;
  const duration = (flag: string, fallback: number) => {
    const v = str(values[flag]);
    if (v === undefined) return fallback;
    return v.trim() === '0' ? 0 : parseDurationMs(v, `--${flag}`);
  };
  const f: FairnessLimits = {
    connectionsPerClient: count(values, 'max-connections-per-client', d.connectionsPerClient),
    connectionsPerNetwork: count(values, 'max-connections-per-network', d.connectionsPerNetwork),
    upstreamPerClient: count(values, 'max-upstream-per-client', d.upstreamPerClient),
    upstreamPerTenant: count(values, 'max-upstream-per-tenant', d.upstreamPerTenant),
    upstreamHoldMs: duration('upstream-hold-timeout', d.upstreamHoldMs),
    recipientsPerTransaction: count(values, 'max-recipients', d.recipientsPerTransaction),
    recordedRecipients: count(values, 'max-recorded-recipients', d.recordedRecipients),
    softErrorLimit: count(values, 'soft-error-limit', d.softErrorLimit),
    hardErrorLimit: count(values, 'hard-error-limit', d.hardErrorLimit),
    errorSleepMs: duration('error-sleep', d.errorSleepMs),
  };
  if (f.recipientsPerTransaction < 1) throw new CliError('--max-recipients must be a whole number ≥ 1');
  return f;
}

function commaList(v: string | boolean | string[] | undefined): string[] {
  return list(v)
    .flatMap((s) => s.split(','))
    .map((s) => s.trim())
    .filter(Boolean);
}

export function readDnsFlags(
  values: Record<string, string | boolean | string[] | undefined>,
): RelayFlags['dns'] {
  const servers = commaList(values['dns-server']).map((v) => {
    try {
      return parseDnsServer(v);
    } catch (err) {
      throw new CliError(`--dns-server: ${(err as Error).message}`);
    }
  });
  const timeoutMs = optional(values['dns-timeout'], D.dnsTimeoutMs, parseDurationMs, '--dns-timeout');
  if (timeoutMs < 1) throw new CliError('--dns-timeout must be at least 1ms');
  const tries = Number(str(values['dns-tries']) ?? D.dnsTries);
  if (!Number.isInteger(tries) || tries < 1 || tries > 10)
    throw new CliError('--dns-tries must be a whole number 1-10');
  return { servers, timeoutMs, tries };
}

function readDnsblFlags(
  values: Record<string, string | boolean | string[] | undefined>,
): DnsblPolicy | undefined {
  const sites = list(values['dnsbl-site']);
  const threshold = Number(str(values['dnsbl-threshold']) ?? D.dnsblThreshold);
  if (!Number.isInteger(threshold) || threshold < 1)
    throw new CliError('--dnsbl-threshold must be a whole number ≥ 1');
  const fail = str(values['dnsbl-fail']) ?? 'open';
  if (fail !== 'open' && fail !== 'closed')
    throw new CliError(`--dnsbl-fail: "${fail}" must be open or closed`);
  const allow = commaList(values['dnsbl-allow']);
  try {
    cidrMatcher(allow);
  } catch (err) {
    throw new CliError(`--dnsbl-allow: ${(err as Error).message}`);
  }
  if (sites.length === 0) return undefined;
  const zones = sites.map((s) => {
    try {
      return parseDnsblSite(s);
    } catch (err) {
      throw new CliError(`--dnsbl-site: ${(err as Error).message}`);
    }
  });
  if (!zones.some((z) => z.weight > 0))
    throw new CliError('--dnsbl-site: at least one zone needs a positive weight');
  return { zones, threshold, allow, failClosed: fail === 'closed' };
}

/** --trace-store, else the MAILPLUS_TRACE_STORE environment variable (the chart sets it from a Secret). */
export function readTraceStoreFlag(flag: string | undefined, env = process.env): string | undefined {
  const value = flag ?? (env.MAILPLUS_TRACE_STORE?.trim() || undefined);
  if (value === undefined) return undefined;
  if (!/^(sqlite:.+|postgres(ql)?:\/\/.+)$/.test(value)) {
    throw new CliError(
      `--trace-store: "${value.replace(/\/\/[^@/]*@/, '//***@')}" is not a trace store; use sqlite:PATH or postgres://USER@HOST/DB`,
    );
  }
  return value;
}
