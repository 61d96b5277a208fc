// biome-ignore-all lint/suspicious/noTemplateCurlyInString: recipient templates use ${…}
import { describe, expect, it } from 'vitest';
import { parseRelayConfig } from '../../contract/config/load.ts';
import { decideRecipient } from '../../relay/routing/decide.ts';
import { buildRoutingTable } from '../../relay/routing/table.ts';
import type { MailRoute, MailRouteSpec, TenantPolicy, TenantPolicySpec } from '../api/types.gen.ts';
import type { Service } from '../resources/types.ts';
import { CompileCache, type CompileInput, compile, renderRelayConfig, sourcesOf } from './compile.ts';

let clock = 0;
const ts = (n: number) => new Date(Date.UTC(2024, 0, 1) + n * 60_000).toISOString();
const tp = (
  ns: string,
  domains: string[],
  extra: Partial<TenantPolicySpec> = {},
  age?: number,
  name = 'policy',
): TenantPolicy => ({
  apiVersion: 'mailplus.io/v1alpha1',
  kind: 'TenantPolicy',
  metadata: { name, namespace: ns, generation: 1, creationTimestamp: ts(age ?? ++clock) },
  spec: { domains, ...extra },
});
const mr = (
  ns: string,
  name: string,
  spec: Partial<MailRouteSpec> & { recipients?: string[]; senders?: string[] },
  age?: number,
): MailRoute => {
  const { recipients = [`*@${ns}.org`], senders, ...rest } = spec;
  return {
    apiVersion: 'mailplus.io/v1alpha1',
    kind: 'MailRoute',
    metadata: {
      name,
      namespace: ns,
      generation: 2,
      ...(age === undefined ? {} : { creationTimestamp: ts(age) }),
    },
    spec: {
      match: senders ? { recipients, senders } : { recipients },
      forward: { upstreams: [{ host: 'mx.example.net' }] },
      ...rest,
    },
  };
};
const svc = (
  ns: string,
  name: string,
  clusterIP: string,
  ports: Array<{ name?: string; port: number }>,
): Service => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: ns },
  spec: { clusterIP, ports },
});
const run = (input: Partial<CompileInput>) =>
  compile({ tenantPolicies: [], mailRoutes: [], services: [], ...input });
const cond = (r: ReturnType<typeof run>, key: string, type = 'Accepted') => {
  const s = r.statuses.get(key);
  if (!s) throw new Error(`no status for ${key}`);
  const c = s.conditions.find((x) => x.type === type);
  return c ? `${c.status}/${c.reason}` : 'absent';
};

