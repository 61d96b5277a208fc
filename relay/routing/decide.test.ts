// biome-ignore-all lint/suspicious/noTemplateCurlyInString: recipient templates use ${…}
import { describe, expect, it } from 'vitest';
import { hashConfig } from '../../contract/config/hash.ts';
import type { RelayConfig, Route, Tenant, Upstream } from '../../contract/config/types.gen.ts';
import { decideRecipient, explainEnvelope, formatExplanation, formatReply } from './decide.ts';
import { buildRoutingTable } from './table.ts';

const up = (host: string, port = 25): Upstream => ({ host, port, tls: 'opportunistic', verify: true });
const fwd = (
  name: string,
  recipients: string[],
  opts: Partial<Route> = {},
  upstreams = [up(name)],
): Route => ({
  name,
  priority: 100,
  recipients,
  senders: [],
  action: { forward: { upstreams } },
  ...opts,
});
const tenant = (name: string, domains: string[], routes: Route[], opts: Partial<Tenant> = {}): Tenant => ({
  name,
  policy: `${name}/policy`,
  domains,
  clientCIDRs: [],
  requireTLS: false,
  limits: {},
  routes,
  ...opts,
});
const table = (...tenants: Tenant[]) => {
  const config: RelayConfig = {
    apiVersion: 'relay.mailplus.io/v1alpha1',
    kind: 'RelayConfig',
    hash: '',
    tenants,
  };
  config.hash = hashConfig(config);
  return buildRoutingTable(config);
};
const winner = (t: ReturnType<typeof table>, recipient: string, sender = 'x@sender.org') => {
  const d = decideRecipient(t, { recipient, sender });
  return d.action === 'relay' ? d.route.name : `${d.code} ${d.enhancedCode} ${d.message}`;
};

describe('domain ownership', () => {
  const t = table(
    tenant('a', ['example.com', '*.example.com'], [fwd('a/all', ['*@example.com', '*@*.example.com'])]),
    tenant('b', ['shop.example.com'], [fwd('b/shop', ['*@shop.example.com'])]),
    tenant('c', ['*.eu.example.com'], [fwd('c/eu', ['*@*.eu.example.com'])]),
  );
  it('exact claim beats wildcard, longest wildcard suffix wins', () => {
    expect(winner(t, 'x@example.com')).toBe('a/all');
    expect(winner(t, 'x@shop.example.com')).toBe('b/shop');
    expect(winner(t, 'x@de.shop.example.com')).toBe('a/all');
    expect(winner(t, 'x@de.eu.example.com')).toBe('c/eu');
    expect(winner(t, 'x@eu.example.com')).toBe('a/all');
  });
  it('replies relay_denied for unknown domains', () => {
    const d = decideRecipient(t, { recipient: '<x@Other.org>', sender: '' });
    expect(d).toMatchObject({
      action: 'reject',
      reason: 'relay_denied',
      code: 550,
      enhancedCode: '5.7.1',
      message: 'Relay access denied: other.org is not served here',
    });
    expect(decideRecipient(t, { recipient: 'postmaster', sender: '' })).toMatchObject({
      reason: 'relay_denied',
    });
    expect(decideRecipient(t, { recipient: '<>', sender: '' })).toMatchObject({ reason: 'relay_denied' });
  });
  it('rejects duplicate domains in a config', () => {
    expect(() => table(tenant('a', ['x.org'], []), tenant('b', ['x.org'], []))).toThrow(
      /held by tenants a and b/,
    );
  });
});

describe('tenant DNSBL settings in a hand-written config', () => {
  const dnsbl = (over: Partial<NonNullable<Tenant['dnsbl']>>): Partial<Tenant> => ({
    dnsbl: {
      zones: [{ zone: 'zen.example', weight: 1 }],
      threshold: 1,
      allow: [],
      failClosed: false,
      ...over,
    },
  });
  it('are refused at load, naming tenant and entry', () => {
    expect(() => table(tenant('a', ['x.org'], [], dnsbl({})))).not.toThrow();
    expect(() => table(tenant('a', ['x.org'], [], dnsbl({ allow: ['10.0.0.0/33'] })))).toThrow(
      /tenant a: dnsbl: allow: invalid CIDR "10.0.0.0\/33"/,
    );
    expect(() =>
      table(
        tenant('a', ['x.org'], [], dnsbl({ zones: [{ zone: 'zen.example', weight: 1, match: ['127.0'] }] })),
      ),
    ).toThrow(/tenant a: dnsbl: zen.example: "127.0" is not a return-code pattern/);
    expect(() =>
      table(tenant('a', ['x.org'], [], dnsbl({ zones: [{ zone: 'bad zone', weight: 1 }] }))),
    ).toThrow(/tenant a: dnsbl: "bad zone" is not a DNS zone name/);
  });
});

