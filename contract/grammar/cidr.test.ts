import { describe, expect, it } from 'vitest';
import { cidrContains, parseCidr, parseIp } from './cidr.ts';

const c = (s: string) => {
  const r = parseCidr(s);
  if (!r.ok) throw new Error(r.error);
  return r.value;
};
const inside = (cidr: string, ip: string) => {
  const parsed = parseIp(ip);
  return parsed !== undefined && cidrContains(c(cidr), parsed);
};

describe('cidr', () => {
  it.each([
    ['10.0.0.0/8', '10.1.2.3', true],
    ['10.0.0.0/8', '11.0.0.1', false],
    ['192.168.1.0/24', '192.168.1.255', true],
    ['192.168.1.7/32', '192.168.1.7', true],
    ['0.0.0.0/0', '8.8.8.8', true],
    ['10.0.0.0/8', '::ffff:10.2.3.4', true],
    ['10.0.0.0/8', '::FFFF:0a02:0304', true],
    ['10.0.0.0/8', '::ffff:11.2.3.4', false],
    ['2001:db8::/32', '2001:db8:1::5', true],
    ['2001:db8::/32', '2001:db9::5', false],
    ['2001:db8::/32', '10.0.0.1', false],
    ['::/0', '2001:db8::1', true],
    ['::ffff:0:0/96', '1.2.3.4', true],
    ['fe80::/10', 'fe80::1%eth0', true],
    ['::1/128', '::1', true],
    ['10.0.0.0/8', 'not-an-ip', false],
  ])('%s contains %s: %s', (cidr, ip, expected) => {
    expect(inside(cidr, ip)).toBe(expected);
  });

  it.each([
    '10.0.0.0',
    '10.0.0.0/33',
    '2001:db8::/129',
    '300.0.0.0/8',
    '1:2:3:4:5:6:7:8:9/64',
    'a::b::c/64',
    '01.2.3.4/8',
  ])('rejects %s', (s) => {
    expect(parseCidr(s).ok).toBe(false);
  });

  it('parses full and embedded IPv6 forms', () => {
    expect(parseIp('1:2:3:4:5:6:7:8')?.version).toBe(6);
    expect(parseIp('64:ff9b::192.0.2.33')?.value).toBe((0x64n << 112n) | (0xff9bn << 96n) | 0xc0000221n);
    expect(parseIp('1:2:3:4:5:6:7')).toBeUndefined();
  });
});
