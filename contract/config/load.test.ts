import { describe, expect, it } from 'vitest';
import { canonicalJson, hashConfig, parseRelayConfig, RelayConfigError } from './load.ts';
import type { RelayConfig } from './types.gen.ts';

const config = (): RelayConfig => {
  const c: RelayConfig = {
    apiVersion: 'relay.mailplus.io/v1alpha1',
    kind: 'RelayConfig',
    hash: '',
    sources: { 'TenantPolicy/a/p': 1 },
    tenants: [
      {
        name: 'a',
        domains: ['a.org'],
        clientCIDRs: [],
        requireTLS: false,
        limits: {},
        routes: [
          {
            name: 'a/r',
            priority: 100,
            recipients: ['*@a.org'],
            senders: [],
            action: { forward: { upstreams: [{ host: 'mx', port: 25, tls: 'none', verify: true }] } },
          },
        ],
      },
    ],
  };
  c.hash = hashConfig(c);
  return c;
};
const problems = (text: string) => {
  try {
    parseRelayConfig(text, 'relay.json');
  } catch (e) {
    expect(e).toBeInstanceOf(RelayConfigError);
    return (e as RelayConfigError).problems;
  }
  return [];
};

describe('relay config', () => {
  it('canonical JSON sorts keys and ignores key order', () => {
    expect(canonicalJson({ b: 1, a: [{ d: 2, c: undefined }], e: 'x' })).toBe(
      '{"a":[{"d":2}],"b":1,"e":"x"}',
    );
    const c = config();
    const reverse = (v: unknown): unknown =>
      Array.isArray(v)
        ? v.map(reverse)
        : v && typeof v === 'object'
          ? Object.fromEntries(
              Object.entries(v)
                .reverse()
                .map(([k, x]) => [k, reverse(x)]),
            )
          : v;
    const reordered = reverse(c) as RelayConfig;
    expect(Object.keys(reordered)[0]).toBe('tenants');
    expect(hashConfig(reordered)).toBe(hashConfig(c));
  });
  it('parses a valid config', () => {
    expect(parseRelayConfig(JSON.stringify(config()), 'relay.json')).toEqual(config());
  });
  it('rejects JSON syntax errors', () => {
    expect(problems('{')[0]).toMatch(/^not valid JSON/);
  });
  it('names the JSON path of schema errors', () => {
    const c = config() as unknown as { tenants: Array<{ routes: Array<Record<string, unknown>> }> };
    c.tenants[0].routes[0].priority = 'high';
    c.tenants[0].routes[0].extra = true;
    expect(problems(JSON.stringify(c))).toEqual([
      '$.tenants[0].routes[0]: unknown field "extra"',
      '$.tenants[0].routes[0].priority: must be integer',
    ]);
  });
  it('verifies the hash', () => {
    const c = config();
    c.tenants[0].requireTLS = true;
    expect(problems(JSON.stringify(c))[0]).toMatch(
      /^\$\.hash: sha256:[0-9a-f]{64} does not match the content/,
    );
  });
});
