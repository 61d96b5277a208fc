import type { Answer } from 'dns-packet';
import { expect, it } from 'vitest';
import { outcomeOf } from './record-cache.ts';

const soa = (ttl: number, minimum: number): Answer => ({
  type: 'SOA',
  name: 'example.test',
  ttl,
  data: {
    mname: 'ns.example.test',
    rname: 'hostmaster.example.test',
    serial: 1,
    refresh: 3600,
    retry: 600,
    expire: 86400,
    minimum,
  },
});

it('a positive answer lives for the smallest TTL of its records and of the CNAMEs leading to them', () => {
  const o = outcomeOf(
    {
      rcode: 'NOERROR',
      answers: [
        { type: 'CNAME', name: 'a.test', ttl: 30, data: 'b.test' },
        { type: 'TXT', name: 'b.test', ttl: 300, data: [Buffer.from('v=spf1 '), Buffer.from('-all')] },
        { type: 'TXT', name: 'b.test', ttl: 200, data: [Buffer.from('other')] },
      ],
      authorities: [],
    },
    'TXT',
  );
  expect(o).toMatchObject({ records: [['v=spf1 ', '-all'], ['other']], ttlS: 30 });
});

it('MX records have node:dns shape', () => {
  const o = outcomeOf(
    {
      rcode: 'NOERROR',
      answers: [{ type: 'MX', name: 'a.test', ttl: 60, data: { preference: 10, exchange: 'mx.a.test' } }],
      authorities: [],
    },
    'MX',
  );
  expect(o).toMatchObject({ records: [{ exchange: 'mx.a.test', priority: 10, type: 'MX' }], ttlS: 60 });
});

it('NXDOMAIN and NODATA live for min(SOA TTL, SOA MINIMUM) (RFC 2308 §5); without an SOA, not at all', () => {
  expect(outcomeOf({ rcode: 'NXDOMAIN', answers: [], authorities: [soa(600, 120)] }, 'TXT')).toEqual({
    code: 'ENOTFOUND',
    ttlS: 120,
  });
  expect(outcomeOf({ rcode: 'NOERROR', answers: [], authorities: [soa(50, 120)] }, 'TXT')).toEqual({
    code: 'ENODATA',
    ttlS: 50,
  });
  // records of another type only: no data for this one
  const onlyA: Answer = { type: 'A', name: 'a.test', ttl: 60, data: '192.0.2.1' };
  expect(outcomeOf({ rcode: 'NOERROR', answers: [onlyA], authorities: [] }, 'TXT')).toEqual({
    code: 'ENODATA',
    ttlS: 0,
  });
});

it('server failures are failures (never cached), with node:dns error codes', () => {
  expect(outcomeOf({ rcode: 'SERVFAIL', answers: [], authorities: [] }, 'TXT')).toEqual({
    code: 'ESERVFAIL',
    failed: true,
  });
  expect(outcomeOf({ rcode: 'REFUSED', answers: [], authorities: [] }, 'TXT')).toEqual({
    code: 'EREFUSED',
    failed: true,
  });
});
