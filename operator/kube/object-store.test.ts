import { describe, expect, it } from 'vitest';
import { ObjectStore } from './object-store.ts';

const obj = (namespace: string | undefined, name: string, v = 1) => ({ metadata: { namespace, name }, v });

describe('ObjectStore', () => {
  it('keeps one object per namespace and name: set replaces, delete removes, size counts', () => {
    const s = new ObjectStore<ReturnType<typeof obj>>();
    s.set(obj('a', 'x'));
    s.set(obj('a', 'y'));
    s.set(obj('b', 'x'));
    s.set(obj(undefined, 'c'));
    expect(s.size).toBe(4);
    s.set(obj('a', 'x', 2));
    expect(s.size).toBe(4);
    expect(s.get('a', 'x')?.v).toBe(2);
    expect(s.get('b', 'x')?.v).toBe(1);
    // a cluster-scoped object: no namespace, as the empty one
    expect(s.get(undefined, 'c')).toBeDefined();
    expect(s.get('', 'c')).toBe(s.get(undefined, 'c'));
    expect(s.get('a', 'nope')).toBeUndefined();
    expect(s.get('nope', 'x')).toBeUndefined();
    s.delete('a', 'x');
    s.delete('a', 'x');
    s.delete('nope', 'x');
    expect(s.size).toBe(3);
    expect(s.get('a', 'x')).toBeUndefined();
    expect(
      s
        .list()
        .map((o) => `${o.metadata.namespace}/${o.metadata.name}`)
        .sort(),
    ).toEqual(['a/y', 'b/x', 'undefined/c']);
    s.delete('a', 'y');
    s.delete('b', 'x');
    s.delete(undefined, 'c');
    expect(s.size).toBe(0);
    expect(s.list()).toEqual([]);
  });
});
