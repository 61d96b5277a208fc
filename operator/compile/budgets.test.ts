import { describe, expect, it } from 'vitest';
import { verifyRelayConfig } from '../../contract/config/load.ts';
import { buildRoutingTable } from '../../relay/routing/table.ts';
import { fleet, mailRoute, routePatterns, tenantPolicy } from '../../test/support/fleet.ts';
import { enforceTenantBudgets, HELD_BACK_REPLY, overBudget, tenantUsage } from './budgets.ts';
import { compile } from './compile.ts';

const budgets = { maxRoutes: 50, maxPatterns: 200, maxBytes: 64 * 1024 };

/** tenant-0..2 in budget; tenant-big with `routes` routes of `patterns` patterns each. */
function input(routes: number, patterns: number, generation = 1) {
  const f = fleet(30, 3);
  f.tenantPolicies.push(tenantPolicy('tenant-big', ['big.example.com', '*.big.example.com']));
  for (let r = 0; r < routes; r++)
    f.mailRoutes.push(
      mailRoute('tenant-big', `big-${r}`, routePatterns(r, 'big.example.com', patterns), generation),
    );
  return { ...f, services: [] };
}

describe('tenant budgets', () => {
  it('counts routes, patterns and bytes and names every broken limit with its flag', () => {
    const t = compile(input(60, 5)).config.tenants.find((x) => x.name === 'tenant-big');
    const u = tenantUsage(
      t ?? { name: '', domains: [], clientCIDRs: [], requireTLS: false, limits: {}, routes: [] },
    );
    expect(u).toMatchObject({ routes: 60, patterns: 300 });
    expect(overBudget(u, budgets)).toEqual([
      '60 routes (limit 50, --tenant-max-routes)',
      '300 recipient and sender patterns (limit 200, --tenant-max-patterns)',
    ]);
  });

  it('leaves a config within budget untouched', () => {
    const r = compile(input(10, 5));
    const b = enforceTenantBudgets(r, budgets, undefined);
    expect(b.config).toBe(r.config);
    expect(b.overBudget.size).toBe(0);
  });

  it('keeps the previously published section of an over-budget tenant; everyone else publishes', () => {
    const before = enforceTenantBudgets(compile(input(10, 5)), budgets, undefined).config;
    const grown = compile(input(60, 5, 2));
    const b = enforceTenantBudgets(grown, budgets, before);
    verifyRelayConfig(b.config, 'budgeted');
    expect(b.config.tenants.find((t) => t.name === 'tenant-big')).toEqual(
      before.tenants.find((t) => t.name === 'tenant-big'),
    );
    expect(b.config.tenants.find((t) => t.name === 'tenant-1')).toEqual(
      grown.config.tenants.find((t) => t.name === 'tenant-1'),
    );
    expect(b.config.sources?.['MailRoute/tenant-big/big-0']).toBe(1);
    expect(b.config.sources?.['MailRoute/tenant-big/big-55']).toBeUndefined();
    const st = b.statuses.get('MailRoute/tenant-big/big-55');
    const accepted = st?.conditions.find((c) => c.type === 'Accepted');
    expect(accepted).toMatchObject({ status: 'False', reason: 'TenantBudgetExceeded' });
    expect(accepted?.message).toMatch(
      /60 routes \(limit 50, --tenant-max-routes\).*routes published before stay in force/,
    );
    expect(b.statuses.get('TenantPolicy/tenant-big/policy')?.conditions[0].reason).toBe(
      'TenantBudgetExceeded',
    );
    expect(b.statuses.get('MailRoute/tenant-1/route-1')?.conditions[0].reason).toBe('Accepted');
  });

  it('a tenant over budget from the start defers its mail (451), keeps its domains, and gives nothing away', () => {
    const b = enforceTenantBudgets(compile(input(60, 5)), budgets, undefined);
    const big = b.config.tenants.find((t) => t.name === 'tenant-big');
    expect(big?.domains).toEqual(['*.big.example.com', 'big.example.com']);
    expect(big?.routes).toEqual([
      expect.objectContaining({
        recipients: ['*@*.big.example.com', '*@big.example.com'],
        action: { reject: HELD_BACK_REPLY },
      }),
    ]);
    expect(() => buildRoutingTable(verifyRelayConfig(b.config, 'budgeted'))).not.toThrow();
    expect(b.statuses.get('MailRoute/tenant-big/big-0')?.conditions[0].message).toMatch(/answer 451 4\.3\.0/);
  });

  it('a held-back section serves only the domains its tenant still owns', () => {
    const before = enforceTenantBudgets(compile(input(10, 5)), budgets, undefined).config;
    const grown = input(60, 5, 2);
    const policy = grown.tenantPolicies.find((p) => p.metadata.namespace === 'tenant-big');
    if (policy) policy.spec.domains = ['big.example.com'];
    const b = enforceTenantBudgets(compile(grown), budgets, before);
    expect(b.config.tenants.find((t) => t.name === 'tenant-big')?.domains).toEqual(['big.example.com']);
  });
});
