// DNS blocklists over real SMTP and real DNS: NSD serves the blocklist zones on loopback
// (test/support/dns.ts), a counting UDP forwarder in front of it (test/support/dns-proxy.ts) counts
// the queries, never answers the zone silent.example (a timeout) and answers SERVFAIL for
// servfail.example; NSD refuses unserved.example. Clients connect from distinct
// loopback addresses (127.0.0.2 is listed, 127.0.0.9 is not), as a remote MTA would.
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { TenantDnsbl } from '../../contract/config/types.gen.ts';
import type { DnsblPolicy } from '../../relay/dnsbl/policy.ts';
import type { Relay } from '../../relay/relay.ts';
import { forward, RawClient, relayConfig, tenant } from '../../relay/smtp/testing/harness.ts';
import { dataRaw, envelope, line, relayKit } from '../../relay/smtp/testing/relay-kit.ts';
import { type DnsServer, listing, startDnsServer } from '../support/dns.ts';
import { type DnsProxy, startDnsProxy } from '../support/dns-proxy.ts';

const LISTED = '127.0.0.2'; // zen.example (127.0.0.2) and weak.example
const WEAK_ONLY = '127.0.0.3'; // weak.example only
const OTHER_CODE = '127.0.0.4'; // zen.example with return code 127.0.0.4
const CLEAN = '127.0.0.9';

let dns: DnsServer;
let proxy: DnsProxy;

beforeAll(async () => {
  dns = await startDnsServer({
    zones: [
      {
        zone: 'zen.example',
        records: [
          listing(LISTED, '127.0.0.2'),
          listing(OTHER_CODE, '127.0.0.4'),
          listing('::1', '127.0.0.2'),
        ],
      },
      { zone: 'weak.example', records: [listing(LISTED), listing(WEAK_ONLY)] },
    ],
  });
  proxy = await startDnsProxy({
    upstream: dns.server,
    silent: (name) => name.endsWith('silent.example'),
    servfail: (name) => name.endsWith('servfail.example'),
  });
}, 30_000);
afterAll(async () => {
  await proxy?.close();
  await dns?.stop();
});

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
const { sink, relayWith } = relayKit(cleanups);

/** An SMTP client connecting from a given loopback address; returns it and its greeting line. */
async function connectFrom(port: number, from: string): Promise<{ c: RawClient; greeting: string }> {
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress: from }, () => resolve(s));
    s.once('error', reject);
  });
  const c = new RawClient(socket);
  cleanups.push(() => c.close());
  return { c, greeting: line(await c.read(10_000)) };
}

const DNS = () => ({ servers: [proxy.server], timeoutMs: 300, tries: 1 });

async function metric(relay: Relay, name: string): Promise<string> {
  return relay.metrics.registry.getSingleMetricAsString(name);
}

function policy(p: Partial<DnsblPolicy>): DnsblPolicy {
  return { zones: [{ zone: 'zen.example', weight: 1 }], threshold: 1, allow: [], failClosed: false, ...p };
}

