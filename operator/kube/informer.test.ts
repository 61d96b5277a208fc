import { describe, expect, it } from 'vitest';
import type { KubeClient } from '../../platform/kube/client.ts';
import { createLogger } from '../../platform/log.ts';
import { OperatorMetrics } from '../metrics.ts';
import { listPaginated, ResilientInformer } from './informer.ts';
import type { KubeObject } from './list-watch.ts';

describe('listPaginated', () => {
  it('follows continue tokens and keeps the first page’s resourceVersion (the snapshot the pages belong to)', async () => {
    const all = Array.from({ length: 7 }, (_, i) => ({ metadata: { name: `o${i}` } }));
    const asked: Array<{ limit: number; continue?: string }> = [];
    const list = await listPaginated<{ metadata: { name: string } }>(async (opts) => {
      asked.push(opts);
      const start = opts.continue ? Number(opts.continue) : 0;
      const end = Math.min(all.length, start + opts.limit);
      return {
        apiVersion: 'v1',
        kind: 'List',
        metadata: {
          resourceVersion: start === 0 ? '42' : '99',
          continue: end < all.length ? String(end) : '',
        },
        items: all.slice(start, end),
      };
    }, 3);
    expect(list.items.map((o) => o.metadata.name)).toEqual(all.map((o) => o.metadata.name));
    expect(list.metadata.resourceVersion).toBe('42');
    expect(asked).toEqual([{ limit: 3 }, { limit: 3, continue: '3' }, { limit: 3, continue: '6' }]);
  });

  it('a failing page fails the whole LIST (the informer retries it from the start)', async () => {
    let n = 0;
    await expect(
      listPaginated(async () => {
        if (n++ > 0) throw new Error('410 Gone: continue token expired');
        return { metadata: { resourceVersion: '1', continue: 'x' }, items: [{}] };
      }, 1),
    ).rejects.toThrow(/continue token expired/);
  });

  it('passes every item through `each` page by page, before the next page is asked for', async () => {
    const seen: string[] = [];
    const list = await listPaginated<{ name: string }>(
      async (opts) => {
        seen.push(`page ${opts.continue ?? 0}`);
        const start = opts.continue ? Number(opts.continue) : 0;
        return {
          metadata: { resourceVersion: '1', continue: start + 2 < 4 ? String(start + 2) : '' },
          items: [{ name: `o${start}` }, { name: `o${start + 1}` }],
        };
      },
      2,
      (item) => {
        seen.push(item.name);
        return { name: item.name.toUpperCase() };
      },
    );
    expect(list.items).toEqual([{ name: 'O0' }, { name: 'O1' }, { name: 'O2' }, { name: 'O3' }]);
    expect(seen).toEqual(['page 0', 'o0', 'o1', 'page 2', 'o2', 'o3']);
  });
});

describe('ResilientInformer staleness check', () => {
  it('keeps only the name and resourceVersion of each object its LIST compares (not the objects)', async () => {
    const raw = () => [
      {
        apiVersion: 'mailplus.io/v1alpha1',
        kind: 'MailRoute',
        metadata: { namespace: 'ns', name: 'a', resourceVersion: '7', uid: 'u', managedFields: [{}] },
        spec: { priority: 1, match: { recipients: ['a@example.org'] } },
      },
    ];
    const passed: unknown[][] = [];
    const inf = new ResilientInformer<KubeObject>({
      kind: 'MailRoute',
      client: { watch: () => new Promise<void>(() => {}) } as unknown as KubeClient,
      path: '/apis/mailplus.io/v1alpha1/mailroutes',
      // as listPaginated does: each item through `each` as its page comes
      list: async (each = (o) => o) => {
        const items = raw().map(each);
        passed.push(items);
        return { metadata: { resourceVersion: '9' }, items };
      },
      metrics: new OperatorMetrics(),
      logger: createLogger(() => {}),
      onChange: () => {},
      staleAfterMs: 0,
      staleGraceMs: 0,
    });
    inf.start();
    expect(await inf.waitForSync(5000)).toBe(true);
    await inf.resync();
    await inf.stop();
    expect(passed).toHaveLength(2);
    // the informer's own LIST keeps the object; the staleness check only what it compares
    expect((passed[0][0] as { spec?: unknown }).spec).toBeDefined();
    expect(passed[1]).toEqual([{ metadata: { namespace: 'ns', name: 'a', resourceVersion: '7' } }]);
  });
});
