// Upgrading the CRDs tightens their schema (format: cidr, domain labels): an object stored under the
// old schema that the new one refuses stays in etcd, and the API server then refuses every write of
// its /status (kube-apiserver validates the whole object on a status write; only 1.28+ ratchets
// unchanged fields, and not on 1.20). Real API server: the resource is created under the previous
// CRDs (what clusters already hold, e.g. clientCIDRs 10.0.0.0/33), the current CRDs are applied,
// then the operator runs. Retrying such a write cannot succeed: the operator must say why (a
// Warning Event on the resource, naming the field) and wait for the object to change instead of
// failing its reconcile over and over.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Operator, startOperator } from '../../operator/operator.ts';
import { loadKubeClient } from '../../platform/kube/client.ts';
import { createLogger } from '../../platform/log.ts';
import { applyCrds, type ControlPlane, kubectl } from '../envtest/control-plane.ts';
import {
  adminClient,
  eventually,
  inProcessOperatorOptions,
  listEvents,
  REPO,
  sample,
  sleep,
  startCluster,
} from './support.ts';

/** The TenantPolicy CRD's clientCIDRs items before `format: cidr` (pattern only). */
function previousCrds(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mailplus-old-crds-'));
  for (const f of ['mailplus.io_tenantpolicies.yaml', 'mailplus.io_mailroutes.yaml']) {
    const text = readFileSync(join(REPO, 'crds', f), 'utf8');
    const old = text.replace(/\n\s+format: cidr\n/, '\n');
    if (f.includes('tenantpolicies')) expect(old).not.toBe(text);
    writeFileSync(join(dir, f), old);
  }
  return dir;
}

describe('a resource the upgraded CRD schema refuses', () => {
  let cp: ControlPlane;
  let admin: k8s.KubeConfig;
  let operator: Operator | undefined;
  let oldCrds: string;
  const logs: string[] = [];

  beforeAll(async () => {
    oldCrds = previousCrds();
    cp = await startCluster({ crdDir: oldCrds });
    admin = adminClient(cp);
    await kubectl(cp, ['create', 'namespace', 'legacy']);
    await kubectl(cp, ['apply', '-f', '-'], {
      input: `apiVersion: mailplus.io/v1alpha1
kind: TenantPolicy
metadata: { name: legacy, namespace: legacy }
spec:
  domains: [legacy.example]
  clientCIDRs: [10.0.0.0/33]
`,
    });
    // the chart upgrade: the current CRDs
    await applyCrds(cp, join(REPO, 'crds'));
  }, 180_000);

  afterAll(async () => {
    await operator?.stop();
    await cp?.stop();
    if (oldCrds) rmSync(oldCrds, { recursive: true, force: true });
  }, 60_000);

  it('gets a Warning Event naming the field, and no reconcile loop', async () => {
    operator = await startOperator(
      inProcessOperatorOptions(
        loadKubeClient(cp.kubeconfigFor('operator')),
        'op-refused',
        createLogger((line) => logs.push(line)),
        {
          batchWindowMs: 50,
        },
      ),
    );
    const op = operator;
    const event = await eventually(
      'a Warning Event on the TenantPolicy',
      async () =>
        (await listEvents(admin, 'legacy')).find(
          (e) => e.regarding?.name === 'legacy' && e.reason === 'StatusRefused',
        ),
      30_000,
    );
    expect(event.type).toBe('Warning');
    expect(event.note).toMatch(/spec\.clientCIDRs/);
    expect(event.note).toMatch(/10\.0\.0\.0\/33/);

    // the write is not retried while the object stays the same (a key queued while the first
    // write was in flight may run once more; after that nothing)
    const refused = async () =>
      sample(await op.metrics.registry.metrics(), 'mailplus_operator_status_writes_total', {
        result: 'refused',
      }) ?? 0;
    await sleep(2000);
    const settled = await refused();
    expect(settled).toBeGreaterThanOrEqual(1);
    await sleep(5000);
    expect(await refused()).toBe(settled);
    const text = await op.metrics.registry.metrics();
    expect(
      sample(text, 'controller_runtime_reconcile_errors_total', { controller: 'status' }) ?? 0,
      logs.filter((l) => l.includes('reconcile failed')).join('\n'),
    ).toBe(0);

    // fixing the spec lets the status through
    await kubectl(cp, [
      'patch',
      'tenantpolicy',
      'legacy',
      '-n',
      'legacy',
      '--type=merge',
      '-p',
      '{"spec":{"clientCIDRs":["10.0.0.0/8"]}}',
    ]);
    const co = admin.makeApiClient(k8s.CustomObjectsApi);
    await eventually(
      'status of the fixed generation',
      async () => {
        const o = (await co.getNamespacedCustomObject({
          group: 'mailplus.io',
          version: 'v1alpha1',
          namespace: 'legacy',
          plural: 'tenantpolicies',
          name: 'legacy',
        })) as { metadata: { generation: number }; status?: { observedGeneration?: number } };
        return o.status?.observedGeneration === o.metadata.generation;
      },
      30_000,
    );
  }, 120_000);
});