describe('tenant checks', () => {
  const t = table(
    tenant('a', ['a.org'], [fwd('a/r', ['*@a.org'])], {
      clientCIDRs: ['10.0.0.0/8', '2001:db8::/32'],
      requireTLS: true,
    }),
  );
  it('checks client CIDRs, IPv4-mapped IPv6 included', () => {
    const q = { recipient: 'x@a.org', sender: '', tls: true };
    expect(decideRecipient(t, { ...q, clientIp: '10.9.9.9' }).action).toBe('relay');
    expect(decideRecipient(t, { ...q, clientIp: '::ffff:10.9.9.9' }).action).toBe('relay');
    expect(decideRecipient(t, { ...q, clientIp: '2001:db8::7' }).action).toBe('relay');
    expect(decideRecipient(t, { ...q, clientIp: '192.0.2.1' })).toMatchObject({
      reason: 'client_not_allowed',
      code: 550,
      enhancedCode: '5.7.1',
      message: 'Client address not permitted to send to a.org',
    });
    expect(decideRecipient(t, { ...q, clientIp: 'garbage' })).toMatchObject({ reason: 'client_not_allowed' });
  });
  it('requires TLS after the CIDR check', () => {
    expect(
      decideRecipient(t, { recipient: 'x@a.org', sender: '', clientIp: '10.0.0.1', tls: false }),
    ).toMatchObject({
      reason: 'tls_required',
      code: 530,
      enhancedCode: '5.7.0',
      message: 'Must issue a STARTTLS command first',
    });
    expect(
      decideRecipient(t, { recipient: 'x@a.org', sender: '', clientIp: '1.1.1.1', tls: false }),
    ).toMatchObject({
      reason: 'client_not_allowed',
    });
  });
  it('checks TLS before the route', () => {
    const t2 = table(tenant('a', ['a.org'], [], { requireTLS: true }));
    expect(decideRecipient(t2, { recipient: 'x@a.org', sender: '', tls: false })).toMatchObject({
      reason: 'tls_required',
    });
    expect(decideRecipient(t2, { recipient: 'x@a.org', sender: '', tls: true })).toMatchObject({
      reason: 'no_route',
    });
  });
});

