// biome-ignore-all lint/suspicious/noTemplateCurlyInString: recipient templates use ${…}
import { describe, expect, it } from 'vitest';
import { validateMailRoute, validateTenantPolicy } from './validate.ts';

const tp = (spec: unknown, metadata: object = { name: 'p', namespace: 'a' }) => ({
  apiVersion: 'mailplus.io/v1alpha1',
  kind: 'TenantPolicy',
  metadata,
  spec,
});
const mr = (spec: unknown) => ({
  apiVersion: 'mailplus.io/v1alpha1',
  kind: 'MailRoute',
  metadata: { name: 'r', namespace: 'team-a' },
  spec,
});
const fields = (r: { errors: Array<{ field: string; message: string }> }) =>
  r.errors.map((e) => `${e.field}: ${e.message}`);

describe('validateTenantPolicy', () => {
  it('applies defaults to a copy', () => {
    const input = tp({ domains: ['a.org'] });
    const r = validateTenantPolicy(input, 'x.yaml');
    expect(r.errors).toEqual([]);
    expect(r.value?.spec.requireTLS).toBe(false);
    expect((input.spec as { requireTLS?: boolean }).requireTLS).toBeUndefined();
  });
  it('the CRD schema stays the gate where the shared size grammar is wider (10K is a flag spelling)', () => {
    // contract/grammar/size.ts reads 10K (relay flags); Kubernetes quantities spell it 10k
    const r = validateTenantPolicy(tp({ domains: ['a.org'], limits: { maxMessageSize: '10K' } }), 'x.yaml');
    expect(r.value).toBeUndefined();
    expect(r.errors.map((e) => e.field)).toContain('spec.limits.maxMessageSize');
    expect(
      validateTenantPolicy(tp({ domains: ['a.org'], limits: { maxMessageSize: '10k' } })).errors,
    ).toEqual([]);
  });
  it('reports schema and semantic errors with field paths, file and resource', () => {
    const r = validateTenantPolicy(
      tp({
        domains: ['a.org', 'A.org', 'x.*.org', 'bad domain'],
        clientCIDRs: ['10.0.0.0/33', '10.0.0.0/8'],
        requireTLS: 'yes',
        limits: { maxMessageSize: '10MB', maxRecipients: 0, rate: { messages: 1, per: '1d' } },
        privacys: {},
      }),
      'tenants.yaml',
    );
    expect(r.value).toBeUndefined();
    expect(r.errors[0]).toMatchObject({ file: 'tenants.yaml', resource: 'TenantPolicy a/p' });
    expect(fields(r)).toEqual(
      expect.arrayContaining([
        'spec.privacys: unknown field (check the spelling against the CRD: kubectl explain)',
        'spec.requireTLS: must be boolean',
        'spec.limits.maxRecipients: must be >= 1',
        expect.stringMatching(/^spec\.domains\[3\]: invalid domain "bad domain"/),
        expect.stringMatching(/^spec\.limits\.maxMessageSize: "10MB" is not a quantity/),
        expect.stringMatching(/^spec\.limits\.rate\.per: "1d" is not a duration/),
        'spec.domains[1]: duplicate of spec.domains[0] (a.org)',
        expect.stringMatching(/^spec\.domains\[2\]: .*wildcard must be the whole first label/),
        expect.stringMatching(/^spec\.clientCIDRs\[0\]: invalid CIDR .*prefix longer than 32/),
      ]),
    );
  });
  it('the CRD schema itself refuses malformed CIDRs and domains (format: cidr, label pattern)', async () => {
    const { crdSchemas } = await import('../api/schemas.gen.ts');
    type Item = { items: { format?: string; pattern: string } };
    const spec = (
      crdSchemas.TenantPolicy as unknown as {
        properties: { spec: { properties: { clientCIDRs: Item; domains: Item } } };
      }
    ).properties.spec.properties;
    expect(spec.clientCIDRs.items.format).toBe('cidr');
    const domain = new RegExp(spec.domains.items.pattern, 'u');
    for (const ok of ['a.org', '*.a.org', 'bücher.de', 'example.com.', 'x_y.org'])
      expect(domain.test(ok), ok).toBe(true);
    for (const bad of ['a..org', '.a.org', '-a.org', 'x.*.org', '*a.org', 'a.org..'])
      expect(domain.test(bad), bad).toBe(false);
    // the same verdict in code, with one message per field
    expect(fields(validateTenantPolicy(tp({ domains: ['a..org'], clientCIDRs: ['10.0.0.0/33'] })))).toEqual([
      'spec.domains[0]: invalid domain "a..org": bad label ""; use example.com or *.example.com',
      'spec.clientCIDRs[0]: invalid CIDR "10.0.0.0/33": prefix longer than 32',
    ]);
  });
  it('requires domains and checks metadata', () => {
    expect(fields(validateTenantPolicy(tp({}, { namespace: 'Bad_NS' })))).toEqual([
      'metadata.name: required field is missing',
      'metadata.namespace: must be a lower-case DNS label (a-z, 0-9, "-")',
      'spec.domains: required field is missing',
    ]);
    expect(fields(validateTenantPolicy(tp({ domains: [] })))).toEqual([
      'spec.domains: must NOT have fewer than 1 items',
    ]);
  });
});

