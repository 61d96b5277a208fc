import { describe, expect, it } from 'vitest';
import { decideLease, type LeaseRecord, leaseSpecFor } from './election.ts';

const rec = (holder: string, over: Partial<LeaseRecord> = {}): LeaseRecord => ({
  holder,
  leaseDurationSeconds: 15,
  renewTime: 0,
  acquireTime: 0,
  leaseTransitions: 3,
  resourceVersion: '7',
  ...over,
});

describe('leader election decisions', () => {
  it('creates a missing Lease, renews its own, follows a live holder, acquires an expired or released one', () => {
    expect(decideLease(undefined, 'me', 0, 0)).toBe('create');
    expect(decideLease(rec('me'), 'me', 0, 100_000)).toBe('renew');
    expect(decideLease(rec('other'), 'me', 1000, 15_999)).toBe('follow');
    expect(decideLease(rec('other'), 'me', 1000, 16_000)).toBe('acquire');
    expect(decideLease(rec(''), 'me', 1000, 1001)).toBe('acquire');
  });

  it('a takeover bumps leaseTransitions and sets acquireTime; a renewal keeps both; times are MicroTime', () => {
    const now = new Date('2026-01-01T00:00:00.123Z');
    const take = leaseSpecFor('acquire', rec('other'), 'me', 15, now);
    expect(take).toMatchObject({ holderIdentity: 'me', leaseDurationSeconds: 15, leaseTransitions: 4 });
    expect(JSON.parse(JSON.stringify(take)).renewTime).toBe('2026-01-01T00:00:00.123000Z');
    const renew = leaseSpecFor(
      'renew',
      rec('me', { acquireTime: Date.parse('2025-12-31T00:00:00Z') }),
      'me',
      15,
      now,
    );
    expect(renew.leaseTransitions).toBe(3);
    expect(JSON.parse(JSON.stringify(renew)).acquireTime).toBe('2025-12-31T00:00:00.000000Z');
    expect(leaseSpecFor('create', undefined, 'me', 15, now).leaseTransitions).toBe(0);
  });
});
