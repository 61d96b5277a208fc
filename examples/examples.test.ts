import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { MailRoute, TenantPolicy } from '../operator/api/types.gen.ts';
import { compile } from '../operator/compile/compile.ts';
import { loadResourceFiles } from '../operator/resources/load.ts';
import type { Service } from '../operator/resources/types.ts';
import { formatResourceError } from '../operator/resources/types.ts';
import { validateResources } from '../operator/resources/validate.ts';
import { explainEnvelope } from '../relay/routing/decide.ts';
import { buildRoutingTable } from '../relay/routing/table.ts';

const dir = fileURLToPath(new URL('.', import.meta.url));

describe('examples/', () => {
  it('validate with zero errors, compile with every resource Ready, and route as documented', async () => {
    const { resources, errors } = await loadResourceFiles([dir]);
    expect(errors.map(formatResourceError)).toEqual([]);
    expect(validateResources(resources).map(formatResourceError)).toEqual([]);
    const of = <T>(kind: string) => resources.filter((r) => r.kind === kind).map((r) => r.object as T);
    const result = compile({
      tenantPolicies: of<TenantPolicy>('TenantPolicy'),
      mailRoutes: of<MailRoute>('MailRoute'),
      services: of<Service>('Service'),
    });
    expect(result.statuses.size).toBe(resources.length);
    for (const [key, status] of result.statuses) {
      expect(`${key}: ${status.conditions.map((c) => `${c.type}=${c.status}/${c.reason}`).join(' ')}`).toBe(
        `${key}: Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs Ready=True/Ready`,
      );
    }
    const table = buildRoutingTable(result.config);
    const route = (to: string, from = 'someone@elsewhere.org') => {
      const r = explainEnvelope(table, { to: [to], from, clientIp: '127.0.0.1', tls: false }).recipients[0];
      return r.action === 'relay' ? r.route : r.reply;
    };
    expect(route('anyone@support.example.com')).toBe('support/helpdesk');
    expect(route('escalations+urgent@support.example.com')).toBe('support/escalations');
    const rewritten = (to: string) =>
      explainEnvelope(table, { to: [to], from: '', clientIp: '127.0.0.1' }).recipients[0].rewrittenTo;
    expect(rewritten('escalations+urgent@support.example.com')).toBe(
      'helpdesk+escalation-urgent@support.example.com',
    );
    expect(rewritten('Escalations@support.example.com')).toBe('helpdesk+escalation@support.example.com');
    expect(rewritten('anyone@support.example.com')).toBe(undefined);
    expect(route('noreply@support.example.com')).toBe(
      '550 5.7.1 This address does not accept mail, write to help@help.example.com',
    );
    expect(route('contracts@sales.example.com', 'ann@lawfirm.example.org')).toBe(
      'sales/contracts-from-legal',
    );
    expect(route('contracts@sales.example.com')).toBe('sales/inbox');
    expect(route('x@acme.partners.example.com')).toBe('sales/partner-portals');
    expect(route('x@partners.example.com')).toBe(
      '550 5.7.1 Relay access denied: partners.example.com is not served here',
    );
    expect(route('alerts@eng.example.com')).toBe('engineering/alerts');
    expect(route('alerts@eng.example.com', '<>')).toBe(
      '550 5.7.1 Bounces to the alerts address are not accepted',
    );
    expect(route('ci+builds@eng.example.com')).toBe('engineering/alerts');
    expect(route('ci+other@eng.example.com')).toBe('engineering/all');
    expect(route('x@team.eng.example.com')).toBe('engineering/all');
    expect(
      explainEnvelope(table, { to: ['x@sales.example.com'], from: '', clientIp: '192.0.2.1' }).recipients[0]
        .reply,
    ).toBe('550 5.7.1 Client address not permitted to send to sales.example.com');
    for (const t of result.config.tenants) {
      for (const r of t.routes) {
        if ('forward' in r.action) for (const u of r.action.forward.upstreams) expect(u.port).toBe(2526);
      }
    }
  });
});
