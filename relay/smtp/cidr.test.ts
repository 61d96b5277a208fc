import { describe, expect, it } from 'vitest';
import { cidrMatcher } from './cidr.ts';

describe('cidr', () => {
  it('matches IPv4, IPv6 and IPv4-mapped IPv6 both ways', () => {
    const m = cidrMatcher(['10.0.0.0/8', '2001:db8::/32', '::ffff:192.168.0.0/112']);
    expect(m('10.1.2.3')).toBe(true);
    expect(m('::ffff:10.1.2.3')).toBe(true);
    expect(m('11.0.0.1')).toBe(false);
    expect(m('2001:db8:1::5')).toBe(true);
    expect(m('2001:db9::5')).toBe(false);
    expect(m('192.168.3.4')).toBe(true);
    expect(m('fe80::1%eth0')).toBe(false);
    expect(m(undefined)).toBe(false);
    expect(m('garbage')).toBe(false);
  });

  it('bare addresses are host routes, /0 matches its family only', () => {
    expect(cidrMatcher(['127.0.0.1'])('127.0.0.1')).toBe(true);
    expect(cidrMatcher(['127.0.0.1'])('127.0.0.2')).toBe(false);
    expect(cidrMatcher(['0.0.0.0/0'])('8.8.8.8')).toBe(true);
    expect(cidrMatcher(['0.0.0.0/0'])('::1')).toBe(false);
    expect(cidrMatcher(['::/0'])('::1')).toBe(true);
    expect(cidrMatcher(['10.0.0.0/9'])('10.127.255.255')).toBe(true);
    expect(cidrMatcher(['10.0.0.0/9'])('10.128.0.0')).toBe(false);
  });

  it('refuses bad CIDRs naming the value', () => {
    expect(() => cidrMatcher(['10.0.0.0/33'])).toThrow(/10\.0\.0\.0\/33/);
    expect(() => cidrMatcher(['nope/8'])).toThrow(/not an IPv4 or IPv6 address/);
    expect(() => cidrMatcher(['10.0.0.0/x'])).toThrow(/prefix/);
  });
});
