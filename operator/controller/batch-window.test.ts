import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BatchWindow } from './batch-window.ts';
import { WorkQueue } from './workqueue.ts';

describe('BatchWindow with the work queue (as the operator queues its relay-config reconcile)', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  const setup = (windowMs = 100) => {
    const q = new WorkQueue<string>({ now: () => Date.now() });
    const batch = new BatchWindow(windowMs, () => Date.now());
    const kick = () => q.addAfter('config', batch.delay());
    let starts = 0;
    /** A worker: takes the key when queued, marks the start, finishes at once. */
    const work = async () => {
      while (q.length > 0) {
        const k = (await q.get()) as string;
        batch.started();
        starts++;
        q.done(k);
      }
    };
    return { q, kick, work, starts: () => starts };
  };

  it('a change after a quiet window is queued at once, not after the window', async () => {
    const { q, kick, work, starts } = setup(5000);
    kick();
    expect(q.length).toBe(1);
    await work();
    vi.advanceTimersByTime(6000);
    kick();
    expect(q.length).toBe(1);
    await work();
    expect(starts()).toBe(2);
  });

  it('changes within the window of the last start wait for its end, all in one reconcile', async () => {
    const { q, kick, work, starts } = setup(100);
    kick();
    await work();
    for (let i = 0; i < 9; i++) {
      vi.advanceTimersByTime(10);
      kick();
    }
    expect(q.length).toBe(0);
    vi.advanceTimersByTime(9);
    expect(q.length).toBe(0);
    vi.advanceTimersByTime(1);
    expect(q.length).toBe(1);
    await work();
    expect(starts()).toBe(2);
  });

  it('a steady stream of changes starts at most one reconcile per window', async () => {
    const { kick, work, starts } = setup(100);
    for (let ms = 0; ms < 1000; ms++) {
      kick();
      await work();
      vi.advanceTimersByTime(1);
      await work();
    }
    expect(starts()).toBeGreaterThanOrEqual(10);
    expect(starts()).toBeLessThanOrEqual(11);
  });
});
