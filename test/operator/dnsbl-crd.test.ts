// TenantPolicy spec.dnsbl on a real kube-apiserver: the CRD's defaults and refusals are the API
// server's, and what it stores compiles into the relay's tenant DNSBL config.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TenantPolicy } from '../../operator/api/types.gen.ts';
import { compile } from '../../operator/compile/compile.ts';
import { type ControlPlane, kubectl } from '../envtest/control-plane.ts';
import { startCluster } from './support.ts';

describe('TenantPolicy spec.dnsbl (real API server)', () => {
  let cp: ControlPlane;
  beforeAll(async () => {
    cp = await startCluster();
    await kubectl(cp, ['create', 'namespace', 'acme']);
  }, 180_000);
  afterAll(async () => {
    await cp?.stop();
  }, 60_000);

  const policy = (dnsbl: string) => `apiVersion: mailplus.io/v1alpha1
kind: TenantPolicy
metadata: {name: policy, namespace: acme}
spec:
  domains: [acme.test]
  dnsbl: ${dnsbl}
`;

  it('stores it with the defaults filled in, and it compiles to the relay form', async () => {
    await kubectl(cp, ['apply', '-f', '-'], {
      input: policy(
        '{zones: [{zone: zen.example, match: ["127.0.0.[2..11]"]}, {zone: wl.example, weight: -1}]}',
      ),
    });
    const stored = JSON.parse(
      await kubectl(cp, ['get', 'tenantpolicy', 'policy', '-n', 'acme', '-o', 'json']),
    ) as TenantPolicy;
    expect(stored.spec.dnsbl).toEqual({
      zones: [
        { zone: 'zen.example', weight: 1, match: ['127.0.0.[2..11]'] },
        { zone: 'wl.example', weight: -1 },
      ],
      threshold: 1,
      onLookupFailure: 'Accept',
    });
    const { config } = compile({ tenantPolicies: [stored], mailRoutes: [], services: [] });
    expect(config.tenants[0].dnsbl).toEqual({
      zones: [
        { zone: 'zen.example', weight: 1, match: ['127.0.0.[2..11]'] },
        { zone: 'wl.example', weight: -1 },
      ],
      threshold: 1,
      allow: [],
      failClosed: false,
    });
  });

  it('refuses what the schema rules out, naming the field', async () => {
    const refused = async (dnsbl: string) =>
      kubectl(cp, ['apply', '-f', '-'], { input: policy(dnsbl) }).then(
        () => '',
        (err: Error) => err.message,
      );
    expect(await refused('{zones: [{zone: zen.example}], onLookupFailure: Maybe}')).toMatch(
      /spec\.dnsbl\.onLookupFailure: Unsupported value: "Maybe"/,
    );
    expect(await refused('{zones: []}')).toMatch(/spec\.dnsbl\.zones: Invalid value: 0/);
    expect(await refused('{zones: [{zone: zen.example}], threshold: 0}')).toMatch(/spec\.dnsbl\.threshold/);
    expect(await refused('{zones: [{zone: zen.example}], allow: ["not-a-cidr"]}')).toMatch(
      /spec\.dnsbl\.allow/,
    );
  });
});
