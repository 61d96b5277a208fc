import { type Relay, startRelay } from '../relay/relay.ts';
import { CliError } from './errors.ts';
import type { RelayFlags } from './relay-flags.ts';

/** Starts the relay from CLI flags and wires SIGTERM/SIGINT to a drain. */
export async function startRelayFromFlags(flags: RelayFlags): Promise<Relay> {
  let relay: Relay;
  try {
    relay = await startRelay({
      listen: flags.listen,
      admin: flags.admin,
      hostname: flags.hostname,
      tlsCert: flags.tls?.certFile,
      tlsKey: flags.tls?.keyFile,
      trustedProxies: flags.trustedProxies,
      maxMessageSize: flags.maxMessageSize,
      maxClients: flags.maxClients,
      maxTransactions: flags.maxTransactions,
      greetPauseMs: flags.greetPauseMs,
      pseudonymizeKey: flags.pseudonymizeKey,
      traceStore: flags.traceStore,
      postmaster: flags.postmaster,
      fleetId: flags.fleetId,
      maxHops: flags.maxHops,
      traceWriter: { maxBufferBytes: flags.traceBufferBytes },
      fairness: flags.fairness,
      fairnessExempt: flags.clientLimitExempt,
      dns: flags.dns,
      dnsbl: flags.dnsbl,
      upstream: flags.upstreamCaFile ? { caFile: flags.upstreamCaFile } : undefined,
    });
  } catch (err) {
    throw new CliError(`cannot start the relay: ${(err as Error).message}`, 1);
  }
  return relay;
}

/**
 * Resolves when the process is asked to stop. SIGTERM drains: no new sessions, in-flight
 * transactions finish up to the deadline, then exit. A second signal stops at once.
 */
export function untilStopped(relay: Relay, drainTimeoutMs: number): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) {
        relay.logger.warn('second signal, stopping now', { signal });
        void relay.close().then(() => resolve(1));
        return;
      }
      stopping = true;
      relay.logger.info('stopping', { signal, drainTimeoutMs });
      void relay
        .drain(drainTimeoutMs)
        .then(() => relay.close())
        .then(() => resolve(0));
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}
