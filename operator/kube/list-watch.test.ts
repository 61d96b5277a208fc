import { describe, expect, it } from 'vitest';
import { KubeApiError, type WatchEventType } from '../../platform/kube/client.ts';
import { type KubeObject, type ListResult, ListWatch, type Verb } from './list-watch.ts';

interface Obj extends KubeObject {
  v?: string;
  replaces?: string;
}
const obj = (name: string, rv: string, v = rv): Obj => ({
  metadata: { name, namespace: 'ns', resourceVersion: rv },
  v,
});

type Emit = (type: WatchEventType, o: unknown) => void;

/** A scripted API server: each LIST and each watch runs the next step given. */
function rig(script: { lists: Array<() => ListResult<Obj>>; watches: Array<(emit: Emit) => Promise<void>> }) {
  const changes: Array<[Verb, string, string | undefined, string | undefined]> = [];
  const watchedFrom: string[] = [];
  const errors: unknown[] = [];
  let listed = 0;
  let idle: () => void = () => {};
  const lw = new ListWatch<Obj>({
    list: async () => {
      const next = script.lists.shift();
      if (!next) throw new Error('no more LISTs scripted');
      return next();
    },
    watch: async (rv, onEvent) => {
      watchedFrom.push(rv);
      const next = script.watches.shift();
      if (!next) {
        // parked until the test stops the loop
        await new Promise<void>((r) => {
          idle = r;
        });
        return;
      }
      await next(onEvent);
    },
    compact: (o, cached) => ({ ...o, compacted: true, replaces: cached?.v }) as Obj,
    onChange: (verb, o, before) => changes.push([verb, o.metadata?.name ?? '', o.v, before?.v]),
    onListed: () => listed++,
    onError: (e) => errors.push(e),
    quietDelay: () => 5,
  });
  const settle = () => new Promise((r) => setTimeout(r, 50));
  return {
    lw,
    changes,
    watchedFrom,
    errors,
    listed: () => listed,
    settle,
    stop: () => {
      lw.stop();
      idle();
    },
  };
}

describe('ListWatch', () => {
  it('LISTs, then watches from the LIST’s resourceVersion and resumes from the last event or bookmark', async () => {
    const r = rig({
      lists: [() => ({ metadata: { resourceVersion: '10' }, items: [obj('a', '3')] })],
      watches: [
        async (emit) => {
          emit('ADDED', obj('b', '11'));
          emit('MODIFIED', obj('a', '12', 'a2'));
        },
        async (emit) => emit('BOOKMARK', { metadata: { resourceVersion: '20' } }),
        async (emit) => emit('DELETED', obj('b', '21')),
      ],
    });
    r.lw.start();
    await r.settle();
    expect(r.watchedFrom).toEqual(['10', '12', '20', '21']);
    // each change comes with the cached object it replaced or removed
    expect(r.changes).toEqual([
      ['add', 'a', '3', undefined],
      ['add', 'b', '11', undefined],
      ['update', 'a', 'a2', '3'],
      ['delete', 'b', '21', '11'],
    ]);
    expect(r.lw.list().map((o) => o.metadata?.name)).toEqual(['a']);
    // compacted knowing the object it replaces (to share what did not change)
    expect(r.lw.get('a', 'ns')).toMatchObject({ v: 'a2', compacted: true, replaces: '3' });
    expect(r.listed()).toBe(1);
    r.stop();
  });

  it('after 410 Gone (answer or ERROR event) re-LISTs and reports only what differs', async () => {
    const r = rig({
      lists: [
        () => ({ metadata: { resourceVersion: '10' }, items: [obj('a', '1'), obj('b', '2'), obj('c', '3')] }),
        () => ({
          metadata: { resourceVersion: '30' },
          items: [obj('a', '1'), obj('b', '25'), obj('d', '26')],
        }),
        () => ({ metadata: { resourceVersion: '40' }, items: [obj('a', '1')] }),
      ],
      watches: [
        async (emit) => emit('ERROR', { kind: 'Status', code: 410, message: 'too old resource version' }),
        async () => {
          throw new KubeApiError(410, '{"message":"gone"}', 'watch');
        },
      ],
    });
    r.lw.start();
    await r.settle();
    const aBefore = r.lw.get('a', 'ns');
    expect(r.changes.slice(3)).toEqual([
      ['update', 'b', '25', '2'],
      ['add', 'd', '26', undefined],
      ['delete', 'c', '3', '3'],
      ['delete', 'b', '25', '25'],
      ['delete', 'd', '26', '26'],
    ]);
    // an object at the same resourceVersion keeps its cached copy: no event, no new object
    expect(r.lw.get('a', 'ns')).toBe(aBefore);
    expect(r.watchedFrom).toEqual(['10', '30', '40']);
    expect(r.listed()).toBe(3);
    expect(r.errors).toEqual([]);
    r.stop();
  });

  it('stops on another error and resumes from its resourceVersion on start(), without a LIST', async () => {
    const r = rig({
      lists: [() => ({ metadata: { resourceVersion: '10' }, items: [] })],
      watches: [
        async (emit) => {
          emit('ADDED', obj('a', '11'));
          throw new Error('socket hang up');
        },
        async (emit) => emit('ERROR', { kind: 'Status', code: 500, message: 'internal' }),
      ],
    });
    r.lw.start();
    await r.settle();
    expect(r.errors.map((e) => (e as Error).message)).toEqual(['socket hang up']);
    r.lw.start();
    await r.settle();
    expect(r.errors).toHaveLength(2);
    expect(r.errors[1]).toBeInstanceOf(KubeApiError);
    r.lw.start();
    await r.settle();
    expect(r.watchedFrom).toEqual(['10', '11', '11']);
    expect(r.listed()).toBe(1);
    r.stop();
  });

  it('pauses before re-watching when watches end at once without events (no tight loop)', async () => {
    let watches = 0;
    const lw = new ListWatch<Obj>({
      list: async () => ({ metadata: { resourceVersion: '1' }, items: [] }),
      watch: async () => {
        watches++;
      },
      compact: (o) => o,
      onChange: () => {},
      onListed: () => {},
      onError: () => {},
      quietDelay: () => 100,
    });
    lw.start();
    await new Promise((r) => setTimeout(r, 450));
    lw.stop();
    expect(watches).toBeGreaterThanOrEqual(3);
    expect(watches).toBeLessThanOrEqual(6);
  });
});
