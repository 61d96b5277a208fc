import { describe, expect, it } from 'vitest';
import { addressLiteral, HEADER_SCAN_LIMIT, HopCounter, receivedHeader, rfc5322Date } from './received.ts';

describe('receivedHeader', () => {
  const date = new Date(Date.UTC(2026, 11, 3, 7, 5, 9));

  it('lays the fields out as Postfix does', () => {
    const h = receivedHeader({
      helo: 'mail.sender.example',
      clientIp: '192.0.2.7',
      by: 'mx.example.com',
      protocol: 'ESMTPS',
      tls: { version: 'TLSv1.2', cipher: 'ECDHE-RSA-AES128-GCM-SHA256' },
      id: '0123456789abcdef',
      recipient: 'alice@example.com',
      date,
    }).toString();
    expect(h).toBe(
      'Received: from mail.sender.example (unknown [192.0.2.7])\r\n' +
        '\t(using TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256 (128/128 bits))\r\n' +
        '\tby mx.example.com (Mail-Plus) with ESMTPS id 0123456789abcdef\r\n' +
        '\tfor <alice@example.com>; Thu, 03 Dec 2026 07:05:09 +0000\r\n',
    );
  });

  it('without HELO shows the address; client text cannot break the header or its comments', () => {
    const h = receivedHeader({
      clientIp: '2001:db8::7',
      by: 'mx.example.com',
      protocol: 'SMTP',
      id: 'x',
      date,
    }).toString();
    expect(h.split('\r\n')[0]).toBe('Received: from [IPv6:2001:db8::7] (unknown [IPv6:2001:db8::7])');
    const evil = receivedHeader({
      helo: 'a)(b;c<d>\\e',
      clientIp: '::ffff:192.0.2.9',
      by: 'mx',
      protocol: 'ESMTP',
      id: 'x',
      date,
    }).toString();
    expect(evil.split('\r\n')[0]).toBe('Received: from a??b?c?d??e (unknown [192.0.2.9])');
    const utf8 = receivedHeader({
      helo: 'bücher.example',
      clientIp: '192.0.2.9',
      by: 'mx',
      protocol: 'ESMTP',
      id: 'x',
      recipient: 'kunde@bücher.example',
      date,
    }).toString();
    expect(utf8).toContain('from b?cher.example ');
    expect(utf8).toContain('for <kunde@bücher.example>;');
    expect(addressLiteral('::ffff:10.0.0.1')).toBe('[10.0.0.1]');
  });

  it('dates are fixed-width RFC 5322', () => {
    expect(rfc5322Date(date)).toBe('Thu, 03 Dec 2026 07:05:09 +0000');
    expect(rfc5322Date(new Date(Date.UTC(2026, 0, 13, 23, 59, 59)))).toHaveLength(31);
  });
});

describe('HopCounter', () => {
  it('counts Received fields in the header section only, across chunk boundaries, any case', () => {
    const msg = Buffer.from(
      'Received: a\r\n\tcontinued\r\nRECEIVED: b\r\nX-Received: no\r\nreceived: c\r\nSubject: s\r\n\r\nReceived: body\r\n',
    );
    for (const size of [1, 2, 5, 9, 10, msg.length]) {
      const h = new HopCounter();
      for (let i = 0; i < msg.length; i += size) h.push(msg.subarray(i, i + size));
      expect(h.count, `chunks of ${size}`).toBe(3);
    }
  });

  it('an empty line with a bare LF also ends the header section', () => {
    const h = new HopCounter();
    h.push(Buffer.from('Received: a\n\nReceived: b\r\n'));
    expect(h.count).toBe(1);
  });

  it('a line that is neither a field nor a continuation ends the header section (Postfix is_header)', () => {
    const msg = Buffer.from(
      'Received: a\r\nReceived : obsolete space\r\nX-Long-Field-Name-Here: x\r\n' +
        'not a header line\r\nReceived: b\r\n',
    );
    for (const size of [1, 3, 7, msg.length]) {
      const h = new HopCounter();
      for (let i = 0; i < msg.length; i += size) h.push(msg.subarray(i, i + size));
      expect(h.count, `chunks of ${size}`).toBe(2);
    }
    const h = new HopCounter();
    h.push(Buffer.from('Received: a\r\nbody: ok\r\n: no name\r\nReceived: b\r\n'));
    expect(h.count).toBe(1);
  });

  it('stops at the header size limit, as Postfix treats the rest as body', () => {
    const h = new HopCounter();
    h.push(Buffer.from('Received: a\r\n'));
    h.push(Buffer.from(`X-Pad: ${'p'.repeat(HEADER_SCAN_LIMIT)}\r\n`));
    h.push(Buffer.from('Received: b\r\n'));
    expect(h.count).toBe(1);
  });
});
