// Runs reconcile workers over a work queue, reporting controller-runtime's metrics. A reconcile
// returns nothing (success), {requeueAfter} or throws (error → per-key backoff retry).
import type { Logger } from '../../platform/log.ts';
import type { OperatorMetrics } from '../metrics.ts';
import { WorkQueue } from './workqueue.ts';

export type ReconcileResult = undefined | { requeueAfterMs: number };

export interface ControllerOptions {
  name: string;
  workers: number;
  reconcile(key: string): Promise<ReconcileResult>;
  metrics: OperatorMetrics;
  logger: Logger;
  retry?: { baseMs: number; maxMs: number };
  /** The queue ran empty (nothing queued, nothing in progress) after `reconciled` reconciles. */
  onDrained?(reconciled: number): void;
}

export interface Controller {
  readonly name: string;
  readonly queue: WorkQueue<string>;
  /** Resolves when every worker has returned (after stop()). */
  stop(): Promise<void>;
}

export function startController(opts: ControllerOptions): Controller {
  const { name, metrics } = opts;
  const queue = new WorkQueue<string>({ retry: opts.retry, metrics: metrics.workQueueMetrics(name) });
  metrics.trackInProgress(name, () => queue.inProgress());
  metrics.maxConcurrentReconciles.set({ controller: name }, opts.workers);
  metrics.activeWorkers.set({ controller: name }, 0);
  for (const result of ['success', 'error', 'requeue', 'requeue_after'])
    metrics.reconcileTotal.inc({ controller: name, result }, 0);
  metrics.reconcileErrorsTotal.inc({ controller: name }, 0);

  let reconciled = 0;
  const worker = async () => {
    for (;;) {
      const key = await queue.get();
      if (key === undefined) return;
      metrics.activeWorkers.inc({ controller: name });
      const end = metrics.reconcileTime.startTimer({ controller: name });
      try {
        const r = await opts.reconcile(key);
        if (r && r.requeueAfterMs > 0) {
          queue.forget(key);
          queue.addAfter(key, r.requeueAfterMs);
          metrics.reconcileTotal.inc({ controller: name, result: 'requeue_after' });
        } else {
          queue.forget(key);
          metrics.reconcileTotal.inc({ controller: name, result: 'success' });
        }
      } catch (err) {
        metrics.reconcileTotal.inc({ controller: name, result: 'error' });
        metrics.reconcileErrorsTotal.inc({ controller: name });
        if (!queue.shutdown) {
          opts.logger.warn('reconcile failed, retrying with backoff', {
            controller: name,
            key,
            retries: queue.retries(key) + 1,
            error: (err as Error).message,
          });
          queue.addRateLimited(key);
        }
      } finally {
        end();
        metrics.activeWorkers.dec({ controller: name });
        queue.done(key);
        reconciled++;
        if (queue.length === 0 && queue.working === 0 && !queue.shutdown) {
          const n = reconciled;
          reconciled = 0;
          opts.onDrained?.(n);
        }
      }
    }
  };
  const workers = Array.from({ length: Math.max(1, opts.workers) }, () => worker());
  return {
    name,
    queue,
    async stop() {
      queue.shutDown();
      await Promise.all(workers);
    },
  };
}
