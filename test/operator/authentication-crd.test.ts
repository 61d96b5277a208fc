// TenantPolicy spec.authentication on a real kube-apiserver: the CRD's defaults and refusals are the
// API server's, and what it stores compiles into the relay's tenant authentication config.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TenantPolicy } from '../../operator/api/types.gen.ts';
import { compile } from '../../operator/compile/compile.ts';
import { type ControlPlane, kubectl } from '../envtest/control-plane.ts';
import { startCluster } from './support.ts';

describe('TenantPolicy spec.authentication (real API server)', () => {
  let cp: ControlPlane;
  beforeAll(async () => {
    cp = await startCluster();
    await kubectl(cp, ['create', 'namespace', 'acme']);
  }, 180_000);
  afterAll(async () => {
    await cp?.stop();
  }, 60_000);

  const policy = (authentication: string) => `apiVersion: mailplus.io/v1alpha1
kind: TenantPolicy
metadata: {name: policy, namespace: acme}
spec:
  domains: [acme.test]
  authentication: ${authentication}
`;
  const stored = async () =>
    JSON.parse(
      await kubectl(cp, ['get', 'tenantpolicy', 'policy', '-n', 'acme', '-o', 'json']),
    ) as TenantPolicy;

  it('stores it with the defaults filled in, and it compiles to the relay form', async () => {
    await kubectl(cp, ['apply', '-f', '-'], { input: policy('{mode: enforce, authservId: mx.acme.test}') });
    const tp = await stored();
    expect(tp.spec.authentication).toEqual({
      mode: 'enforce',
      authservId: 'mx.acme.test',
      holdBytes: 262144,
      quarantine: 'deliver',
      onLookupFailure: 'Defer',
    });
    const { config } = compile({ tenantPolicies: [tp], mailRoutes: [], services: [] });
    expect(config.tenants[0].authentication).toEqual({
      mode: 'enforce',
      authservId: 'mx.acme.test',
      holdBytes: 262144,
      rejectQuarantine: false,
      deferOnLookupFailure: true,
    });
    // an empty object means none: nothing for the relay to do
    await kubectl(cp, ['apply', '-f', '-'], { input: policy('{}') });
    const off = await stored();
    expect(off.spec.authentication).toMatchObject({ mode: 'none' });
    expect(
      compile({ tenantPolicies: [off], mailRoutes: [], services: [] }).config.tenants[0],
    ).not.toHaveProperty('authentication');
  });

  it('refuses what the schema rules out, naming the field', async () => {
    const refused = async (a: string) =>
      kubectl(cp, ['apply', '-f', '-'], { input: policy(a) }).then(
        () => '',
        (err: Error) => err.message,
      );
    // YAML 1.1 (kubectl) reads an unquoted off as false: why the mode is called none
    expect(await refused('{mode: off}')).toMatch(/spec\.authentication\.mode: Invalid value: "boolean"/);
    expect(await refused('{mode: strict}')).toMatch(
      /spec\.authentication\.mode: Unsupported value: "strict"/,
    );
    expect(await refused('{mode: annotate, authservId: "mx.acme.test; dkim=pass"}')).toMatch(
      /spec\.authentication\.authservId/,
    );
    expect(await refused('{mode: annotate, holdBytes: 1024}')).toMatch(/spec\.authentication\.holdBytes/);
    expect(await refused('{mode: enforce, quarantine: drop}')).toMatch(/spec\.authentication\.quarantine/);
  });
});
