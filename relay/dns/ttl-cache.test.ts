import { expect, it } from 'vitest';
import { TtlCache } from './ttl-cache.ts';

it('keeps an entry for exactly its TTL; a TTL of 0 keeps nothing', () => {
  let now = 1000;
  const c = new TtlCache<string>({ maxEntries: 10, now: () => now });
  c.set('a', 'A', 5000);
  c.set('z', 'Z', 0);
  expect(c.get('z')).toBeUndefined();
  now += 4999;
  expect(c.get('a')).toBe('A');
  now += 1;
  expect(c.get('a')).toBeUndefined();
  expect(c.size).toBe(0);
});

it('drops the oldest entries past maxEntries; a refreshed entry counts as new', () => {
  const c = new TtlCache<number>({ maxEntries: 2, now: () => 0 });
  c.set('1', 1, 1000);
  c.set('2', 2, 1000);
  c.set('1', 11, 1000); // refreshed: '2' is now the oldest
  c.set('3', 3, 1000);
  expect(c.size).toBe(2);
  expect(c.get('2')).toBeUndefined();
  expect(c.get('1')).toBe(11);
  expect(c.get('3')).toBe(3);
});

it('bounds the bytes: the oldest go until the sum fits, an entry larger than the bound is not kept', () => {
  const c = new TtlCache<string>({ maxEntries: 100, maxBytes: 100, now: () => 0 });
  c.set('a', 'x', 1000, 40);
  c.set('b', 'x', 1000, 40);
  expect(c.byteSize).toBe(80);
  c.set('c', 'x', 1000, 40);
  expect(c.get('a')).toBeUndefined();
  expect(c.byteSize).toBe(80);
  c.set('huge', 'x', 1000, 101);
  expect(c.get('huge')).toBeUndefined();
  expect([c.get('b'), c.get('c')]).toEqual(['x', 'x']);
  c.set('b', 'y', 1000, 10); // replacing an entry releases its old size
  expect(c.byteSize).toBe(50);
});
