import { describe, expect, it } from 'vitest';
import { DEFAULT_FAIRNESS } from '../relay/smtp/fairness.ts';
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

describe('relay fairness flags', () => {
  it('defaults to DEFAULT_FAIRNESS, no exemptions, an 8 MiB trace buffer', () => {
    const f = readRelayFlags({});
    expect(f.fairness).toEqual(DEFAULT_FAIRNESS);
    expect(f.clientLimitExempt).toEqual([]);
    expect(f.traceBufferBytes).toBe(8 * 1024 * 1024);
  });

  it('reads every limit; 0 switches one off', () => {
    const f = readRelayFlags({
      'max-connections-per-client': '5',
      'max-connections-per-network': '0',
      'max-upstream-per-client': '3',
      'max-upstream-per-tenant': '40',
      'upstream-hold-timeout': '0',
      'max-recipients': '100',
      'max-recorded-recipients': '10',
      'soft-error-limit': '3',
      'hard-error-limit': '6',
      'error-sleep': '500ms',
      'client-limit-exempt': ['10.0.0.0/8', '2001:db8::/32'],
      'trace-buffer-size': '2Mi',
    });
    expect(f.fairness).toEqual({
      connectionsPerClient: 5,
      connectionsPerNetwork: 0,
      upstreamPerClient: 3,
      upstreamPerTenant: 40,
      upstreamHoldMs: 0,
      recipientsPerTransaction: 100,
      recordedRecipients: 10,
      softErrorLimit: 3,
      hardErrorLimit: 6,
      errorSleepMs: 500,
    });
    expect(f.clientLimitExempt).toEqual(['10.0.0.0/8', '2001:db8::/32']);
    expect(f.traceBufferBytes).toBe(2 * 1024 * 1024);
  });

  it('refuses bad values naming the flag', () => {
    expect(() => readRelayFlags({ 'max-connections-per-client': '-1' })).toThrow(
      /--max-connections-per-client: "-1" is not a whole number ≥ 0/,
    );
    expect(() => readRelayFlags({ 'max-upstream-per-client': 'ten' })).toThrow(/--max-upstream-per-client/);
    expect(() => readRelayFlags({ 'upstream-hold-timeout': '10' })).toThrow(
      /--upstream-hold-timeout: "10" is not a duration/,
    );
    expect(() => readRelayFlags({ 'max-recipients': '0' })).toThrow(
      /--max-recipients must be a whole number ≥ 1/,
    );
    expect(() => readRelayFlags({ 'trace-buffer-size': 'lots' })).toThrow(/--trace-buffer-size/);
    expect(() => readRelayFlags({ 'client-limit-exempt': ['10.0.0.0/33'] })).toThrow(
      /--client-limit-exempt: .*10\.0\.0\.0\/33/,
    );
  });
});

describe('relay flags: --dns-server, --dnsbl-*', () => {
  it('defaults: the system resolver, 2 s, 2 tries, no blocklist', () => {
    expect(readRelayFlags({}).dns).toEqual({ servers: [], timeoutMs: 2000, tries: 2 });
    expect(readRelayFlags({}).dnsbl).toBeUndefined();
  });

  it('takes repeated and comma-listed servers, IPv6 in brackets, port 53 by default', () => {
    const f = readRelayFlags({ 'dns-server': ['127.0.0.1:5353,10.0.0.10', '[::1]:53', '2001:db8::1'] });
    expect(f.dns.servers).toEqual(['127.0.0.1:5353', '10.0.0.10:53', '[::1]:53', '[2001:db8::1]:53']);
  });

  it('reads postscreen-style sites, threshold, allow-list and failure mode', () => {
    const f = readRelayFlags({
      'dnsbl-site': ['zen.example*3', 'wl.example*-2'],
      'dnsbl-threshold': '3',
      'dnsbl-allow': ['192.0.2.0/24,2001:db8::/32'],
      'dnsbl-fail': 'closed',
    });
    expect(f.dnsbl).toEqual({
      zones: [
        { zone: 'zen.example', weight: 3 },
        { zone: 'wl.example', weight: -2 },
      ],
      threshold: 3,
      allow: ['192.0.2.0/24', '2001:db8::/32'],
      failClosed: true,
    });
  });

  it('refuses bad values with the flag named', () => {
    expect(() => readRelayFlags({ 'dns-server': 'dns.example:53' })).toThrow(
      /--dns-server: "dns.example:53" is not a DNS server address/,
    );
    expect(() => readRelayFlags({ 'dns-server': '10.0.0.1:99999' })).toThrow(
      /--dns-server: .*port must be 1-65535/,
    );
    expect(() => readRelayFlags({ 'dns-tries': '0' })).toThrow(/--dns-tries must be/);
    expect(() => readRelayFlags({ 'dnsbl-site': 'zen example' })).toThrow(
      /--dnsbl-site: "zen example" is not a DNSBL site/,
    );
    expect(() => readRelayFlags({ 'dnsbl-site': 'wl.example*-1' })).toThrow(
      /at least one zone needs a positive weight/,
    );
    expect(() => readRelayFlags({ 'dnsbl-threshold': '0' })).toThrow(/--dnsbl-threshold must be/);
    expect(() => readRelayFlags({ 'dnsbl-allow': '10.0.0.0/33' })).toThrow(/--dnsbl-allow: .*10.0.0.0\/33/);
    expect(() => readRelayFlags({ 'dnsbl-fail': 'maybe' })).toThrow(
      /--dnsbl-fail: "maybe" must be open or closed/,
    );
  });
});
