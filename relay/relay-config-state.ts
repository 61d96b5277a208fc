// The routing config a relay serves: the active snapshot, its generation and load time. A new
// config is verified, compiled into a routing table and swapped in with one assignment; a refused
// one leaves the last good one active.
import { verifyRelayConfig } from '../contract/config/load.ts';
import type { Logger } from '../platform/log.ts';
import type { RelayMetrics } from './observability/metrics.ts';
import { buildRoutingTable } from './routing/table.ts';
import type { ConfigSnapshot } from './smtp/transaction.ts';

export type ApplyResult = { ok: true; hash: string; generation: number } | { ok: false; error: string };

export class RelayConfigState {
  /** What transactions starting now route with; undefined until the first config (MAIL gets 451). */
  snapshot: ConfigSnapshot | undefined;
  generation = 0;
  loadedAt: string | null = null;
  private readonly metrics: RelayMetrics;
  private readonly logger: Logger;

  constructor(metrics: RelayMetrics, logger: Logger) {
    this.metrics = metrics;
    this.logger = logger;
  }

  apply(config: unknown, source: string): ApplyResult {
    try {
      const c = verifyRelayConfig(config, source);
      if (this.snapshot && this.snapshot.hash === c.hash) {
        // e.g. a refused config reverted to the active one: the last reload did succeed
        this.metrics.configUnchanged();
        return { ok: true, hash: c.hash, generation: this.generation };
      }
      const table = buildRoutingTable(c);
      this.generation++;
      // one assignment: transactions that start from now on see the new table, the ones in flight
      // keep the snapshot they captured at MAIL FROM
      this.snapshot = { table, hash: c.hash, generation: this.generation };
      this.loadedAt = new Date().toISOString();
      this.metrics.setConfig(c.hash, this.generation);
      this.logger.info('config applied', {
        source,
        hash: c.hash,
        generation: this.generation,
        tenants: c.tenants.length,
      });
      return { ok: true, hash: c.hash, generation: this.generation };
    } catch (err) {
      this.refuse(err as Error, source);
      return { ok: false, error: (err as Error).message };
    }
  }

  refuse(err: Error, source: string): void {
    this.metrics.configRefused();
    const msg = this.snapshot ? 'config refused, keeping the last good one' : 'config refused, no config yet';
    this.logger.error(msg, { source, error: err.message, activeHash: this.snapshot?.hash ?? null });
  }

  info(): { hash: string | null; generation: number; loadedAt: string | null } {
    return { hash: this.snapshot?.hash ?? null, generation: this.generation, loadedAt: this.loadedAt };
  }
}
