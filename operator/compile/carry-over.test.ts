import { describe, expect, it } from 'vitest';
import { parseRelayConfig } from '../../contract/config/load.ts';
import type { RelayConfig } from '../../contract/config/types.gen.ts';
import { decideRecipient } from '../../relay/routing/decide.ts';
import { buildRoutingTable } from '../../relay/routing/table.ts';
import type { MailRoute, MailRouteSpec, TenantPolicy, TenantPolicySpec } from '../api/types.gen.ts';
import { ConfigHistory, programmedCondition } from '../conditions/programmed.ts';
import { previousTenantSection } from './carry-over.ts';
import { type CompileInput, compile, renderRelayConfig } from './compile.ts';

const ts = (n: number) => new Date(Date.UTC(2024, 0, 1) + n * 60_000).toISOString();
const tp = (ns: string, age: number, generation: number, spec: Partial<TenantPolicySpec>): TenantPolicy => ({
  apiVersion: 'mailplus.io/v1alpha1',
  kind: 'TenantPolicy',
  metadata: { name: 'policy', namespace: ns, generation, creationTimestamp: ts(age) },
  spec: { domains: [], ...spec } as TenantPolicySpec,
});
const mr = (ns: string, name: string, generation: number, spec: Partial<MailRouteSpec>): MailRoute => ({
  apiVersion: 'mailplus.io/v1alpha1',
  kind: 'MailRoute',
  metadata: { name, namespace: ns, generation, creationTimestamp: ts(10) },
  spec: { match: { recipients: ['*@a.example'] }, ...spec } as MailRouteSpec,
});
const fwd = (host: string) => ({ forward: { upstreams: [{ host }] } });
const run = (input: Partial<CompileInput>, previous?: RelayConfig) =>
  compile({ tenantPolicies: [], mailRoutes: [], services: [], ...input }, { previous });
const accepted = (r: ReturnType<typeof run>, key: string) => {
  const c = r.statuses.get(key)?.conditions.find((x) => x.type === 'Accepted');
  return c && `${c.status}/${c.reason}: ${c.message}`;
};
/** Where a recipient's mail goes: 'tenant upstream-host', or the refusal reason. */
const deliver = (r: ReturnType<typeof run>, recipient: string, clientIp = '10.1.2.3', tls = true) => {
  const d = decideRecipient(buildRoutingTable(r.config), { recipient, sender: 'x@y.example', clientIp, tls });
  if (d.action !== 'relay') return d.reason;
  return `${d.tenant.name} ${d.upstreams[0].host}`;
};
/** Mail for a.example reaches a's upstream only under a's own client networks and TLS rule. */
const expectRestricted = (r: ReturnType<typeof run>) => {
  expect(deliver(r, 'x@a.example', '192.0.2.9')).toBe('client_not_allowed');
  expect(deliver(r, 'x@a.example', '10.1.2.3', false)).toBe('tls_required');
};

// a: the older tenant; b: a newer tenant claiming the same domain
const goodA = tp('a', 1, 1, { domains: ['a.example'], clientCIDRs: ['10.0.0.0/8'], requireTLS: true });
const claimB = tp('b', 2, 1, { domains: ['a.example'] });
const routeA = mr('a', 'inbox', 1, fwd('mx.a.internal'));
const routeB = mr('b', 'grab', 1, fwd('mx.b.internal'));