describe('relay-wide DNSBL at connect (--dnsbl-site)', () => {
  it('hit: a listed client is greeted 554 5.7.1 naming the zone and disconnected; a clean one relays', async () => {
    const up = await sink();
    const { relay, port } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('acme/all', ['*@example.com'], [up.port])])]),
      { dns: DNS(), dnsbl: policy({}) },
    );
    const hit = await connectFrom(port, LISTED);
    expect(hit.greeting).toBe(`554 5.7.1 Service unavailable; client [${LISTED}] blocked using zen.example`);
    await hit.c.closed;

    const miss = await connectFrom(port, CLEAN);
    expect(miss.greeting).toMatch(/^220 /);
    expect(line(await miss.c.cmd('EHLO client.test'))).toMatch(/^250/);
    expect(await envelope(miss.c, 'a@sender.test', ['x@example.com'])).toEqual(['250 2.1.5 Accepted']);
    expect(await dataRaw(miss.c, 'Subject: hi\r\n\r\nbody\r\n')).toMatch(/^250 /);
    await up.waitForMessages(1);

    const verdicts = await metric(relay, 'mailplus_relay_dnsbl_verdicts_total');
    expect(verdicts).toContain('scope="relay",tenant="",verdict="reject"} 1');
    expect(verdicts).toContain('scope="relay",tenant="",verdict="pass"} 1');
    const lookups = await metric(relay, 'mailplus_relay_dnsbl_lookups_total');
    expect(lookups).toContain('zone="zen.example",result="listed",source="dns"} 1');
    expect(lookups).toContain('zone="zen.example",result="not_listed",source="dns"} 1');
    expect(verdicts + lookups).not.toMatch(/127\.0\.0\./);
    expect(await metric(relay, 'mailplus_relay_sessions_total')).toContain('mailplus_relay_sessions_total 1');
  });

  it('below threshold: weights are summed; only zones reaching the threshold refuse, naming the heaviest', async () => {
    const { relay, port } = await relayWith(undefined, {
      dns: DNS(),
      dnsbl: policy({
        zones: [
          { zone: 'zen.example', weight: 2 },
          { zone: 'weak.example', weight: 1 },
        ],
        threshold: 3,
      }),
    });
    expect((await connectFrom(port, WEAK_ONLY)).greeting).toMatch(/^220 /);
    expect((await connectFrom(port, OTHER_CODE)).greeting).toMatch(/^220 /); // zen only: 2 < 3
    expect((await connectFrom(port, LISTED)).greeting).toBe(
      `554 5.7.1 Service unavailable; client [${LISTED}] blocked using zen.example`,
    );
    const verdicts = await metric(relay, 'mailplus_relay_dnsbl_verdicts_total');
    expect(verdicts).toContain('verdict="pass"} 2');
    expect(verdicts).toContain('verdict="reject"} 1');
  });

  it('match: only the configured return codes count', async () => {
    const { port } = await relayWith(undefined, {
      dns: DNS(),
      dnsbl: policy({ zones: [{ zone: 'zen.example', weight: 1, match: ['127.0.0.[2..3]'] }] }),
    });
    expect((await connectFrom(port, OTHER_CODE)).greeting).toMatch(/^220 /);
    expect((await connectFrom(port, LISTED)).greeting).toMatch(/^554 5\.7\.1 /);
  });

  it('allow-listed: the client is not looked up at all', async () => {
    const before = proxy.count('zen.example');
    const { relay, port } = await relayWith(undefined, {
      dns: DNS(),
      dnsbl: policy({ allow: ['127.0.0.0/30'] }),
    });
    expect((await connectFrom(port, LISTED)).greeting).toMatch(/^220 /);
    expect(proxy.count('zen.example')).toBe(before);
    expect(await metric(relay, 'mailplus_relay_dnsbl_verdicts_total')).toContain('verdict="allowlisted"} 1');
  });

  it('timeout: fails open by default (220, counted), fails closed with 421 4.7.1 when asked', async () => {
    const silent = [
      { zone: 'silent.example', weight: 1 },
      { zone: 'zen.example', weight: 1 },
    ];
    const open = await relayWith(undefined, { dns: DNS(), dnsbl: policy({ zones: silent }) });
    expect((await connectFrom(open.port, CLEAN)).greeting).toMatch(/^220 /);
    expect(await metric(open.relay, 'mailplus_relay_dnsbl_verdicts_total')).toContain(
      'verdict="failed_open"} 1',
    );
    expect(await metric(open.relay, 'mailplus_relay_dns_queries_total')).toContain(
      'type="A",result="timeout"} 1',
    );
    expect(await metric(open.relay, 'mailplus_relay_dnsbl_lookups_total')).toContain(
      'zone="silent.example",result="error",source="dns"} 1',
    );
    // a listing that reaches the threshold decides even when another zone fails
    expect((await connectFrom(open.port, LISTED)).greeting).toMatch(
      /^554 5\.7\.1 .* blocked using zen\.example$/,
    );

    const closed = await relayWith(undefined, {
      dns: DNS(),
      dnsbl: policy({ zones: silent, failClosed: true }),
    });
    const c = await connectFrom(closed.port, CLEAN);
    expect(c.greeting).toBe(
      `421 4.7.1 Service unavailable; client [${CLEAN}] DNS blocklist lookup failed, try again later`,
    );
    await c.c.closed;
    expect(await metric(closed.relay, 'mailplus_relay_dnsbl_verdicts_total')).toContain(
      'verdict="tempfail"} 1',
    );
  });

  it('IPv6 clients are looked up by reversed nibbles', async () => {
    const { port } = await relayWith(undefined, {
      dns: DNS(),
      dnsbl: policy({}),
      listen: { host: '::1', port: 0 },
    });
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ port, host: '::1' }, () => resolve(s));
      s.once('error', reject);
    });
    const c = new RawClient(socket);
    cleanups.push(() => c.close());
    expect(line(await c.read())).toBe(
      '554 5.7.1 Service unavailable; client [::1] blocked using zen.example',
    );
    expect(proxy.queries).toContain(`1.${'0.'.repeat(31)}zen.example`);
  });

  it('a server that refuses the query (NSD does not serve the zone) fails like a timeout, and is not cached', async () => {
    const unserved = [{ zone: 'unserved.example', weight: 1 }];
    const { relay, port } = await relayWith(undefined, {
      dns: DNS(),
      dnsbl: policy({ zones: unserved, failClosed: true }),
    });
    for (let i = 0; i < 2; i++) {
      expect((await connectFrom(port, CLEAN)).greeting).toMatch(/^421 4\.7\.1 /);
    }
    const queries = await metric(relay, 'mailplus_relay_dns_queries_total');
    expect(queries).toContain('type="A",result="refused"} 2');
    expect(await metric(relay, 'mailplus_relay_dnsbl_verdicts_total')).toContain('verdict="tempfail"} 2');
  });

  it('SERVFAIL fails open by default: the client is let in and the failure counted', async () => {
    const { relay, port } = await relayWith(undefined, {
      dns: DNS(),
      dnsbl: policy({ zones: [{ zone: 'servfail.example', weight: 1 }] }),
    });
    expect((await connectFrom(port, LISTED)).greeting).toMatch(/^220 /);
    expect(await metric(relay, 'mailplus_relay_dns_queries_total')).toContain(
      'type="A",result="servfail"} 1',
    );
    expect(await metric(relay, 'mailplus_relay_dnsbl_verdicts_total')).toContain('verdict="failed_open"} 1');
  });

  it('TTL cache: a second session within the TTL asks no DNS server again', async () => {
    const { relay, port } = await relayWith(undefined, { dns: DNS(), dnsbl: policy({}) });
    const name = '9.0.0.127.zen.example';
    const before = proxy.queries.filter((q) => q === name).length;
    expect((await connectFrom(port, CLEAN)).greeting).toMatch(/^220 /);
    expect((await connectFrom(port, CLEAN)).greeting).toMatch(/^220 /);
    expect((await connectFrom(port, LISTED)).greeting).toMatch(/^554 /);
    expect((await connectFrom(port, LISTED)).greeting).toMatch(/^554 /);
    expect(proxy.queries.filter((q) => q === name).length - before).toBe(1);
    const lookups = await metric(relay, 'mailplus_relay_dnsbl_lookups_total');
    expect(lookups).toContain('zone="zen.example",result="not_listed",source="cache"} 1');
    expect(lookups).toContain('zone="zen.example",result="listed",source="cache"} 1');
  });
});

