// After a burst of status writes (every object's status after a start: 100k of them at 100k
// MailRoutes) V8 keeps the pages the burst's garbage took: its regular collections free them for
// V8's own reuse, but they stay resident (312 MB of RSS where 243 MB was left after this at 100k,
// docs/benchmarks.md). Once enough reconciles were done since the last time and the status queue
// runs empty, one memory-reducing collection (V8's 'last-resort': repeated, compacting, pages given
// back to the system) returns them. It pauses the process for about half a second at 100k objects;
// a small cluster reaches `minReconciles` seldom, and its heap is small.
import { type GcFn, obtainGc } from '../platform/gc.ts';
import type { Logger } from '../platform/log.ts';

export interface MemoryAfterBurstOptions {
  /** Reconciles since the last collection that make one worth it (default 10,000). */
  minReconciles?: number;
  logger: Logger;
  gc?: () => GcFn | undefined;
  rss?: () => number;
}

export class MemoryAfterBurst {
  private since = 0;
  private readonly o: MemoryAfterBurstOptions;

  constructor(o: MemoryAfterBurstOptions) {
    this.o = o;
  }

  /** The queue ran empty after `reconciled` reconciles. */
  drained(reconciled: number): void {
    this.since += reconciled;
    if (this.since < (this.o.minReconciles ?? 10_000)) return;
    const gc = (this.o.gc ?? obtainGc)();
    if (!gc) return;
    const rss = this.o.rss ?? (() => process.memoryUsage.rss());
    const before = rss();
    const t0 = performance.now();
    gc({ type: 'major', flavor: 'last-resort' });
    const MB = 1024 * 1024;
    this.o.logger.info('memory given back after a burst of reconciles', {
      reconciles: this.since,
      ms: Math.round(performance.now() - t0),
      rssBeforeMB: Math.round(before / MB),
      rssAfterMB: Math.round(rss() / MB),
    });
    this.since = 0;
  }
}