describe('route choice', () => {
  it('replies no_route with the recipient as given', () => {
    const t = table(tenant('a', ['a.org'], [fwd('a/one', ['one@a.org'])]));
    expect(decideRecipient(t, { recipient: '<Two@A.org>', sender: '' })).toMatchObject({
      reason: 'no_route',
      code: 550,
      enhancedCode: '5.1.1',
      message: 'No route for Two@A.org',
    });
  });

  it('lowest priority wins over specificity', () => {
    const t = table(
      tenant(
        'a',
        ['a.org'],
        [fwd('a/catch', ['*@a.org'], { priority: 10 }), fwd('a/exact', ['x@a.org'], { priority: 20 })],
      ),
    );
    expect(winner(t, 'x@a.org')).toBe('a/catch');
  });

  it('same priority: the most specific matched pattern wins, per recipient', () => {
    // a/old is first in list order (older) and has an exact pattern, but for y@a.org it only
    // matches via *@a.org, where a/young's *@a.org ties; y@ must go to a/old (older) while
    // for z@a.org a/young's exact pattern beats a/old's wildcard.
    const t = table(
      tenant(
        'a',
        ['a.org', '*.a.org'],
        [
          fwd('a/old', ['x@a.org', '*@a.org']),
          fwd('a/young', ['z@a.org', '*@a.org', 'x+tag@a.org', '*@*.b.a.org']),
          fwd('a/sub', ['*@*.a.org']),
        ],
      ),
    );
    expect(winner(t, 'x@a.org')).toBe('a/old');
    expect(winner(t, 'x+other@a.org')).toBe('a/old');
    expect(winner(t, 'x+tag@a.org')).toBe('a/young');
    expect(winner(t, 'X+TAG@A.ORG')).toBe('a/young');
    expect(winner(t, 'y@a.org')).toBe('a/old');
    expect(winner(t, 'z@a.org')).toBe('a/young');
    expect(winner(t, 'q@c.b.a.org')).toBe('a/young');
    expect(winner(t, 'q@b.a.org')).toBe('a/sub');
    expect(winner(t, 'q@c.a.org')).toBe('a/sub');
  });

  it('ties on priority and pattern go to the earlier route (older, then name)', () => {
    const t = table(tenant('a', ['a.org'], [fwd('a/first', ['*@a.org']), fwd('a/second', ['*@a.org'])]));
    expect(winner(t, 'x@a.org')).toBe('a/first');
  });

  it('skips routes whose senders do not match', () => {
    const t = table(
      tenant(
        'a',
        ['a.org'],
        [
          fwd('a/bounces', ['*@a.org'], { priority: 1, senders: ['<>'] }),
          fwd('a/partner', ['x@a.org'], {
            priority: 5,
            senders: ['*@partner.com', 'boss@*.corp.com'.replace('boss@', '*@')],
          }),
          fwd('a/default', ['*@a.org'], { priority: 50 }),
        ],
      ),
    );
    expect(winner(t, 'x@a.org', '<>')).toBe('a/bounces');
    expect(winner(t, 'x@a.org', '')).toBe('a/bounces');
    expect(winner(t, 'x@a.org', 'Joe+tag@PARTNER.com')).toBe('a/partner');
    expect(winner(t, 'x@a.org', 'joe@eu.corp.com')).toBe('a/partner');
    expect(winner(t, 'x@a.org', 'joe@corp.com')).toBe('a/default');
    expect(winner(t, 'y@a.org', 'joe@partner.com')).toBe('a/default');
  });

  it('applies reject routes with their reply', () => {
    const t = table(
      tenant(
        'a',
        ['a.org'],
        [
          {
            name: 'a/noreply',
            priority: 1,
            recipients: ['noreply@a.org'],
            senders: [],
            action: {
              reject: { code: 550, enhancedCode: '5.7.1', message: 'This mailbox does not accept mail' },
            },
          },
          fwd('a/all', ['*@a.org']),
        ],
      ),
    );
    expect(decideRecipient(t, { recipient: 'noreply+x@a.org', sender: '' })).toMatchObject({
      action: 'reject',
      reason: 'route_reject',
      code: 550,
      enhancedCode: '5.7.1',
      message: 'This mailbox does not accept mail',
      route: { name: 'a/noreply' },
      tenant: { name: 'a' },
    });
  });

  it('gives equal upstream lists the same key and different lists different keys', () => {
    const t = table(
      tenant(
        'a',
        ['a.org'],
        [
          fwd('a/one', ['one@a.org'], {}, [up('mx1'), up('mx2')]),
          fwd('a/two', ['two@a.org'], {}, [up('mx1'), up('mx2')]),
          fwd('a/three', ['three@a.org'], {}, [up('mx2'), up('mx1')]),
          fwd('a/four', ['four@a.org'], {}, [up('mx1', 2525), up('mx2')]),
        ],
      ),
    );
    const key = (r: string) => {
      const d = decideRecipient(t, { recipient: r, sender: '' });
      return d.action === 'relay' ? d.upstreamKey : '';
    };
    expect(key('one@a.org')).toBe(key('two@a.org'));
    expect(key('one@a.org')).not.toBe(key('three@a.org'));
    expect(key('one@a.org')).not.toBe(key('four@a.org'));
  });
});

describe('explainEnvelope', () => {
  const t = table(
    tenant(
      'a',
      ['a.org'],
      [
        fwd('a/all', ['*@a.org'], {}, [
          up('mx1.a.org'),
          { host: 'mx2.a.org', port: 465, tls: 'implicit', verify: false },
        ]),
        {
          name: 'a/gone',
          priority: 1,
          recipients: ['gone@a.org'],
          senders: [],
          action: { reject: { code: 450, enhancedCode: '4.7.1', message: 'Try later' } },
        },
      ],
    ),
  );
  it('explains every recipient', () => {
    const e = explainEnvelope(t, { from: 'x@y.org', to: ['u@a.org', 'gone@a.org', 'u@b.org'] });
    expect(e.configHash).toBe(t.hash);
    expect(e.recipients).toEqual([
      {
        recipient: 'u@a.org',
        action: 'relay',
        tenant: 'a',
        route: 'a/all',
        pattern: '*@a.org',
        upstreams: [
          { host: 'mx1.a.org', port: 25, tls: 'opportunistic', verify: true },
          { host: 'mx2.a.org', port: 465, tls: 'implicit', verify: false },
        ],
        upstreamKey: expect.any(String),
      },
      {
        recipient: 'gone@a.org',
        action: 'reject',
        reply: '450 4.7.1 Try later',
        reason: 'route_reject',
        tenant: 'a',
        route: 'a/gone',
        pattern: 'gone@a.org',
      },
      {
        recipient: 'u@b.org',
        action: 'reject',
        reply: '550 5.7.1 Relay access denied: b.org is not served here',
        reason: 'relay_denied',
      },
    ]);
    expect(formatExplanation(e)).toBe(
      [
        'u@a.org: relay via route a/all (tenant a, pattern *@a.org)',
        '  1. mx1.a.org:25 (tls opportunistic)',
        '  2. mx2.a.org:465 (tls implicit, no verify)',
        'gone@a.org: reject 450 4.7.1 Try later [route_reject] (route a/gone)',
        'u@b.org: reject 550 5.7.1 Relay access denied: b.org is not served here [relay_denied]',
        '',
      ].join('\n'),
    );
  });
});