describe('tenant DNSBL at RCPT (TenantPolicy spec.dnsbl)', () => {
  const tenantDnsbl = (p: Partial<TenantDnsbl>): TenantDnsbl => ({
    zones: [{ zone: 'zen.example', weight: 1 }],
    threshold: 1,
    allow: [],
    failClosed: false,
    ...p,
  });

  async function twoTenants(dnsbl: TenantDnsbl) {
    const up = await sink();
    const started = await relayWith(
      relayConfig([
        tenant('acme', ['acme.test'], [forward('acme/all', ['*@acme.test'], [up.port])], { dnsbl }),
        tenant('open', ['open.test'], [forward('open/all', ['*@open.test'], [up.port])]),
      ]),
      { dns: DNS() },
    );
    return { ...started, up };
  }

  it('hit: 550 5.7.1 for the tenant that checks, the other tenant still accepts', async () => {
    const { relay, port, up } = await twoTenants(tenantDnsbl({}));
    const { c, greeting } = await connectFrom(port, LISTED);
    expect(greeting).toMatch(/^220 /);
    await c.cmd('EHLO client.test');
    expect(await envelope(c, 'a@sender.test', ['x@acme.test', 'y@acme.test'])).toEqual([
      `550 5.7.1 Service unavailable; client [${LISTED}] blocked using zen.example`,
      `550 5.7.1 Service unavailable; client [${LISTED}] blocked using zen.example`,
    ]);
    expect(line(await c.cmd('RCPT TO:<z@open.test>'))).toBe('250 2.1.5 Accepted');
    expect(await dataRaw(c, 'Subject: hi\r\n\r\nbody\r\n')).toMatch(/^250 /);
    const [m] = await up.waitForMessages(1);
    expect(m.rcptTo).toEqual(['z@open.test']);
    const verdicts = await metric(relay, 'mailplus_relay_dnsbl_verdicts_total');
    // decided once per transaction and tenant
    expect(verdicts).toContain('scope="tenant",tenant="acme",verdict="reject"} 1');
    expect(await metric(relay, 'mailplus_relay_recipients_total')).toContain(
      'tenant="acme",route="acme/all",result="rejected",reason="dnsbl_listed"} 2',
    );
  });

  it('miss and allow-listed clients are accepted', async () => {
    const { relay, port } = await twoTenants(tenantDnsbl({ allow: [`${LISTED}/32`] }));
    for (const from of [CLEAN, LISTED]) {
      const { c } = await connectFrom(port, from);
      await c.cmd('EHLO client.test');
      expect(await envelope(c, 'a@sender.test', ['x@acme.test'])).toEqual(['250 2.1.5 Accepted']);
    }
    const verdicts = await metric(relay, 'mailplus_relay_dnsbl_verdicts_total');
    expect(verdicts).toContain('scope="tenant",tenant="acme",verdict="pass"} 1');
    expect(verdicts).toContain('scope="tenant",tenant="acme",verdict="allowlisted"} 1');
  });

  it('below threshold: accepted', async () => {
    const { port } = await twoTenants(
      tenantDnsbl({
        zones: [
          { zone: 'zen.example', weight: 2 },
          { zone: 'weak.example', weight: 1 },
        ],
        threshold: 3,
      }),
    );
    const { c } = await connectFrom(port, WEAK_ONLY);
    await c.cmd('EHLO client.test');
    expect(await envelope(c, 'a@sender.test', ['x@acme.test'])).toEqual(['250 2.1.5 Accepted']);
  });

  it('timeout: fail open accepts, fail closed defers with 451 4.7.1', async () => {
    const zones = [{ zone: 'silent.example', weight: 1 }];
    const open = await twoTenants(tenantDnsbl({ zones }));
    const a = await connectFrom(open.port, CLEAN);
    await a.c.cmd('EHLO client.test');
    expect(await envelope(a.c, 'a@sender.test', ['x@acme.test'])).toEqual(['250 2.1.5 Accepted']);
    expect(await metric(open.relay, 'mailplus_relay_dnsbl_verdicts_total')).toContain(
      'scope="tenant",tenant="acme",verdict="failed_open"} 1',
    );

    const closed = await twoTenants(tenantDnsbl({ zones, failClosed: true }));
    const b = await connectFrom(closed.port, CLEAN);
    await b.c.cmd('EHLO client.test');
    expect(await envelope(b.c, 'a@sender.test', ['x@acme.test'])).toEqual([
      `451 4.7.1 Service unavailable; client [${CLEAN}] DNS blocklist lookup failed, try again later`,
    ]);
    expect(await metric(closed.relay, 'mailplus_relay_recipients_total')).toContain(
      'reason="dnsbl_tempfail"} 1',
    );
  });

  it('TTL cache: the next session does not query again', async () => {
    const { port } = await twoTenants(tenantDnsbl({}));
    const name = '2.0.0.127.zen.example';
    const before = proxy.queries.filter((q) => q === name).length;
    for (let i = 0; i < 2; i++) {
      const { c } = await connectFrom(port, LISTED);
      await c.cmd('EHLO client.test');
      expect(await envelope(c, 'a@sender.test', ['x@acme.test'])).toEqual([
        `550 5.7.1 Service unavailable; client [${LISTED}] blocked using zen.example`,
      ]);
    }
    expect(proxy.queries.filter((q) => q === name).length - before).toBe(1);
  });
});
