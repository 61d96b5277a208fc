import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Backoff, backoffDelay, WATCH_RETRY } from '../../platform/backoff.ts';
import { WorkQueue } from './workqueue.ts';

describe('backoff', () => {
  it('doubles from the base and caps at the max', () => {
    const p = { baseMs: 1000, maxMs: 30_000 };
    expect([1, 2, 3, 4, 5, 6, 7].map((n) => backoffDelay(n, p))).toEqual([
      1000, 2000, 4000, 8000, 16_000, 30_000, 30_000,
    ]);
    expect(backoffDelay(0, p)).toBe(0);
    expect(backoffDelay(10_000, p)).toBe(30_000);
    const b = new Backoff(p);
    expect([b.next(), b.next(), b.next()]).toEqual([1000, 2000, 4000]);
    b.reset();
    expect(b.next()).toBe(1000);
  });

  it('jitter draws each delay from [d, d·(1+jitter)], so clients that failed together spread out', () => {
    const p = { baseMs: 1000, maxMs: 8000, jitter: 0.5 };
    expect(backoffDelay(1, p, () => 0)).toBe(1000);
    expect(backoffDelay(1, p, () => 1)).toBe(1500);
    expect(backoffDelay(10, p, () => 0.5)).toBe(10_000);
    const seen = new Set(Array.from({ length: 50 }, () => backoffDelay(3, p)));
    expect(seen.size).toBeGreaterThan(10);
    for (const d of seen) expect(d >= 4000 && d <= 6000).toBe(true);
  });

  it('watch retries wait 1-1.5 s first, then 2-3 s at most (a change must reach relays within seconds)', () => {
    expect(backoffDelay(1, WATCH_RETRY, () => 0)).toBe(1000);
    for (let n = 1; n <= 50; n++) {
      expect(backoffDelay(n, WATCH_RETRY)).toBeLessThanOrEqual(3000);
      expect(backoffDelay(n, WATCH_RETRY)).toBeGreaterThanOrEqual(1000);
    }
    expect(backoffDelay(5, WATCH_RETRY, () => 0)).toBe(2000);
  });
});

describe('WorkQueue', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('deduplicates keys that are queued', async () => {
    const adds: number[] = [];
    const q = new WorkQueue<string>({
      metrics: {
        depth: () => {},
        add: () => adds.push(1),
        retry: () => {},
        queueDuration: () => {},
        workDuration: () => {},
      },
    });
    q.add('a');
    q.add('a');
    q.add('b');
    expect(q.length).toBe(2);
    expect(adds.length).toBe(2);
    expect(await q.get()).toBe('a');
    expect(await q.get()).toBe('b');
  });

  it('never hands a key to two workers; an add while processing requeues it after done()', async () => {
    const q = new WorkQueue<string>();
    q.add('a');
    const k = await q.get();
    q.add('a');
    expect(q.length).toBe(0);
    let second: string | undefined;
    void q.get().then((x) => {
      second = x;
    });
    await Promise.resolve();
    expect(second).toBeUndefined();
    q.done(k as string);
    await Promise.resolve();
    expect(second).toBe('a');
  });

  it('addAfter keeps the earliest deadline: a burst coalesces into one item', async () => {
    const q = new WorkQueue<string>();
    for (let i = 0; i < 1000; i++) {
      q.addAfter('config', 100);
      vi.advanceTimersByTime(0.05);
    }
    expect(q.length).toBe(0);
    vi.advanceTimersByTime(100);
    expect(q.length).toBe(1);
    expect(await q.get()).toBe('config');
  });

  it('addRateLimited backs off per key exponentially until forget()', () => {
    const q = new WorkQueue<string>({ retry: { baseMs: 100, maxMs: 1000 } });
    q.addRateLimited('k');
    vi.advanceTimersByTime(99);
    expect(q.length).toBe(0);
    vi.advanceTimersByTime(1);
    expect(q.length).toBe(1);
    q.addRateLimited('other');
    q.addRateLimited('k'); // already queued: dedupe, but the failure counts
    expect(q.retries('k')).toBe(2);
    q.forget('k');
    expect(q.retries('k')).toBe(0);
    expect(q.retries('other')).toBe(1);
  });

  it('shutDown releases waiting workers with undefined', async () => {
    const q = new WorkQueue<string>();
    const waiting = q.get();
    q.shutDown();
    expect(await waiting).toBeUndefined();
    q.add('x');
    expect(await q.get()).toBeUndefined();
  });

  it('reports unfinished work and the longest running item', () => {
    let now = 0;
    const q = new WorkQueue<string>({ now: () => now });
    q.add('a');
    q.add('b');
    void q.get();
    now = 2000;
    void q.get();
    now = 3000;
    expect(q.inProgress()).toEqual({ unfinishedSeconds: 4, longestSeconds: 3, count: 2 });
  });
});
