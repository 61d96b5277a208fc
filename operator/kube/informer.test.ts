import { describe, expect, it } from 'vitest';
import { listPaginated } from './informer.ts';

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