describe('compile: an invalid generation keeps the last valid version in force', () => {
  const before = run({ tenantPolicies: [goodA, claimB], mailRoutes: [routeA, routeB] });
  const brokenA = tp('a', 1, 2, {
    domains: ['a.example'],
    clientCIDRs: ['10.0.0.0/8', '10.0.0.0/33'],
    requireTLS: true,
  });

  it('an invalid TenantPolicy keeps its domains, client networks and TLS; the newer claim stays lost', () => {
    expect(deliver(before, 'x@a.example')).toBe('a mx.a.internal');
    const after = run({ tenantPolicies: [brokenA, claimB], mailRoutes: [routeA, routeB] }, before.config);
    expect(deliver(after, 'x@a.example')).toBe('a mx.a.internal');
    expect(accepted(after, 'TenantPolicy/a/policy')).toMatch(
      /^False\/InvalidSpec: spec\.clientCIDRs\[1\]: .*generation 1, the last valid one, stays in force for a\.example/,
    );
    expectRestricted(after);
    expect(after.config.sources?.['TenantPolicy/a/policy']).toBe(1);
    expect(accepted(after, 'TenantPolicy/b/policy')).toMatch(/^False\/DomainClaimedByOtherTenant/);
    expect(accepted(after, 'MailRoute/b/grab')).toMatch(/^False\/NoTenantPolicy/);
    // Programmed says which generation is served
    const p = programmedCondition({
      key: 'TenantPolicy/a/policy',
      generation: 2,
      currentSources: after.config.sources ?? {},
      live: [],
      history: new ConfigHistory(),
      fleet: 'x',
    });
    expect(p).toMatchObject({ status: 'False', reason: 'Invalid' });
    expect(p.message).toContain('relays keep serving generation 1');
  });

  it("an invalid edit keeps the tenant's DNS blocklists in force, not the broken ones", () => {
    const dnsbl = { zones: [{ zone: 'zen.example', weight: 2 }], threshold: 2 };
    const good = tp('a', 1, 1, { domains: ['a.example'], dnsbl });
    const first = run({ tenantPolicies: [good], mailRoutes: [routeA] });
    const broken = tp('a', 1, 2, { domains: ['a.example'], dnsbl: { ...dnsbl, allow: ['10.0.0.0/33'] } });
    const after = run({ tenantPolicies: [broken], mailRoutes: [routeA] }, first.config);
    expect(accepted(after, 'TenantPolicy/a/policy')).toMatch(
      /^False\/InvalidSpec: spec\.dnsbl\.allow\[0\]: /,
    );
    expect(after.config.tenants[0].dnsbl).toEqual({
      zones: [{ zone: 'zen.example', weight: 2 }],
      threshold: 2,
      allow: [],
      failClosed: false,
    });
  });

  it("an invalid edit keeps the tenant's sender authentication in force, not the edited one", () => {
    const good = tp('a', 1, 1, { domains: ['a.example'], authentication: { mode: 'enforce' } });
    const first = run({ tenantPolicies: [good], mailRoutes: [routeA] });
    const broken = tp('a', 1, 2, {
      domains: ['a.example'],
      authentication: { mode: 'annotate' },
      dnsbl: { zones: [{ zone: 'zen.example' }], allow: ['10.0.0.0/33'] },
    });
    const after = run({ tenantPolicies: [broken], mailRoutes: [routeA] }, first.config);
    expect(accepted(after, 'TenantPolicy/a/policy')).toMatch(
      /^False\/InvalidSpec: spec\.dnsbl\.allow\[0\]: /,
    );
    expect(after.config.tenants[0].authentication).toEqual({
      mode: 'enforce',
      holdBytes: 262144,
      rejectQuarantine: false,
      deferOnLookupFailure: true,
    });
  });

  it('survives a restart (the previous config read back from its published text) and later edits', () => {
    const published = parseRelayConfig(renderRelayConfig(before.config), 'configmap');
    const r1 = run({ tenantPolicies: [brokenA, claimB], mailRoutes: [routeA, routeB] }, published);
    // still invalid at generation 3, and a route change of the tenant goes live meanwhile
    const brokenA3 = { ...brokenA, metadata: { ...brokenA.metadata, generation: 3 } };
    const routeA2 = mr('a', 'inbox', 2, fwd('mx2.a.internal'));
    const r2 = run({ tenantPolicies: [brokenA3, claimB], mailRoutes: [routeA2, routeB] }, r1.config);
    expect(deliver(r2, 'x@a.example')).toBe('a mx2.a.internal');
    expectRestricted(r2);
    expect(r2.config.sources?.['TenantPolicy/a/policy']).toBe(1);
    // fixed: the new generation applies
    const fixed = tp('a', 1, 4, { domains: ['a.example'], clientCIDRs: ['192.0.2.0/24'] });
    const r3 = run({ tenantPolicies: [fixed, claimB], mailRoutes: [routeA2, routeB] }, r2.config);
    expect(deliver(r3, 'x@a.example', '192.0.2.9', false)).toBe('a mx2.a.internal');
    expect(accepted(r3, 'TenantPolicy/a/policy')).toMatch(/^True\/Accepted/);
  });

  it('an older claim still wins over the version in force', () => {
    const older = tp('z', 0, 1, { domains: ['a.example'] });
    const r = run({ tenantPolicies: [brokenA, claimB, older], mailRoutes: [routeA] }, before.config);
    expect(deliver(r, 'x@a.example')).toBe('no_route');
    expect(accepted(r, 'TenantPolicy/a/policy')).toMatch(/serves nothing; claimed by an older TenantPolicy/);
  });

  it('a recreated resource (generation not newer than the served one) inherits nothing', () => {
    const recreated = tp('a', 5, 1, { domains: ['a.example'], clientCIDRs: ['10.0.0.0/33'] });
    const r = run({ tenantPolicies: [recreated], mailRoutes: [routeA] }, before.config);
    expect(r.config.sources?.['TenantPolicy/a/policy']).toBeUndefined();
    expect(r.config.tenants.find((t) => t.name === 'a')?.routes).toEqual([]);
  });

  it('without a valid version in force, an invalid TenantPolicy reserves its domains (no route serves them)', () => {
    const r = run({ tenantPolicies: [brokenA, claimB], mailRoutes: [routeA, routeB] });
    expect(deliver(r, 'x@a.example')).toBe('no_route');
    expect(accepted(r, 'TenantPolicy/a/policy')).toMatch(/a\.example stay reserved for this tenant/);
    expect(accepted(r, 'TenantPolicy/b/policy')).toMatch(/^False\/DomainClaimedByOtherTenant/);
    expect(accepted(r, 'MailRoute/a/inbox')).toMatch(
      /^False\/NoTenantPolicy: TenantPolicy a\/policy is invalid/,
    );
    expect(r.config.sources).toEqual({});
  });

  it('an invalid MailRoute keeps its last valid route', () => {
    const brokenRoute = mr('a', 'inbox', 2, {
      ...fwd('mx.new.internal'),
      reject: { code: 550 },
    });
    const r = run({ tenantPolicies: [goodA, claimB], mailRoutes: [brokenRoute, routeB] }, before.config);
    expect(deliver(r, 'x@a.example')).toBe('a mx.a.internal');
    expect(accepted(r, 'MailRoute/a/inbox')).toMatch(
      /^False\/InvalidSpec: spec: set exactly one action.*generation 1, the last valid one, stays in force/,
    );
    expect(r.config.sources?.['MailRoute/a/inbox']).toBe(1);
    // ... unless its domains are no longer the tenant's
    const shrunk = tp('a', 1, 2, { domains: ['other.example'] });
    const r2 = run({ tenantPolicies: [shrunk], mailRoutes: [brokenRoute] }, before.config);
    expect(r2.config.tenants[0].routes).toEqual([]);
    expect(accepted(r2, 'MailRoute/a/inbox')).toMatch(/is not served either: its recipient patterns/);
  });

  it('previousTenantSection returns a tenant with the sources of its namespace', () => {
    const s = previousTenantSection(before.config, 'a');
    expect(s?.tenant.domains).toEqual(['a.example']);
    expect(s?.sources).toEqual({ 'MailRoute/a/inbox': 1, 'TenantPolicy/a/policy': 1 });
    expect(previousTenantSection(before.config, 'nope')).toBeUndefined();
  });
});
