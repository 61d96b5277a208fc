import { describe, expect, it } from 'vitest';
import { matchPatternError } from '../../contract/grammar/dnsbl.ts';
import {
  codeMatches,
  type DnsblPolicy,
  decideDnsbl,
  dnsblQueryName,
  parseDnsblSite,
  type ZoneAnswer,
} from './policy.ts';

describe('dnsblQueryName (RFC 5782)', () => {
  it('reverses IPv4 octets, IPv4-mapped IPv6 included', () => {
    expect(dnsblQueryName('192.0.2.99', 'bl.example')).toBe('99.2.0.192.bl.example');
    expect(dnsblQueryName('::ffff:192.0.2.99', 'bl.example')).toBe('99.2.0.192.bl.example');
  });
  it('reverses IPv6 nibbles of the fully expanded address', () => {
    expect(dnsblQueryName('2001:db8:1:2:3:4:567:89ab', 'bl.example')).toBe(
      'b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.example',
    );
    expect(dnsblQueryName('2001:db8::1', 'bl.example')).toBe(
      `1.${'0.'.repeat(23)}8.b.d.0.1.0.0.2.bl.example`,
    );
    expect(dnsblQueryName('::1', 'z')).toBe(`1.${'0.'.repeat(31)}z`);
  });
});

describe('return-code patterns (postscreen =filter)', () => {
  it('matches exact, ranges and lists; without patterns any 127/8 answer', () => {
    expect(codeMatches('127.0.0.4', ['127.0.0.[2..11]'])).toBe(true);
    expect(codeMatches('127.0.0.12', ['127.0.0.[2..11]'])).toBe(false);
    expect(codeMatches('127.0.0.4', ['127.0.0.[2;4]'])).toBe(true);
    expect(codeMatches('127.0.0.3', ['127.0.0.[2;4]', '127.0.0.3'])).toBe(true);
    expect(codeMatches('127.0.1.2', undefined)).toBe(true);
    expect(codeMatches('10.0.0.2', undefined)).toBe(false);
  });
  it('refuses malformed patterns with the reason', () => {
    expect(matchPatternError('127.0.0.[2..11]')).toBeUndefined();
    expect(matchPatternError('127.0.0')).toMatch(/not a return-code pattern/);
    expect(matchPatternError('127.0.0.256')).toMatch(/256 is not an octet/);
  });
  it('parses postscreen_dnsbl_sites syntax', () => {
    expect(parseDnsblSite('zen.example')).toEqual({ zone: 'zen.example', weight: 1 });
    expect(parseDnsblSite('b.example=127.0.0.[2..11],127.0.1.2*3')).toEqual({
      zone: 'b.example',
      weight: 3,
      match: ['127.0.0.[2..11]', '127.0.1.2'],
    });
    expect(parseDnsblSite('wl.example*-2')).toEqual({ zone: 'wl.example', weight: -2 });
    expect(() => parseDnsblSite('bad zone')).toThrow(/not a DNSBL site/);
    expect(() => parseDnsblSite('zen.example=1.2.3')).toThrow(/not a return-code pattern/);
  });
});

describe('decideDnsbl', () => {
  const policy: DnsblPolicy = {
    zones: [
      { zone: 'a', weight: 2 },
      { zone: 'b', weight: 1 },
      { zone: 'wl', weight: -2 },
    ],
    threshold: 2,
    allow: [],
    failClosed: false,
  };
  const answers = (o: Record<string, ZoneAnswer>) => new Map(Object.entries(o));
  const listed = { listed: ['127.0.0.2'] };
  const clean = { listed: [] };
  it('sums weights, names the heaviest listing, lets an allow-list zone offset', () => {
    expect(decideDnsbl(policy, answers({ a: listed, b: listed, wl: clean }))).toMatchObject({
      verdict: 'reject',
      score: 3,
      zone: 'a',
    });
    expect(decideDnsbl(policy, answers({ a: clean, b: listed, wl: clean }))).toMatchObject({
      verdict: 'pass',
      score: 1,
    });
    expect(decideDnsbl(policy, answers({ a: listed, b: listed, wl: listed }))).toMatchObject({
      verdict: 'pass',
      score: 1,
    });
  });
  it('a failed zone matters only when it could reach the threshold', () => {
    expect(decideDnsbl(policy, answers({ a: { error: 'timeout' }, b: clean, wl: clean })).verdict).toBe(
      'failed_open',
    );
    expect(
      decideDnsbl({ ...policy, failClosed: true }, answers({ a: { error: 'timeout' }, b: clean, wl: clean }))
        .verdict,
    ).toBe('tempfail');
    expect(
      decideDnsbl(
        { ...policy, threshold: 4, failClosed: true },
        answers({ a: clean, b: { error: 'x' }, wl: clean }),
      ).verdict,
    ).toBe('pass');
  });
});