describe('recipient rewriting', () => {
  const rewriting = (name: string, recipients: string[], template: string, upstreams = [up('mx.a.org')]) =>
    fwd(name, recipients, { action: { forward: { rewrite: { recipient: template }, upstreams } } });
  const t = table(
    tenant(
      'a',
      ['a.org', 'xn--bcher-kva.example'],
      [
        rewriting('a/sales', ['*@a.org'], '${local}@mail.internal.example'),
        rewriting('a/archive', ['*@xn--bcher-kva.example'], '${user}.archive@${domain}'),
        fwd('a/ceo', ['ceo@a.org'], {}, [up('mx.a.org')]),
      ],
    ),
  );
  it('rewrites only the recipients of the rewriting route; routing uses the original', () => {
    const d = decideRecipient(t, { recipient: 'Bob+News@A.org', sender: '' });
    expect(d.action === 'relay' && [d.route.name, d.pattern, d.rewrittenTo]).toEqual([
      'a/sales',
      '*@a.org',
      'Bob+News@mail.internal.example',
    ]);
    const ceo = decideRecipient(t, { recipient: 'ceo@a.org', sender: '' });
    expect(ceo.action === 'relay' && [ceo.route.name, ceo.rewrittenTo]).toEqual(['a/ceo', undefined]);
    // the rewritten domain is nobody's: it only names the mailbox at the route's upstream
    expect(winner(t, 'bob@mail.internal.example')).toBe(
      '550 5.7.1 Relay access denied: mail.internal.example is not served here',
    );
  });
  it('keeps both spellings of an internationalised domain as received', () => {
    const a = decideRecipient(t, { recipient: 'kunde@xn--bcher-kva.example', sender: '' });
    const u = decideRecipient(t, { recipient: 'kunde+x@bücher.example', sender: '' });
    expect(a.action === 'relay' && a.rewrittenTo).toBe('kunde.archive@xn--bcher-kva.example');
    expect(u.action === 'relay' && u.rewrittenTo).toBe('kunde.archive@bücher.example');
  });
  it('refuses a recipient whose rewriting is not a valid address (553 5.1.3)', () => {
    const long = `${'b'.repeat(60)}@xn--bcher-kva.example`;
    const d = decideRecipient(t, { recipient: long, sender: '' });
    expect(d.action === 'reject' && [d.reason, formatReply(d), d.route?.name]).toEqual([
      'rewrite_invalid',
      `553 5.1.3 Recipient address ${long} cannot be rewritten to a valid address`,
      'a/archive',
    ]);
  });
  it('explains the rewriting (mailplus route)', () => {
    const e = explainEnvelope(t, { from: '', to: ['bob@a.org', 'ceo@a.org'] });
    expect(e.recipients.map((r) => [r.rewrittenTo, r.rewriteTemplate])).toEqual([
      ['bob@mail.internal.example', '${local}@mail.internal.example'],
      [undefined, undefined],
    ]);
    // the same upstreams: one transaction may carry both
    expect(e.recipients[0].upstreamKey).toBe(e.recipients[1].upstreamKey);
    expect(formatExplanation(e)).toBe(
      [
        'bob@a.org: relay via route a/sales (tenant a, pattern *@a.org)',
        '  rewritten to bob@mail.internal.example (template ${local}@mail.internal.example)',
        '  1. mx.a.org:25 (tls opportunistic)',
        'ceo@a.org: relay via route a/ceo (tenant a, pattern ceo@a.org)',
        '  1. mx.a.org:25 (tls opportunistic)',
        '',
      ].join('\n'),
    );
  });
  it('refuses a relay config with a broken template', () => {
    expect(() => table(tenant('a', ['a.org'], [rewriting('a/x', ['*@a.org'], '${nope}@x.example')]))).toThrow(
      'relay config: route a/x: forward.rewrite.recipient: invalid recipient template "${nope}@x.example": unknown variable',
    );
  });
});