describe('validateMailRoute', () => {
  it('defaults priority, tls, insecureSkipVerify and reject code', () => {
    const r = validateMailRoute(
      mr({ match: { recipients: ['a@a.org'] }, forward: { upstreams: [{ host: 'mx' }] } }),
    );
    expect(r.value?.spec).toEqual({
      priority: 100,
      match: { recipients: ['a@a.org'] },
      forward: { upstreams: [{ host: 'mx', tls: 'opportunistic', insecureSkipVerify: false }] },
    });
    const rej = validateMailRoute(mr({ match: { recipients: ['a@a.org'] }, reject: {} }));
    expect(rej.value?.spec.reject).toEqual({ code: 550 });
    // the defaulted code is what an enhanced code must agree with
    expect(
      fields(
        validateMailRoute(mr({ match: { recipients: ['a@a.org'] }, reject: { enhancedCode: '4.7.1' } })),
      ),
    ).toEqual(['spec.reject.enhancedCode: 4.7.1 does not agree with code 550: use 5.x.x']);
  });
  it.each([
    [{ match: { recipients: ['a@a.org'] } }, 'spec: set exactly one action: forward or reject'],
    [
      { match: { recipients: ['a@a.org'] }, reject: {}, forward: { upstreams: [{ host: 'mx' }] } },
      'spec: set exactly one action: forward or reject, not both',
    ],
    [
      { match: { recipients: ['x*@a.org'] }, reject: {} },
      'spec.match.recipients[0]: invalid pattern "x*@a.org": "*" must be the whole local part, as in *@example.com',
    ],
    [
      { match: { recipients: ['a@a.org', 'A@A.org'] }, reject: {} },
      'spec.match.recipients[1]: duplicate of spec.match.recipients[0] (a@a.org)',
    ],
    [
      { match: { recipients: ['<>'] }, reject: {} },
      'spec.match.recipients[0]: "<>" (the null sender) is only allowed in senders',
    ],
    [
      { match: { recipients: ['a@a.org'], senders: ['user@*.x.org'] }, reject: {} },
      expect.stringMatching(/^spec\.match\.senders\[0\]: .*subdomain wildcard/),
    ],
    [
      { match: { recipients: ['a@a.org'] }, reject: { code: 450, enhancedCode: '5.7.1' } },
      'spec.reject.enhancedCode: 5.7.1 does not agree with code 450: use 4.x.x',
    ],
    [{ match: { recipients: ['a@a.org'] }, reject: { code: 250 } }, 'spec.reject.code: must be >= 400'],
    [
      { match: { recipients: ['a@a.org'] }, reject: { message: 'two\nlines' } },
      'spec.reject.message: only printable ASCII, no line breaks or tabs',
    ],
    [
      { match: { recipients: ['a@a.org'] }, reject: { message: 'x'.repeat(201) } },
      'spec.reject.message: must NOT have more than 200 characters',
    ],
    [
      { match: { recipients: ['a@a.org'] }, forward: { upstreams: [] } },
      'spec.forward.upstreams: must NOT have fewer than 1 items',
    ],
    [
      { match: { recipients: ['a@a.org'] }, forward: { upstreams: [{}] } },
      'spec.forward.upstreams[0]: set exactly one of host or service',
    ],
    [
      {
        match: { recipients: ['a@a.org'] },
        forward: { upstreams: [{ service: { name: 'mx', port: 25 }, port: 25 }] },
      },
      'spec.forward.upstreams[0].port: port applies to host; a service upstream names its port in service.port',
    ],
    [
      { match: { recipients: ['a@a.org'] }, forward: { upstreams: [{ host: 'mx', tls: 'sometimes' }] } },
      'spec.forward.upstreams[0].tls: must be one of: none, opportunistic, required, implicit',
    ],
    [
      { match: { recipients: ['a@a.org'] }, forward: { upstreams: [{ host: 'mx..x' }] } },
      'spec.forward.upstreams[0].host: "mx..x" is not a DNS name or IP address',
    ],
    [
      {
        match: { recipients: ['a@a.org'] },
        forward: { upstreams: [{ service: { name: 'mx', port: 'SMTP!' } }] },
      },
      'spec.forward.upstreams[0].service.port: must be a port number 1-65535 or a port name',
    ],
    [
      {
        match: { recipients: ['a@a.org'] },
        forward: { upstreams: [{ service: { name: 'mx', port: true } }] },
      },
      'spec.forward.upstreams[0].service.port: must be an integer or a string',
    ],
  ])('%j -> %s', (spec, message) => {
    expect(fields(validateMailRoute(mr(spec)))).toEqual([message]);
  });
  it('accepts IP and IPv6 hosts', () => {
    for (const host of ['127.0.0.1', '::1', '[2001:db8::1]', 'mx.example.net']) {
      expect(
        fields(
          validateMailRoute(mr({ match: { recipients: ['a@a.org'] }, forward: { upstreams: [{ host }] } })),
        ),
      ).toEqual([]);
    }
  });
});

