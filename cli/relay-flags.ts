import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
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
} as const;

export const relayFlagHelp = `Relay options:
  --listen HOST:PORT            SMTP listener (default 0.0.0.0:2525)
  --admin-listen HOST:PORT      HTTP /metrics, /healthz, /readyz, /config (default 0.0.0.0:9090)
  --tls-cert FILE --tls-key FILE
                                certificate for STARTTLS; reloaded when the files change
  --hostname NAME               name in the greeting and EHLO to upstreams (default: this host's name)
  --trusted-proxy CIDR          accept PROXY protocol v1/v2 from these load balancers (repeatable)
  --max-message-size SIZE       relay-wide limit advertised with SIZE (default 25Mi)
  --max-clients N               concurrent SMTP sessions (default 1000)
  --max-transactions-per-session N
                                messages per connection before 421, the sender reconnects
                                (default 1000)
  --upstream-ca FILE            extra CA certificates trusted for upstream TLS verification
  --greet-pause DURATION        wait before the greeting to catch early talkers (default 0ms)
  --drain-timeout DURATION      on SIGTERM, how long in-flight transactions may finish (default 30s)
  --pseudonymize-key-file FILE  replace addresses in logs with a keyed HMAC (key read from FILE); also the
                                master key of per-tenant pseudonyms (TenantPolicy spec.privacy.pseudonymize)
  --postmaster ADDRESS          where RCPT TO:<postmaster> without a domain goes (RFC 5321 §4.5.1), e.g.
                                postmaster@example.com, routed like any recipient (unset: refused, 550 5.1.1)
  --fleet-id ID                 the same on every relay of a fleet: shown in the greeting, so a route back
                                into the fleet is refused as a mail loop (554 5.4.6) at RCPT
  --max-hops N                  Received header fields that make a message a loop (default 50)
  --trace-store STORE           message trace and consented captures: sqlite:PATH or postgres://USER@HOST/DB
                                (default: env MAILPLUS_TRACE_STORE; unset: no trace, no captures)
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
  /** sqlite:PATH or postgres://…; from --trace-store or MAILPLUS_TRACE_STORE. */
  traceStore?: string;
}

export function readRelayFlags(values: Record<string, string | boolean | string[] | undefined>): RelayFlags {
  const cert = str(values['tls-cert']);
  const key = str(values['tls-key']);
  if (Boolean(cert) !== Boolean(key)) throw new CliError('--tls-cert and --tls-key go together');
  const maxClients = Number(str(values['max-clients']) ?? '1000');
  if (!Number.isInteger(maxClients) || maxClients < 1)
    throw new CliError('--max-clients must be a whole number ≥ 1');
  const maxTransactions = Number(str(values['max-transactions-per-session']) ?? '1000');
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
  const maxHops = Number(str(values['max-hops']) ?? '50');
  if (!Number.isInteger(maxHops) || maxHops < 1) throw new CliError('--max-hops must be a whole number ≥ 1');
  return {
    postmaster,
    fleetId,
    maxHops,
    listen: parseHostPort(str(values.listen) ?? '0.0.0.0:2525', '--listen'),
    admin: parseHostPort(str(values['admin-listen']) ?? '0.0.0.0:9090', '--admin-listen'),
    tls: cert && key ? { certFile: cert, keyFile: key } : undefined,
    hostname: str(values.hostname) ?? hostname(),
    trustedProxies: list(values['trusted-proxy']),
    maxMessageSize: parseByteSize(str(values['max-message-size']) ?? '25Mi', '--max-message-size'),
    maxClients,
    maxTransactions,
    upstreamCaFile: str(values['upstream-ca']),
    greetPauseMs: parseDurationMs(str(values['greet-pause']) ?? '0ms', '--greet-pause'),
    drainTimeoutMs: parseDurationMs(str(values['drain-timeout']) ?? '30s', '--drain-timeout'),
    pseudonymizeKey,
    traceStore: readTraceStoreFlag(str(values['trace-store'])),
  };
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