describe('compile: tenants', () => {
  it('normalises and defaults a tenant', () => {
    const r = run({
      tenantPolicies: [
        tp('sales', ['Sales.Example.com', '*.shop.example.com', 'bücher.de'], {
          clientCIDRs: ['10.0.0.0/8', '2001:DB8::/32', '10.0.0.0/8'],
          requireTLS: true,
          limits: { maxMessageSize: '25Mi', maxRecipients: 50, rate: { messages: 100, per: '1m' } },
        }),
      ],
      mailRoutes: [mr('sales', 'all', { recipients: ['*@sales.example.com'] })],
    });
    expect(r.config.tenants).toEqual([
      {
        name: 'sales',
        policy: 'sales/policy',
        domains: ['*.shop.example.com', 'sales.example.com', 'xn--bcher-kva.de'],
        clientCIDRs: ['10.0.0.0/8', '2001:db8::/32'],
        requireTLS: true,
        limits: { maxMessageSize: 26214400, maxRecipients: 50, rate: { messages: 100, perSeconds: 60 } },
        routes: [
          {
            name: 'sales/all',
            priority: 100,
            recipients: ['*@sales.example.com'],
            senders: [],
            action: {
              forward: {
                upstreams: [{ host: 'mx.example.net', port: 25, tls: 'opportunistic', verify: true }],
              },
            },
          },
        ],
      },
    ]);
    expect(r.config.sources).toEqual({ 'MailRoute/sales/all': 2, 'TenantPolicy/sales/policy': 1 });
    expect(cond(r, 'TenantPolicy/sales/policy')).toBe('True/Accepted');
    expect(cond(r, 'TenantPolicy/sales/policy', 'Ready')).toBe('True/Ready');
    expect(cond(r, 'MailRoute/sales/all', 'Ready')).toBe('True/Ready');
    expect(r.statuses.get('MailRoute/sales/all')?.generation).toBe(2);
    // The output passes its own contract.
    expect(parseRelayConfig(renderRelayConfig(r.config), 'test')).toEqual(r.config);
  });

  it('second TenantPolicy in a namespace: the oldest wins, the other is Conflicted', () => {
    const r = run({ tenantPolicies: [tp('a', ['a.org'], {}, 5, 'young'), tp('a', ['b.org'], {}, 1, 'old')] });
    expect(cond(r, 'TenantPolicy/a/old')).toBe('True/Accepted');
    expect(cond(r, 'TenantPolicy/a/young')).toBe('False/Conflicted');
    expect(cond(r, 'TenantPolicy/a/young', 'Ready')).toBe('False/Conflicted');
    expect(r.statuses.get('TenantPolicy/a/young')?.conditions[0].message).toContain('TenantPolicy a/old');
    expect(r.config.tenants.map((t) => t.domains)).toEqual([['b.org']]);
  });

  it('identical domain claims: the older policy wins; partial loss stays Accepted, total loss does not', () => {
    const r = run({
      tenantPolicies: [
        tp('first', ['shared.org', '*.wild.org'], {}, 1),
        tp('second', ['Shared.org', 'own.org'], {}, 2),
        tp('third', ['*.wild.org'], {}, 3),
      ],
      mailRoutes: [mr('third', 'r', { recipients: ['*@*.wild.org'] })],
    });
    expect(r.config.tenants.map((t) => [t.name, t.domains])).toEqual([
      ['first', ['*.wild.org', 'shared.org']],
      ['second', ['own.org']],
    ]);
    expect(cond(r, 'TenantPolicy/second/policy')).toBe('True/DomainClaimedByOtherTenant');
    expect(cond(r, 'TenantPolicy/second/policy', 'Ready')).toBe('True/DomainClaimedByOtherTenant');
    expect(r.statuses.get('TenantPolicy/second/policy')?.conflicts).toEqual([
      { field: 'spec.domains[0]', value: 'shared.org', winner: 'TenantPolicy first/policy' },
    ]);
    expect(cond(r, 'TenantPolicy/third/policy')).toBe('False/DomainClaimedByOtherTenant');
    expect(cond(r, 'MailRoute/third/r')).toBe('False/NoTenantPolicy');
  });

  it('missing timestamps count as newest, then namespace/name decides', () => {
    const noTs = (ns: string) => {
      const p = tp(ns, ['x.org']);
      delete p.metadata.creationTimestamp;
      return p;
    };
    const r = run({ tenantPolicies: [noTs('b'), noTs('a'), tp('c', ['x.org'], {}, 1000)] });
    expect(r.config.tenants.map((t) => t.name)).toEqual(['c']);
    const r2 = run({ tenantPolicies: [noTs('b'), noTs('a')] });
    expect(r2.config.tenants.map((t) => t.name)).toEqual(['a']);
  });

  it('files (documentOrder): document order stands in for creation time, after every timestamp', () => {
    const noTs = (ns: string) => {
      const p = tp(ns, ['x.org']);
      delete p.metadata.creationTimestamp;
      return p;
    };
    const files = (tenantPolicies: TenantPolicy[]) =>
      compile({ tenantPolicies, mailRoutes: [], services: [] }, { documentOrder: true });
    expect(files([noTs('zeta'), noTs('alpha')]).config.tenants.map((t) => t.name)).toEqual(['zeta']);
    expect(files([noTs('alpha'), noTs('zeta')]).config.tenants.map((t) => t.name)).toEqual(['alpha']);
    // a timestamped resource (exported from a cluster) is older than any untimestamped one
    expect(files([noTs('alpha'), tp('zeta', ['x.org'], {}, 5000)]).config.tenants.map((t) => t.name)).toEqual(
      ['zeta'],
    );
    // the operator (no documentOrder): input order never matters
    const r1 = run({ tenantPolicies: [noTs('zeta'), noTs('alpha')] });
    const r2 = run({ tenantPolicies: [noTs('alpha'), noTs('zeta')] });
    expect(r1.config.hash).toBe(r2.config.hash);
  });

  it('a newer claim inside an older wildcard is lost: the older claim owns the domain', () => {
    const r = run({
      tenantPolicies: [tp('a', ['*.example.com'], {}, 1), tp('b', ['shop.example.com', 'b.org'], {}, 2)],
      mailRoutes: [
        mr('a', 'all', { recipients: ['*@*.example.com'] }),
        mr('b', 'shop', { recipients: ['*@shop.example.com'] }),
      ],
    });
    expect(cond(r, 'TenantPolicy/b/policy')).toBe('True/DomainClaimedByOtherTenant');
    expect(r.statuses.get('TenantPolicy/b/policy')?.conditions[0].message).toContain(
      'shop.example.com (held by TenantPolicy a/policy)',
    );
    expect(cond(r, 'MailRoute/b/shop')).toBe('False/DomainNotOwned');
    const t = buildRoutingTable(r.config);
    const d = decideRecipient(t, { recipient: 'x@shop.example.com', sender: '' });
    expect(d.action === 'relay' && d.tenant.name).toBe('a');
  });

  it('a newer wildcard over an older exact or narrower claim keeps the rest of its domains', () => {
    const r = run({
      tenantPolicies: [
        tp('b', ['shop.example.com'], {}, 1),
        tp('c', ['*.eu.example.com'], {}, 2),
        tp('a', ['*.example.com'], {}, 3),
        tp('d', ['*.de.eu.example.com'], {}, 4),
      ],
      mailRoutes: [
        mr('a', 'all', { recipients: ['*@*.example.com'] }),
        mr('b', 'shop', { recipients: ['*@shop.example.com'] }),
        mr('b', 'sub', { recipients: ['*@*.shop.example.com'] }),
        mr('c', 'eu', { recipients: ['*@*.eu.example.com', 'x@de.eu.example.com'] }),
      ],
    });
    expect(cond(r, 'TenantPolicy/a/policy')).toBe('True/Accepted');
    expect(cond(r, 'TenantPolicy/b/policy')).toBe('True/Accepted');
    expect(cond(r, 'TenantPolicy/c/policy')).toBe('True/Accepted');
    // d is newer than c, whose wildcard covers it entirely
    expect(cond(r, 'TenantPolicy/d/policy')).toBe('False/DomainClaimedByOtherTenant');
    expect(cond(r, 'MailRoute/a/all')).toBe('True/Accepted');
    expect(cond(r, 'MailRoute/b/shop')).toBe('True/Accepted');
    expect(cond(r, 'MailRoute/b/sub')).toBe('False/DomainNotOwned');
    expect(r.statuses.get('MailRoute/b/sub')?.conditions[0].message).toContain(
      '*@*.shop.example.com (domain held by tenant a)',
    );
    expect(cond(r, 'MailRoute/c/eu')).toBe('True/Accepted');
    const t = buildRoutingTable(r.config);
    const owner = (rcpt: string) => {
      const d = decideRecipient(t, { recipient: rcpt, sender: '' });
      return d.action === 'relay' ? d.tenant.name : d.reason;
    };
    expect(owner('x@shop.example.com')).toBe('b');
    expect(owner('x@de.eu.example.com')).toBe('c');
    expect(owner('x@www.example.com')).toBe('a');
  });
});

