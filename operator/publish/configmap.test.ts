import { describe, expect, it } from 'vitest';
import { decodeRelayConfigMap, relayConfigText } from '../../contract/config/configmap.ts';
import { MANAGED_LABELS } from '../../contract/kube.ts';
import type { MailRoute, TenantPolicy } from '../api/types.gen.ts';
import { compile } from '../compile/compile.ts';
import { CONFIGMAP_LIMIT, configMapMatches, encodeRelayConfig, relayConfigMap } from './configmap.ts';

function fleet(routes: number, tenants: number): { tenantPolicies: TenantPolicy[]; mailRoutes: MailRoute[] } {
  const tenantPolicies: TenantPolicy[] = [];
  const mailRoutes: MailRoute[] = [];
  for (let t = 0; t < tenants; t++) {
    tenantPolicies.push({
      apiVersion: 'mailplus.io/v1alpha1',
      kind: 'TenantPolicy',
      metadata: {
        name: 'policy',
        namespace: `tenant-${t}`,
        generation: 1,
        creationTimestamp: '2026-01-01T00:00:00Z',
      },
      spec: { domains: [`t${t}.example.com`] },
    });
  }
  for (let r = 0; r < routes; r++) {
    const t = r % tenants;
    mailRoutes.push({
      apiVersion: 'mailplus.io/v1alpha1',
      kind: 'MailRoute',
      metadata: {
        name: `route-${r}`,
        namespace: `tenant-${t}`,
        generation: 1,
        creationTimestamp: '2026-01-01T00:00:00Z',
      },
      spec: {
        match: { recipients: [`user${r}@t${t}.example.com`] },
        forward: { upstreams: [{ host: `mx${r % 7}.t${t}.example.com`, port: 25, tls: 'opportunistic' }] },
      },
    });
  }
  return { tenantPolicies, mailRoutes };
}

describe('relay config ConfigMap', () => {
  it('small configs go to data as JSON, with only our labels and the hash annotation', () => {
    const { config } = compile({ ...fleet(10, 2), services: [] });
    const payload = encodeRelayConfig(config);
    expect(payload.compressed).toBe(false);
    const cm = relayConfigMap('ns', 'cm', config, payload);
    expect(cm.metadata?.labels).toEqual(MANAGED_LABELS);
    expect(cm.metadata?.annotations).toEqual({ 'mailplus.io/config-hash': config.hash });
    expect(cm.binaryData).toBeUndefined();
    expect(decodeRelayConfigMap(cm).hash).toBe(config.hash);
    expect(configMapMatches(cm, cm)).toBe(true);
    expect(configMapMatches({ ...cm, data: { 'relay-config.json': '{}' } }, cm)).toBe(false);
    expect(configMapMatches({ ...cm, metadata: { ...cm.metadata, labels: {} } }, cm)).toBe(false);
  });

  it('50k routes over 500 tenants: gzip binaryData, well under the 1 MiB ConfigMap limit, round-trips', () => {
    const { config } = compile({ ...fleet(50_000, 500), services: [] });
    const payload = encodeRelayConfig(config);
    expect(payload.compressed).toBe(true);
    expect(payload.jsonBytes).toBeGreaterThan(256 * 1024);
    const cm = relayConfigMap('ns', 'cm', config, payload);
    const stored = Buffer.byteLength(cm.binaryData?.['relay-config.json.gz'] ?? '');
    expect(stored).toBeLessThan(CONFIGMAP_LIMIT);
    expect(cm.data).toBeUndefined();
    expect(decodeRelayConfigMap(cm).sources?.['MailRoute/tenant-0/route-0']).toBe(1);
  }, 60_000);

  it('names the keys when a ConfigMap holds no relay config', () => {
    expect(() => relayConfigText({ metadata: { namespace: 'n', name: 'c' }, data: {} })).toThrow(
      /ConfigMap n\/c has neither data\["relay-config.json"\] nor binaryData\["relay-config.json.gz"\]/,
    );
  });
});
