// Fairness limits: what one client (address, network) or one tenant may hold of the relay's shared
// resources, so that hostile or broken senders cannot starve everyone else. Counters only: the
// callers (relay-front.ts for connections, transaction.ts for upstream connections) decide what to send.
// Replies (replies.ts FAIRNESS_REPLY) are Postfix's for the same limit, so operators and senders
// see familiar text.
import { parseIp } from '../../contract/grammar/cidr.ts';
import type { LimitName } from './limit-names.ts';

export interface FairnessLimits {
  /** Concurrent connections per client address; 0 = unlimited. Postfix smtpd_client_connection_count_limit. */
  connectionsPerClient: number;
  /** Concurrent connections per client network (/24 for IPv4, /64 for IPv6); 0 = unlimited. */
  connectionsPerNetwork: number;
  /** Upstream connections held at once by one client address; 0 = unlimited. */
  upstreamPerClient: number;
  /** Upstream connections held at once for one tenant; 0 = unlimited. */
  upstreamPerTenant: number;
  /** How long a session may hold an upstream connection without sending RCPT or DATA; 0 = forever. */
  upstreamHoldMs: number;
  /** Recipients accepted per transaction. Postfix smtpd_recipient_limit. */
  recipientsPerTransaction: number;
  /** Recipients kept in a transaction's log line and trace (accepted ones always are); the rest are counted. */
  recordedRecipients: number;
  /** Errors (4xx/5xx replies) a session may make without delivering mail before each command waits errorSleepMs. Postfix smtpd_soft_error_limit. */
  softErrorLimit: number;
  /** Errors without delivering mail before 421 and disconnect. Postfix smtpd_hard_error_limit. */
  hardErrorLimit: number;
  /** Postfix smtpd_error_sleep_time. */
  errorSleepMs: number;
}

export const DEFAULT_FAIRNESS: FairnessLimits = {
  connectionsPerClient: 50,
  connectionsPerNetwork: 200,
  upstreamPerClient: 20,
  upstreamPerTenant: 0,
  upstreamHoldMs: 10_000,
  recipientsPerTransaction: 1000,
  recordedRecipients: 100,
  softErrorLimit: 10,
  hardErrorLimit: 20,
  errorSleepMs: 1000,
};

/**
 * The network a client address belongs to for the per-network limit: /24 for IPv4 (IPv4-mapped
 * IPv6 too), /64 for IPv6; the address itself when it cannot be parsed (never merges strangers).
 */
export function clientNetwork(ip: string): string {
  const zone = ip.indexOf('%');
  const parsed = parseIp(zone >= 0 ? ip.slice(0, zone) : ip);
  if (!parsed) return ip;
  return parsed.version === 4
    ? `4:${(parsed.value >> 8n).toString(16)}`
    : `6:${(parsed.value >> 64n).toString(16)}`;
}

/** Counts per key; a key whose count drops to zero is forgotten (memory follows live connections). */
class Counts {
  private readonly m = new Map<string, number>();
  get(key: string): number {
    return this.m.get(key) ?? 0;
  }
  add(key: string): void {
    this.m.set(key, this.get(key) + 1);
  }
  remove(key: string): void {
    const n = this.get(key) - 1;
    if (n > 0) this.m.set(key, n);
    else this.m.delete(key);
  }
  get size(): number {
    return this.m.size;
  }
}

export type Admission = { ok: true; release: () => void } | { ok: false; limit: LimitName };

const within = (count: number, limit: number) => limit <= 0 || count < limit;

/** Concurrent connections per client address and per client network. */
export class ConnectionLimiter {
  private readonly perClient = new Counts();
  private readonly perNetwork = new Counts();
  private readonly limits: Pick<FairnessLimits, 'connectionsPerClient' | 'connectionsPerNetwork'>;
  private readonly exempt: (ip: string) => boolean;

  constructor(
    limits: Pick<FairnessLimits, 'connectionsPerClient' | 'connectionsPerNetwork'>,
    exempt: (ip: string) => boolean = () => false,
  ) {
    this.limits = limits;
    this.exempt = exempt;
  }

  /** Admits a new connection from `ip` or names the limit it would exceed; release() exactly once. */
  admit(ip: string): Admission {
    if (this.exempt(ip)) return { ok: true, release: () => {} };
    const net = clientNetwork(ip);
    if (!within(this.perClient.get(ip), this.limits.connectionsPerClient)) {
      return { ok: false, limit: 'connections_per_client' };
    }
    if (!within(this.perNetwork.get(net), this.limits.connectionsPerNetwork)) {
      return { ok: false, limit: 'connections_per_network' };
    }
    this.perClient.add(ip);
    this.perNetwork.add(net);
    return {
      ok: true,
      release: once(() => {
        this.perClient.remove(ip);
        this.perNetwork.remove(net);
      }),
    };
  }

  /** Distinct client addresses with a live connection (tests, bounded-memory checks). */
  get clients(): number {
    return this.perClient.size;
  }
}

/** Upstream connections held per client address and per tenant (taken at the first RCPT, given back at the end). */
export class UpstreamShares {
  private readonly perClient = new Counts();
  private readonly perTenant = new Counts();
  private readonly limits: Pick<FairnessLimits, 'upstreamPerClient' | 'upstreamPerTenant'>;
  private readonly exempt: (ip: string) => boolean;

  constructor(
    limits: Pick<FairnessLimits, 'upstreamPerClient' | 'upstreamPerTenant'>,
    exempt: (ip: string) => boolean = () => false,
  ) {
    this.limits = limits;
    this.exempt = exempt;
  }

  take(ip: string, tenant: string): Admission {
    const exempt = this.exempt(ip);
    if (!exempt && !within(this.perClient.get(ip), this.limits.upstreamPerClient)) {
      return { ok: false, limit: 'upstream_per_client' };
    }
    if (!within(this.perTenant.get(tenant), this.limits.upstreamPerTenant)) {
      return { ok: false, limit: 'upstream_per_tenant' };
    }
    if (!exempt) this.perClient.add(ip);
    this.perTenant.add(tenant);
    return {
      ok: true,
      release: once(() => {
        if (!exempt) this.perClient.remove(ip);
        this.perTenant.remove(tenant);
      }),
    };
  }

  heldBy(ip: string): number {
    return this.perClient.get(ip);
  }

  heldFor(tenant: string): number {
    return this.perTenant.get(tenant);
  }
}

function once(fn: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    fn();
  };
}