describe('compile: tenant DNSBL (spec.dnsbl)', () => {
  it('compiles to the relay form with defaults, normalised zones and CIDRs; no field without dnsbl', () => {
    const r = run({
      tenantPolicies: [
        tp('acme', ['acme.org'], {
          dnsbl: {
            zones: [{ zone: 'Zen.Example.', weight: 2, match: ['127.0.0.2'] }, { zone: 'b.example' }],
            allow: ['192.0.2.7/24', '10.0.0.0/8'],
            onLookupFailure: 'Defer',
          },
        }),
        tp('plain', ['plain.org']),
      ],
    });
    const [acme, plain] = r.config.tenants;
    expect(acme.dnsbl).toEqual({
      zones: [
        { zone: 'zen.example', weight: 2, match: ['127.0.0.2'] },
        { zone: 'b.example', weight: 1 },
      ],
      threshold: 1,
      allow: ['10.0.0.0/8', '192.0.2.7/24'],
      failClosed: true,
    });
    expect(plain).not.toHaveProperty('dnsbl');
    expect(() => parseRelayConfig(renderRelayConfig(r.config), 'compiled')).not.toThrow();
  });
});

describe('compile: route statuses', () => {
  it('InvalidSpec names the fields', () => {
    const bad = mr('a', 'bad', { recipients: ['nope'] });
    const r = run({ tenantPolicies: [tp('a', ['a.org']), { ...tp('b', []) }], mailRoutes: [bad] });
    expect(cond(r, 'MailRoute/a/bad')).toBe('False/InvalidSpec');
    expect(cond(r, 'MailRoute/a/bad', 'ResolvedRefs')).toBe('Unknown/InvalidSpec');
    expect(r.statuses.get('MailRoute/a/bad')?.conditions[0].message).toContain('spec.match.recipients[0]');
    expect(cond(r, 'TenantPolicy/b/policy')).toBe('False/InvalidSpec');
    expect(r.config.sources).toEqual({ 'TenantPolicy/a/policy': 1 });
  });

  it('NoTenantPolicy and DomainNotOwned', () => {
    const r = run({
      tenantPolicies: [tp('a', ['a.org'])],
      mailRoutes: [
        mr('x', 'orphan', {}),
        mr('a', 'greedy', { recipients: ['*@a.org', 'ceo@b.org', '*@*.a.org'] }),
      ],
    });
    expect(cond(r, 'MailRoute/x/orphan')).toBe('False/NoTenantPolicy');
    expect(r.statuses.get('MailRoute/x/orphan')?.conditions[0].message).toContain(
      'namespace x has no TenantPolicy',
    );
    expect(cond(r, 'MailRoute/a/greedy')).toBe('False/DomainNotOwned');
    expect(r.statuses.get('MailRoute/a/greedy')?.conditions[0].message).toContain('ceo@b.org, *@*.a.org');
    expect(r.config.tenants[0].routes).toEqual([]);
  });

  it('identical priority and pattern: the older route wins, the younger is Accepted/Conflicted', () => {
    const r = run({
      tenantPolicies: [tp('a', ['a.org'])],
      mailRoutes: [
        mr('a', 'young', { recipients: ['*@a.org', 'x@a.org'] }, 20),
        mr('a', 'old', { recipients: ['*@a.org'] }, 10),
        mr('a', 'other-prio', { recipients: ['*@a.org'], priority: 5 }, 30),
        mr('a', 'filtered', { recipients: ['*@a.org'], senders: ['*@partner.com'] }, 40),
        mr('a', 'filtered-dup', { recipients: ['*@a.org'], senders: ['*@partner.com'] }, 50),
      ],
    });
    expect(cond(r, 'MailRoute/a/old')).toBe('True/Accepted');
    expect(cond(r, 'MailRoute/a/other-prio')).toBe('True/Accepted');
    expect(cond(r, 'MailRoute/a/young')).toBe('True/Conflicted');
    expect(cond(r, 'MailRoute/a/young', 'Ready')).toBe('True/Conflicted');
    expect(r.statuses.get('MailRoute/a/young')?.conflicts).toEqual([
      { field: 'spec.match.recipients[0]', value: '*@a.org', winner: 'MailRoute a/old' },
    ]);
    // An older route without a sender filter shadows every later one on that pattern.
    expect(cond(r, 'MailRoute/a/filtered')).toBe('True/Conflicted');
    expect(cond(r, 'MailRoute/a/filtered-dup')).toBe('True/Conflicted');
    expect(r.config.tenants[0].routes.map((x) => x.name)).toEqual([
      'a/other-prio',
      'a/old',
      'a/young',
      'a/filtered',
      'a/filtered-dup',
    ]);
  });

  it('a sender-filtered older route does not shadow a catch-all younger one', () => {
    const r = run({
      tenantPolicies: [tp('a', ['a.org'])],
      mailRoutes: [
        mr('a', 'partner', { recipients: ['*@a.org'], senders: ['*@partner.com'] }, 1),
        mr('a', 'default', { recipients: ['*@a.org'] }, 2),
        mr('a', 'partner2', { recipients: ['*@a.org'], senders: ['*@partner.com'] }, 3),
      ],
    });
    expect(cond(r, 'MailRoute/a/default')).toBe('True/Accepted');
    expect(cond(r, 'MailRoute/a/partner2')).toBe('True/Conflicted');
    expect(r.statuses.get('MailRoute/a/partner2')?.conflicts?.[0].winner).toBe('MailRoute a/default');
  });

  it('fills reject defaults', () => {
    const r = run({
      tenantPolicies: [tp('a', ['a.org'])],
      mailRoutes: [
        {
          ...mr('a', 'r5', { recipients: ['x@a.org'] }),
          spec: { match: { recipients: ['x@a.org'] }, reject: {} },
        },
        {
          ...mr('a', 'r4', {}),
          spec: { match: { recipients: ['y@a.org'] }, reject: { code: 421, message: 'Later' } },
        },
      ],
    });
    expect(r.config.tenants[0].routes.map((x) => x.action)).toEqual([
      { reject: { code: 421, enhancedCode: '4.7.1', message: 'Later' } },
      { reject: { code: 550, enhancedCode: '5.7.1', message: 'Message rejected by policy' } },
    ]);
  });
});

