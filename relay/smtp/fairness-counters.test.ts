// The fairness counters (pure): networks, admission, release. Through a real relay: fairness.test.ts.
import { describe, expect, it } from 'vitest';
import { ConnectionLimiter, clientNetwork, DEFAULT_FAIRNESS, UpstreamShares } from './fairness.ts';

describe('fairness counters (pure)', () => {
  it('networks: /24 for IPv4 and IPv4-mapped, /64 for IPv6', () => {
    expect(clientNetwork('192.0.2.1')).toBe(clientNetwork('192.0.2.254'));
    expect(clientNetwork('192.0.2.1')).not.toBe(clientNetwork('192.0.3.1'));
    expect(clientNetwork('::ffff:192.0.2.7')).toBe(clientNetwork('192.0.2.1'));
    expect(clientNetwork('2001:db8:1:2::1')).toBe(clientNetwork('2001:db8:1:2:ffff::9'));
    expect(clientNetwork('2001:db8:1:3::1')).not.toBe(clientNetwork('2001:db8:1:2::1'));
    expect(clientNetwork('not-an-ip')).toBe('not-an-ip');
  });

  it('defaults are the documented ones (Postfix: 50 connections per client, 1000 recipients, error limits 10/20/1s)', () => {
    expect(DEFAULT_FAIRNESS).toEqual({
      connectionsPerClient: 50,
      connectionsPerNetwork: 200,
      upstreamPerClient: 20,
      upstreamPerTenant: 0,
      upstreamHoldMs: 10_000,
      recipientsPerTransaction: 1000,
      recordedRecipients: 100,
      softErrorLimit: 10,
      hardErrorLimit: 20,
      errorSleepMs: 1000,
    });
  });

  it('counts follow releases; release is idempotent; 0 is no limit', () => {
    const l = new ConnectionLimiter({ connectionsPerClient: 1, connectionsPerNetwork: 0 });
    const a = l.admit('192.0.2.1');
    expect(a.ok).toBe(true);
    expect(l.admit('192.0.2.1')).toEqual({ ok: false, limit: 'connections_per_client' });
    if (a.ok) {
      a.release();
      a.release();
    }
    expect(l.clients).toBe(0);
    expect(l.admit('192.0.2.1').ok).toBe(true);
    const s = new UpstreamShares({ upstreamPerClient: 0, upstreamPerTenant: 1 });
    const t = s.take('192.0.2.1', 'acme');
    expect(s.take('192.0.2.2', 'acme')).toEqual({ ok: false, limit: 'upstream_per_tenant' });
    expect(s.take('192.0.2.2', 'beta').ok).toBe(true);
    if (t.ok) t.release();
    expect(s.heldFor('acme')).toBe(0);
  });
});
