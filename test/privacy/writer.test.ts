// The batching trace writer without a database: a store that fails and recovers.
import { describe, expect, it } from 'vitest';
import type { TraceEntry } from '../../relay/trace/entry.ts';
import type { TraceStore } from '../../relay/trace/store.ts';
import { TraceWriter } from '../../relay/trace/writer.ts';

const e = (txid: string) => ({ txid }) as TraceEntry;

function fakeStore(failFirst: number) {
  const written: string[] = [];
  let calls = 0;
  const purges: unknown[] = [];
  const store = {
    kind: 'sqlite',
    insert: async (batch: Array<{ entry: TraceEntry }>) => {
      if (++calls <= failFirst) throw new Error('down');
      written.push(...batch.map((b) => b.entry.txid));
    },
    purge: async (plan: unknown) => {
      purges.push(plan);
      return { entries: 0, captures: 0 };
    },
    close: async () => {},
  } as unknown as TraceStore;
  return { store, written, purges };
}

describe('TraceWriter', () => {
  it('keeps entries while the store fails, then writes them in order, in batches', async () => {
    const f = fakeStore(2);
    const counts = { written: 0, dropped: 0, buffered: 0 };
    const w = new TraceWriter({
      open: async () => f.store,
      batchSize: 3,
      flushIntervalMs: 5,
      retryMs: 1,
      metrics: {
        written: (n) => {
          counts.written += n;
        },
        dropped: (n) => {
          counts.dropped += n;
        },
        buffered: (n) => {
          counts.buffered = n;
        },
      },
    });
    for (let i = 0; i < 7; i++) w.record(e(`t${i}`), 0);
    for (let i = 0; i < 100 && f.written.length < 7; i++) await new Promise((r) => setTimeout(r, 5));
    expect(f.written).toEqual(['t0', 't1', 't2', 't3', 't4', 't5', 't6']);
    expect(counts).toEqual({ written: 7, dropped: 0, buffered: 0 });
    await w.close();
  });

  it('drops beyond maxBuffer and at shutdown, counting both; record never throws', async () => {
    const dropped: Record<string, number> = {};
    const w = new TraceWriter({
      open: () => Promise.reject(new Error('no database')),
      maxBuffer: 3,
      retryMs: 1,
      metrics: {
        written: () => {},
        dropped: (n, r) => {
          dropped[r] = (dropped[r] ?? 0) + n;
        },
        buffered: () => {},
      },
    });
    for (let i = 0; i < 5; i++) w.record(e(`t${i}`), 0);
    expect(w.buffered).toBe(3);
    await w.close(50);
    expect(dropped).toEqual({ buffer_full: 2, shutdown: 3 });
    w.record(e('late'), 0);
    expect(dropped.shutdown).toBe(4);
  });

  it('purges with the plan of the moment', async () => {
    const f = fakeStore(0);
    const w = new TraceWriter({
      open: async () => f.store,
      purge: { intervalMs: 10, plan: () => ({ expiredBeforeMs: 1, tenantCutoffs: [] }) },
    });
    expect(await w.purgeNow()).toEqual({ entries: 0, captures: 0 });
    expect(f.purges).toEqual([{ expiredBeforeMs: 1, tenantCutoffs: [] }]);
    await w.close();
  });
});