describe('compile: services', () => {
  const routeTo = (name: string, service: { name: string; port: number | string }, extra = {}) => ({
    ...mr('a', name, {}),
    spec: { match: { recipients: [`${name}@a.org`] }, forward: { upstreams: [{ service, ...extra }] } },
  });
  it('resolves ClusterIP, headless names, ports by number and name; reports missing refs', () => {
    const r = run({
      tenantPolicies: [tp('a', ['a.org'])],
      services: [
        svc('a', 'mx', '10.96.0.10', [
          { name: 'smtp', port: 25 },
          { name: 'submission', port: 587 },
        ]),
        svc('a', 'headless', 'None', [{ name: 'smtp', port: 2525 }]),
        svc('b', 'elsewhere', '10.96.0.11', [{ port: 25 }]),
      ],
      mailRoutes: [
        routeTo('byname', { name: 'mx', port: 'submission' }, { tls: 'required', insecureSkipVerify: true }),
        routeTo('bynumber', { name: 'mx', port: 25 }),
        routeTo('headless', { name: 'headless', port: 'smtp' }),
        routeTo('missing', { name: 'elsewhere', port: 25 }),
        routeTo('badport', { name: 'mx', port: 2525 }),
      ],
    });
    const ups = Object.fromEntries(r.config.tenants[0].routes.map((x) => [x.name, x.action]));
    expect(ups['a/byname']).toEqual({
      forward: { upstreams: [{ host: '10.96.0.10', port: 587, tls: 'required', verify: false }] },
    });
    expect(ups['a/bynumber']).toEqual({
      forward: { upstreams: [{ host: '10.96.0.10', port: 25, tls: 'opportunistic', verify: true }] },
    });
    expect(ups['a/headless']).toEqual({
      forward: { upstreams: [{ host: 'headless.a.svc', port: 2525, tls: 'opportunistic', verify: true }] },
    });
    expect(ups['a/missing']).toEqual({
      reject: { code: 451, enhancedCode: '4.4.1', message: 'Upstream unavailable, try again later' },
    });
    expect(cond(r, 'MailRoute/a/missing', 'ResolvedRefs')).toBe('False/ServiceNotFound');
    expect(cond(r, 'MailRoute/a/missing')).toBe('True/Accepted');
    expect(cond(r, 'MailRoute/a/missing', 'Ready')).toBe('False/ServiceNotFound');
    expect(r.statuses.get('MailRoute/a/missing')?.conditions[1].message).toContain(
      'Service a/elsewhere not found',
    );
    expect(cond(r, 'MailRoute/a/badport', 'ResolvedRefs')).toBe('False/ServicePortNotFound');
    expect(r.statuses.get('MailRoute/a/badport')?.conditions[1].message).toContain(
      'smtp (25), submission (587)',
    );
    expect(cond(r, 'MailRoute/a/byname', 'ResolvedRefs')).toBe('True/ResolvedRefs');
    expect(r.config.sources?.['Service/a/mx']).toBe(0);
    expect(r.config.sources?.['Service/b/elsewhere']).toBeUndefined();
  });

  it('carries xclient: true through to the relay config, and nothing when unset (same hash as before)', () => {
    const r = run({
      tenantPolicies: [tp('a', ['a.org'])],
      services: [svc('a', 'mx', '10.96.0.10', [{ name: 'smtp', port: 25 }])],
      mailRoutes: [
        routeTo('x', { name: 'mx', port: 25 }, { xclient: true }),
        routeTo('plain', { name: 'mx', port: 25 }, { xclient: false }),
      ],
    });
    const ups = Object.fromEntries(r.config.tenants[0].routes.map((x) => [x.name, x.action]));
    expect(ups['a/x']).toEqual({
      forward: {
        upstreams: [{ host: '10.96.0.10', port: 25, tls: 'opportunistic', verify: true, xclient: true }],
      },
    });
    expect(ups['a/plain']).toEqual({
      forward: { upstreams: [{ host: '10.96.0.10', port: 25, tls: 'opportunistic', verify: true }] },
    });
  });

  it('keeps resolvable upstreams when some are missing', () => {
    const r = run({
      tenantPolicies: [tp('a', ['a.org'])],
      mailRoutes: [
        {
          ...mr('a', 'mixed', {}),
          spec: {
            match: { recipients: ['*@a.org'] },
            forward: {
              upstreams: [
                { service: { name: 'gone', port: 25 } },
                { host: 'backup.example.net', port: 2525, tls: 'none' },
              ],
            },
          },
        },
      ],
    });
    expect(r.config.tenants[0].routes[0].action).toEqual({
      forward: { upstreams: [{ host: 'backup.example.net', port: 2525, tls: 'none', verify: true }] },
    });
    expect(cond(r, 'MailRoute/a/mixed', 'ResolvedRefs')).toBe('False/ServiceNotFound');
  });
});

