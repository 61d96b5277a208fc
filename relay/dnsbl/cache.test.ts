import { expect, it } from 'vitest';
import { AnswerCache } from './cache.ts';

it('keeps answers for their TTL clamped to [min, max] and drops the oldest past the bound', () => {
  let now = 0;
  const c = new AnswerCache({ maxEntries: 2, minTtlS: 60, maxTtlS: 3600, now: () => now });
  c.set('a', ['127.0.0.2'], 10); // clamped up to 60 s
  c.set('b', [], undefined); // negative answers: min TTL
  now = 59_000;
  expect(c.get('a')).toEqual(['127.0.0.2']);
  expect(c.get('b')).toEqual([]);
  now = 60_000;
  expect(c.get('a')).toBeUndefined();
  c.set('x', ['127.0.0.2'], 999_999); // clamped down to an hour
  now += 3_599_000;
  expect(c.get('x')).toEqual(['127.0.0.2']);
  now += 1000;
  expect(c.get('x')).toBeUndefined();
  c.set('1', [], 100);
  c.set('2', [], 100);
  c.set('3', [], 100);
  expect(c.size).toBe(2);
  expect(c.get('1')).toBeUndefined();
});
