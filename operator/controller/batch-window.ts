// When a change's reconcile is queued. Waiting a fixed window after every change made each isolated
// edit wait the whole window for nothing (100 ms of a MailRoute change's ~0.4 s path to the relays
// at 100k routes). Instead at most one reconcile STARTS per window: a change after a quiet window is
// queued at once; changes that follow within the window of the last start wait for the rest of it,
// so a burst of applies still compiles about once per window (and a change that arrives during a
// compile runs right after it, as before: the work queue re-queues a key added while it runs).

export class BatchWindow {
  private lastStart = Number.NEGATIVE_INFINITY;
  private readonly windowMs: number;
  private readonly now: () => number;

  constructor(windowMs: number, now: () => number = () => performance.now()) {
    this.windowMs = windowMs;
    this.now = now;
  }

  /** The reconcile starts now. */
  started(): void {
    this.lastStart = this.now();
  }

  /** Milliseconds a change seen now waits before its reconcile is queued (0: at once). */
  delay(): number {
    return Math.max(0, this.lastStart + this.windowMs - this.now());
  }
}
