import { describe, expect, it } from 'vitest';
import { readRelayFlags } from './relay-flags.ts';

describe('relay flags: --postmaster, --fleet-id, --max-hops', () => {
  it('defaults: no postmaster, no fleet id, 50 hops', () => {
    const f = readRelayFlags({});
    expect(f.postmaster).toBeUndefined();
    expect(f.fleetId).toBeUndefined();
    expect(f.maxHops).toBe(50);
  });

  it('takes valid values', () => {
    const f = readRelayFlags({
      postmaster: 'postmaster@example.com',
      'fleet-id': 'mx.prod-1',
      'max-hops': '30',
    });
    expect(f).toMatchObject({ postmaster: 'postmaster@example.com', fleetId: 'mx.prod-1', maxHops: 30 });
  });

  it('refuses bad values with the flag named', () => {
    expect(() => readRelayFlags({ postmaster: 'postmaster' })).toThrow(
      /--postmaster: "postmaster" is not an address/,
    );
    expect(() => readRelayFlags({ 'fleet-id': 'a b' })).toThrow(/--fleet-id: "a b" must be/);
    expect(() => readRelayFlags({ 'max-hops': '0' })).toThrow(/--max-hops must be a whole number/);
  });
});
