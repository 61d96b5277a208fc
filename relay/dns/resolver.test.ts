// The caching resolve() path against a real DNS server (NSD on loopback, test/support/dns.ts):
// answers as node:dns gives them, truncated answers fetched again over TCP, and the cache's TTLs,
// negative answers and bounds, with queries counted where they are sent.
import { Resolver } from 'node:dns/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type DnsServer, startDnsServer, txt } from '../../test/support/dns.ts';
import { createDnsLookup, type DnsOptions } from './resolver.ts';

let dns: DnsServer;
const LONG = `v=DKIM1; k=rsa; p=${'A'.repeat(1800)}`; // beyond a 1232-byte UDP answer

beforeAll(async () => {
  dns = await startDnsServer({
    zones: [
      {
        zone: 'cache.test',
        ttl: 120, // also the negative TTL (SOA minimum)
        records: [
          txt('@', 'v=spf1 ip4:127.0.0.0/8 -all', 60),
          txt('long', LONG),
          { name: '@', type: 'MX', data: '10 mx.cache.test.' },
          { name: 'mx', type: 'A', data: '127.0.0.9' },
          { name: 'alias', type: 'CNAME', data: 'mx.cache.test.' },
        ],
      },
    ],
  });
}, 30_000);
afterAll(async () => {
  await dns?.stop();
});

function lookup(extra: Partial<DnsOptions> = {}) {
  let now = 0;
  const queries: string[] = [];
  const l = createDnsLookup(
    { servers: [dns.server], timeoutMs: 1000, tries: 1, now: () => now, ...extra },
    (r, t) => queries.push(`${t} ${r}`),
  );
  return { l, queries, advance: (ms: number) => (now += ms) };
}

const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => 'ok',
    (e: NodeJS.ErrnoException) => e.code,
  );

it('answers as node:dns does, for each record type sender authentication asks', async () => {
  const { l } = lookup();
  const plain = new Resolver();
  plain.setServers([dns.server]);
  for (const [name, type] of [
    ['cache.test', 'TXT'],
    ['long.cache.test', 'TXT'],
    ['cache.test', 'MX'],
    ['mx.cache.test', 'A'],
    ['alias.cache.test', 'A'],
  ]) {
    expect(await l.resolve(name, type), `${type} ${name}`).toEqual(await plain.resolve(name, type));
  }
  expect(await codeOf(l.resolve('nothing.cache.test', 'TXT'))).toBe('ENOTFOUND');
  expect(await codeOf(l.resolve('mx.cache.test', 'TXT'))).toBe('ENODATA');
});

it('a truncated UDP answer is fetched again over TCP', async () => {
  const { l } = lookup();
  const [chunks] = (await l.resolve('long.cache.test', 'TXT')) as string[][];
  expect(chunks.join('')).toBe(LONG);
});

it('asks once within the TTL, again after it; callers get copies', async () => {
  const { l, queries, advance } = lookup();
  const first = (await l.resolve('cache.test', 'TXT')) as string[][];
  first[0][0] = 'changed by a caller';
  expect(await l.resolve('CACHE.test.', 'TXT')).toEqual([['v=spf1 ip4:127.0.0.0/8 -all']]);
  expect(queries).toEqual(['TXT ok']);
  advance(59_999);
  await l.resolve('cache.test', 'TXT');
  expect(queries).toHaveLength(1);
  advance(1);
  await l.resolve('cache.test', 'TXT');
  expect(queries).toEqual(['TXT ok', 'TXT ok']);
});

it('concurrent lookups of one name share one query', async () => {
  const { l, queries } = lookup();
  await Promise.all(Array.from({ length: 20 }, () => l.resolve('cache.test', 'MX')));
  expect(queries).toEqual(['MX ok']);
});

it('negative answers are cached for the SOA minimum, bounded by negativeMaxTtlS', async () => {
  const { l, queries, advance } = lookup({ cache: { negativeMaxTtlS: 30 } });
  expect(await codeOf(l.resolve('nothing.cache.test', 'TXT'))).toBe('ENOTFOUND');
  expect(await codeOf(l.resolve('mx.cache.test', 'TXT'))).toBe('ENODATA');
  advance(29_000);
  expect(await codeOf(l.resolve('nothing.cache.test', 'TXT'))).toBe('ENOTFOUND');
  expect(await codeOf(l.resolve('mx.cache.test', 'TXT'))).toBe('ENODATA');
  expect(queries).toEqual(['TXT nxdomain', 'TXT nodata']);
  advance(1000); // 30 s: the bound, although the zone says 120
  expect(await codeOf(l.resolve('nothing.cache.test', 'TXT'))).toBe('ENOTFOUND');
  expect(queries).toHaveLength(3);
});

it('positive answers are capped at maxTtlS, and the cache at maxEntries', async () => {
  const { l, queries, advance } = lookup({ cache: { maxTtlS: 10, maxEntries: 1 } });
  await l.resolve('cache.test', 'TXT');
  advance(10_000);
  await l.resolve('cache.test', 'TXT');
  expect(queries).toHaveLength(2);
  await l.resolve('cache.test', 'MX'); // pushes the TXT answer out
  await l.resolve('cache.test', 'TXT');
  expect(queries).toHaveLength(4);
});

it('a server that does not answer is a timeout, not cached; cache: false asks every time', async () => {
  const silent = createDnsLookup({ servers: ['127.0.0.1:9'], timeoutMs: 100, tries: 1 });
  expect(await codeOf(silent.resolve('cache.test', 'TXT'))).toMatch(/^(ETIMEOUT|ECONNREFUSED)$/);
  const { l, queries } = lookup({ cache: false });
  await l.resolve('cache.test', 'TXT');
  await l.resolve('cache.test', 'TXT');
  expect(queries).toHaveLength(2);
});