describe('validateMailRoute: forward.rewrite.recipient', () => {
  const withTemplate = (recipient: unknown) =>
    mr({
      match: { recipients: ['a@a.org'] },
      forward: { rewrite: { recipient }, upstreams: [{ host: 'mx' }] },
    });
  it('accepts the documented grammar', () => {
    for (const t of [
      '${local}@mail.internal.example',
      '${user}${tag?+}${tag}@${domain}.internal',
      'a$$b@x.example',
    ])
      expect(fields(validateMailRoute(withTemplate(t)))).toEqual([]);
  });
  it.each([
    ['${lokal}@x.example', 'unknown variable "${lokal}": use ${local}, ${user}, ${tag} or ${domain}'],
    ['${local}@${user}.example', 'only ${domain} may appear after "@"'],
    // the schema's pattern refuses these too; the message from code says more
    ['${local}', 'expected exactly one "@" outside ${…}'],
    ['a@b@x.example', 'expected exactly one "@" outside ${…}'],
  ])('%s names resource and field', (template, message) => {
    const errors = validateMailRoute(withTemplate(template)).errors;
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({
      resource: 'MailRoute team-a/r',
      field: 'spec.forward.rewrite.recipient',
    });
    expect(errors[0].message).toContain(message);
  });
  it('is a forward setting: unknown under reject, required inside rewrite', () => {
    expect(
      fields(
        validateMailRoute(
          mr({ match: { recipients: ['a@a.org'] }, forward: { rewrite: {}, upstreams: [{ host: 'mx' }] } }),
        ),
      ),
    ).toEqual(['spec.forward.rewrite.recipient: required field is missing']);
  });
});

describe('validateTenantPolicy: spec.authentication', () => {
  it('fills the defaults the compile step reads (mode, holdBytes, quarantine, onLookupFailure)', () => {
    const off = validateTenantPolicy(tp({ domains: ['a.org'], authentication: {} }));
    expect(off.value?.spec.authentication).toEqual({
      mode: 'none',
      holdBytes: 262144,
      quarantine: 'deliver',
      onLookupFailure: 'Defer',
    });
    const on = validateTenantPolicy(tp({ domains: ['a.org'], authentication: { mode: 'enforce' } }));
    expect(on.value?.spec.authentication).toMatchObject({ mode: 'enforce', holdBytes: 262144 });
  });
});

describe('validateTenantPolicy: spec.dnsbl', () => {
  it('accepts a postscreen-style policy and fills the defaults', () => {
    const r = validateTenantPolicy(
      tp({
        domains: ['a.org'],
        dnsbl: {
          zones: [
            { zone: 'zen.example', weight: 2, match: ['127.0.0.[2..11]'] },
            { zone: 'wl.example', weight: -1 },
            { zone: 'b.example' },
          ],
          allow: ['192.0.2.0/24'],
        },
      }),
    );
    expect(r.errors).toEqual([]);
    expect(r.value?.spec.dnsbl).toMatchObject({
      threshold: 1,
      onLookupFailure: 'Accept',
      zones: [{}, {}, { weight: 1 }],
    });
  });
  it('names each bad field: zone, duplicate, return-code pattern, CIDR, only negative weights', () => {
    expect(
      fields(
        validateTenantPolicy(
          tp({
            domains: ['a.org'],
            dnsbl: {
              zones: [
                { zone: 'not a zone', weight: -1 },
                { zone: 'wl.example', weight: -1, match: ['127.0.0'] },
                { zone: 'WL.example', weight: -2 },
              ],
              allow: ['10.0.0.0/33'],
            },
          }),
        ),
      ),
    ).toEqual([
      'spec.dnsbl.zones[0].zone: "not a zone" is not a DNS zone name; use e.g. zen.spamhaus.org',
      'spec.dnsbl.zones[1].match[0]: "127.0.0" is not a return-code pattern; use e.g. 127.0.0.2, 127.0.0.[2..11] or 127.0.0.[2;4]',
      'spec.dnsbl.zones[2].zone: duplicate of spec.dnsbl.zones[1] (wl.example); list each zone once',
      'spec.dnsbl.zones: every zone has a negative weight, so nothing can ever be refused; give a blocklist a positive weight',
      'spec.dnsbl.allow[0]: invalid CIDR "10.0.0.0/33": prefix longer than 32',
    ]);
  });
});
