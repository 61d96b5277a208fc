import { describe, expect, it } from 'vitest';
import { RateLimiter } from './rate-limit.ts';

describe('RateLimiter', () => {
  it('allows a burst of `messages`, then refills at messages/perSeconds', () => {
    let now = 0;
    const rl = new RateLimiter({ now: () => now });
    const spec = { messages: 2, perSeconds: 10 };
    expect(rl.take('k', spec)).toBe(true);
    expect(rl.take('k', spec)).toBe(true);
    expect(rl.take('k', spec)).toBe(false);
    expect(rl.take('other', spec)).toBe(true);
    now += 5000;
    expect(rl.take('k', spec)).toBe(true);
    expect(rl.take('k', spec)).toBe(false);
  });

  it('drops idle (full) buckets and bounds the number of keys', () => {
    let now = 0;
    const rl = new RateLimiter({ now: () => now, maxKeys: 3 });
    const spec = { messages: 1, perSeconds: 1 };
    for (let i = 0; i < 10; i++) rl.take(`k${i}`, spec);
    expect(rl.size).toBe(3);
    now += 60_000;
    rl.take('fresh', spec);
    expect(rl.size).toBe(1);
  });
});
