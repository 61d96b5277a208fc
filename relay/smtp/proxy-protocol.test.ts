import { describe, expect, it } from 'vitest';
import { parseProxyHeader, V2_MAX_LENGTH, V2_SIGNATURE } from './proxy-protocol.ts';

function v2(verCmd: number, fam: number, addr: Buffer, tlv = Buffer.alloc(0)): Buffer {
  const len = Buffer.alloc(2);
  len.writeUInt16BE(addr.length + tlv.length);
  return Buffer.concat([V2_SIGNATURE, Buffer.from([verCmd, fam]), len, addr, tlv]);
}

function tcp4(src: number[], dst: number[], sport: number, dport: number): Buffer {
  const b = Buffer.alloc(12);
  b.set(src, 0);
  b.set(dst, 4);
  b.writeUInt16BE(sport, 8);
  b.writeUInt16BE(dport, 10);
  return b;
}

describe('PROXY protocol v1', () => {
  it('parses TCP4 and reports the header length', () => {
    const buf = Buffer.from('PROXY TCP4 203.0.113.7 10.0.0.1 51000 25\r\nEHLO x\r\n');
    const r = parseProxyHeader(buf);
    expect(r).toEqual({
      status: 'ok',
      length: 42,
      header: {
        version: 1,
        command: 'PROXY',
        family: 'TCP4',
        sourceAddress: '203.0.113.7',
        destinationAddress: '10.0.0.1',
        sourcePort: 51000,
        destinationPort: 25,
      },
    });
    expect(buf.subarray(42).toString()).toBe('EHLO x\r\n');
  });

  it('parses TCP6 and UNKNOWN', () => {
    const r = parseProxyHeader(Buffer.from('PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n'));
    expect(r.status === 'ok' && r.header.sourceAddress).toBe('2001:db8::1');
    const u = parseProxyHeader(Buffer.from('PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n'));
    expect(u.status === 'ok' && u.header.family).toBe('UNKNOWN');
    expect(parseProxyHeader(Buffer.from('PROXY UNKNOWN\r\n')).status).toBe('ok');
  });

  it('waits for more bytes on a truncated header', () => {
    expect(parseProxyHeader(Buffer.from('PRO')).status).toBe('incomplete');
    expect(parseProxyHeader(Buffer.from('PROXY TCP4 1.2.3.4')).status).toBe('incomplete');
  });

  it('refuses garbage, bad fields, missing CR and over-long lines', () => {
    for (const s of [
      'EHLO foo\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n',
      'PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n',
      'PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n',
      'PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n',
      `PROXY TCP4 ${'1'.repeat(120)}`,
      `PROXY UNKNOWN ${'x'.repeat(100)}\r\n`,
    ]) {
      expect(parseProxyHeader(Buffer.from(s)).status, s).toBe('error');
    }
  });
});

describe('PROXY protocol v2', () => {
  it('parses TCP4 with TLVs and leaves the rest', () => {
    const hdr = v2(
      0x21,
      0x11,
      tcp4([198, 51, 100, 9], [10, 0, 0, 5], 40000, 25),
      Buffer.from([0x04, 0, 1, 0x41]),
    );
    const r = parseProxyHeader(Buffer.concat([hdr, Buffer.from('EHLO')]));
    expect(r).toMatchObject({
      status: 'ok',
      length: hdr.length,
      header: {
        version: 2,
        command: 'PROXY',
        family: 'TCP4',
        sourceAddress: '198.51.100.9',
        sourcePort: 40000,
      },
    });
  });

  it('parses TCP6', () => {
    const a = Buffer.alloc(36);
    a.writeUInt16BE(0x2001, 0);
    a.writeUInt16BE(0x0db8, 2);
    a.writeUInt16BE(0x7, 14);
    a.writeUInt16BE(0xfe80, 16);
    a.writeUInt16BE(1234, 32);
    a.writeUInt16BE(25, 34);
    const r = parseProxyHeader(v2(0x21, 0x21, a));
    expect(r).toMatchObject({
      status: 'ok',
      header: { family: 'TCP6', sourceAddress: '2001:db8:0:0:0:0:0:7', sourcePort: 1234 },
    });
  });

  it('LOCAL and UNSPEC carry no addresses', () => {
    expect(parseProxyHeader(v2(0x20, 0x00, Buffer.alloc(0)))).toMatchObject({
      status: 'ok',
      header: { command: 'LOCAL' },
      length: 16,
    });
    expect(parseProxyHeader(v2(0x21, 0x00, Buffer.alloc(0)))).toMatchObject({
      status: 'ok',
      header: { family: 'UNKNOWN' },
    });
  });

  it('waits on truncation, refuses bad version/command/short blocks/oversize', () => {
    const full = v2(0x21, 0x11, tcp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2));
    for (let i = 1; i < full.length; i++)
      expect(parseProxyHeader(full.subarray(0, i)).status).toBe('incomplete');
    expect(parseProxyHeader(v2(0x11, 0x11, tcp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2))).status).toBe('error');
    expect(parseProxyHeader(v2(0x22, 0x11, tcp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2))).status).toBe('error');
    expect(parseProxyHeader(v2(0x21, 0x11, Buffer.alloc(4))).status).toBe('error');
    expect(parseProxyHeader(v2(0x21, 0x21, Buffer.alloc(12))).status).toBe('error');
    const big = Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x11, 0xff, 0xff])]);
    expect(parseProxyHeader(big)).toEqual({
      status: 'error',
      reason: `v2 header longer than ${V2_MAX_LENGTH} bytes`,
    });
    const sigBroken = Buffer.from(full);
    sigBroken[5] = 0x00;
    expect(parseProxyHeader(sigBroken).status).toBe('error');
  });
});