describe('compile: order and determinism', () => {
  const input = (): CompileInput => ({
    tenantPolicies: [tp('a', ['a.org', '*.a.org'], {}, 1), tp('b', ['b.org'], {}, 2)],
    mailRoutes: [
      mr('a', 'catch', { recipients: ['*@a.org', '*@*.a.org'], priority: 200 }, 1),
      mr('a', 'old', { recipients: ['x@a.org', '*@a.org'] }, 2),
      mr('a', 'young', { recipients: ['z@a.org', '*@a.org', 'x+tag@a.org'] }, 3),
      mr('a', 'zz-no-ts', { recipients: ['*@a.org'] }),
      mr('a', 'aa-no-ts', { recipients: ['*@a.org'] }),
      mr('a', 'urgent', { recipients: ['*@*.x.a.org'], priority: 1 }, 9),
      mr('b', 'all', { recipients: ['*@b.org'] }, 4),
    ],
    services: [],
  });

  it("keeps a route's own recipient list when it is already most specific first, else a sorted copy", () => {
    const { mailRoutes, ...rest } = input();
    // with the operator's cache the validated spec is the informer's own object, not a copy
    const { config } = compile({ ...rest, mailRoutes }, { cache: new CompileCache() });
    const route = (name: string) => config.tenants[0].routes.find((r) => r.name === `a/${name}`);
    const old = mailRoutes.find((r) => r.metadata.name === 'old') as MailRoute;
    const young = mailRoutes.find((r) => r.metadata.name === 'young') as MailRoute;
    // ['x@a.org', '*@a.org']: an address before a wildcard, the compile's order
    expect(route('old')?.recipients).toBe(old.spec.match.recipients);
    expect(route('young')?.recipients).toEqual(['x+tag@a.org', 'z@a.org', '*@a.org']);
    expect(route('young')?.recipients).not.toBe(young.spec.match.recipients);
    expect(young.spec.match.recipients).toEqual(['z@a.org', '*@a.org', 'x+tag@a.org']);
  });

  it('makes config.sources when it is read; sourcesOf gives the same generations without it', () => {
    const { config } = compile(input());
    const lookup = sourcesOf(config) as ReadonlyMap<string, number>;
    expect(typeof lookup.get).toBe('function');
    const fromMap = [...lookup];
    expect(fromMap.length).toBe(9);
    expect(Object.entries(config.sources ?? {})).toEqual(fromMap);
    expect(config.sources).toBe(config.sources);
    expect(JSON.parse(renderRelayConfig(config)).sources).toEqual(Object.fromEntries(fromMap));
    expect({ ...config }.sources).toEqual(Object.fromEntries(fromMap));
    config.sources = { 'MailRoute/a/x': 1 };
    expect(config.sources).toEqual({ 'MailRoute/a/x': 1 });
    expect(sourcesOf(config)).toBe(config.sources);
    // a config not compiled here: its record
    const plain = { ...config, sources: { 'MailRoute/b/all': 4 } };
    expect(sourcesOf(plain)).toBe(plain.sources);
  });

  it('orders routes by priority, age, name and patterns by specificity', () => {
    const r = compile(input());
    expect(r.config.tenants[0].routes.map((x) => x.name)).toEqual([
      'a/urgent',
      'a/old',
      'a/young',
      'a/aa-no-ts',
      'a/zz-no-ts',
      'a/catch',
    ]);
    expect(r.config.tenants[0].routes[2].recipients).toEqual(['x+tag@a.org', 'z@a.org', '*@a.org']);
  });

  it('the relay picks per matched pattern', () => {
    const t = buildRoutingTable(compile(input()).config);
    const w = (rcpt: string) => {
      const d = decideRecipient(t, { recipient: rcpt, sender: '' });
      return d.action === 'relay' ? d.route.name : d.reason;
    };
    expect(w('x@a.org')).toBe('a/old');
    expect(w('x+tag@a.org')).toBe('a/young');
    expect(w('y@a.org')).toBe('a/old');
    expect(w('z@a.org')).toBe('a/young');
    expect(w('q@y.x.a.org')).toBe('a/urgent');
    expect(w('q@x.a.org')).toBe('a/catch');
    expect(w('q@b.org')).toBe('b/all');
  });

  it('same input in any order gives byte-identical output', () => {
    const a = compile(input());
    for (let seed = 1; seed < 20; seed++) {
      const i = input();
      const shuffle = <T>(xs: T[]) => {
        let s = seed;
        for (let k = xs.length - 1; k > 0; k--) {
          s = (s * 1103515245 + 12345) % 2147483648;
          const j = s % (k + 1);
          [xs[k], xs[j]] = [xs[j], xs[k]];
        }
        return xs;
      };
      const b = compile({
        ...i,
        tenantPolicies: shuffle(i.tenantPolicies),
        mailRoutes: shuffle(i.mailRoutes),
      });
      expect(renderRelayConfig(b.config)).toBe(renderRelayConfig(a.config));
      expect([...b.statuses]).toEqual([...a.statuses]);
    }
    expect(a.config.hash).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it('compiles 50k routes across 500 tenants', () => {
    const tenantPolicies: TenantPolicy[] = [];
    const mailRoutes: MailRoute[] = [];
    for (let t = 0; t < 500; t++) {
      tenantPolicies.push(tp(`t${t}`, [`t${t}.org`, `*.t${t}.org`], {}, t));
      for (let i = 0; i < 100; i++) {
        mailRoutes.push(
          mr(
            `t${t}`,
            `r${i}`,
            { recipients: [`u${i}@t${t}.org`, i % 10 === 0 ? `*@*.t${t}.org` : `*@t${t}.org`] },
            i,
          ),
        );
      }
    }
    const r = compile({ tenantPolicies, mailRoutes, services: [] });
    expect(r.config.tenants).toHaveLength(500);
    expect(r.config.tenants.reduce((n, t) => n + t.routes.length, 0)).toBe(50_000);
    const table = buildRoutingTable(r.config);
    const d = decideRecipient(table, { recipient: 'u42+x@t77.org', sender: '' });
    expect(d.action === 'relay' && d.route.name).toBe('t77/r42');
  });
});

describe('compile: recipient rewriting', () => {
  it('carries the normalised template to the route that declares it, and only there', () => {
    const r = run({
      tenantPolicies: [tp('sales', ['sales.org'])],
      mailRoutes: [
        mr('sales', 'inbox', {
          recipients: ['*@sales.org'],
          forward: {
            rewrite: { recipient: '${local}@Mail.Bücher.example' },
            upstreams: [{ host: 'mx.example.net' }],
          },
        }),
        mr('sales', 'ceo', { recipients: ['ceo@sales.org'] }),
      ],
    });
    expect(cond(r, 'MailRoute/sales/inbox')).toBe('True/Accepted');
    const routes = Object.fromEntries(r.config.tenants[0].routes.map((x) => [x.name, x.action]));
    expect(routes['sales/inbox']).toEqual({
      forward: {
        rewrite: { recipient: '${local}@mail.xn--bcher-kva.example' },
        upstreams: [{ host: 'mx.example.net', port: 25, tls: 'opportunistic', verify: true }],
      },
    });
    expect(routes['sales/ceo']).toEqual({
      forward: { upstreams: [{ host: 'mx.example.net', port: 25, tls: 'opportunistic', verify: true }] },
    });
    // the relay loads it and forwards bob as bob@… while ceo stays ceo@sales.org
    const table = buildRoutingTable(parseRelayConfig(renderRelayConfig(r.config), 'test'));
    const bob = decideRecipient(table, { recipient: 'bob@sales.org', sender: '' });
    expect(bob.action === 'relay' && bob.rewrittenTo).toBe('bob@mail.xn--bcher-kva.example');
    const ceo = decideRecipient(table, { recipient: 'ceo@sales.org', sender: '' });
    expect(ceo.action === 'relay' && ceo.rewrittenTo).toBe(undefined);
  });

  it('refuses a template that cannot give an address: InvalidSpec naming the field', () => {
    const r = run({
      tenantPolicies: [tp('sales', ['sales.org'])],
      mailRoutes: [
        mr('sales', 'inbox', {
          forward: {
            rewrite: { recipient: '${local}@${tag}.example' },
            upstreams: [{ host: 'mx.example.net' }],
          },
        }),
      ],
    });
    expect(cond(r, 'MailRoute/sales/inbox')).toBe('False/InvalidSpec');
    expect(r.statuses.get('MailRoute/sales/inbox')?.conditions[0].message).toBe(
      'spec.forward.rewrite.recipient: invalid recipient template "${local}@${tag}.example": only ${domain} may appear after "@" (found ${tag})',
    );
    expect(r.config.tenants[0].routes).toEqual([]);
  });
});

describe('compile: sender authentication (spec.authentication)', () => {
  it('compiles annotate/enforce with defaults; off and absent compile to nothing', () => {
    const r = run({
      tenantPolicies: [
        tp('acme', ['acme.org'], {
          authentication: { mode: 'enforce', authservId: 'MX.Acme.org', quarantine: 'reject' },
        }),
        tp('beta', ['beta.org'], {
          authentication: { mode: 'annotate', holdBytes: 65536, onLookupFailure: 'Accept' },
        }),
        tp('off', ['off.org'], { authentication: { mode: 'none', authservId: 'mx.off.org' } }),
        tp('plain', ['plain.org']),
      ],
    });
    const [acme, beta, off, plain] = r.config.tenants;
    expect(acme.authentication).toEqual({
      mode: 'enforce',
      authservId: 'mx.acme.org',
      holdBytes: 262144,
      rejectQuarantine: true,
      deferOnLookupFailure: true,
    });
    expect(beta.authentication).toEqual({
      mode: 'annotate',
      holdBytes: 65536,
      rejectQuarantine: false,
      deferOnLookupFailure: false,
    });
    expect(off).not.toHaveProperty('authentication');
    expect(plain).not.toHaveProperty('authentication');
    expect(() => parseRelayConfig(renderRelayConfig(r.config), 'compiled')).not.toThrow();
  });
});
