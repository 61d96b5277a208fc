// A relay-config write the API server refuses for what it is fails the same way however often it
// is sent again. Real API server: the published ConfigMap is marked `immutable: true` (a hand edit,
// a policy engine), so every later apply answers 422. The operator must say so on the resources
// whose changes are not published (Programmed=False, reason PublishRefused, naming the ConfigMap
// and the API server's message; a Warning Event on the tenant's TenantPolicy) and stop retrying
// with backoff; once someone removes the cause (deletes the ConfigMap), the watch brings the change
// out at once.
import type * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Operator, startOperator } from '../../operator/operator.ts';
import { loadKubeClient } from '../../platform/kube/client.ts';
import { createLogger } from '../../platform/log.ts';
import { type ControlPlane, kubectl } from '../envtest/control-plane.ts';
import {
  adminClient,
  CONFIGMAP,
  cond,
  eventually,
  getResource,
  inProcessOperatorOptions,
  listEvents,
  OPERATOR_NAMESPACE,
  sample,
  sleep,
  startCluster,
  waitForStatus,
} from './support.ts';

const manifest = (code: number) => `apiVersion: v1
kind: Namespace
metadata: { name: frozen }
---
apiVersion: mailplus.io/v1alpha1
kind: TenantPolicy
metadata: { name: frozen, namespace: frozen }
spec:
  domains: [frozen.example]
---
apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: { name: bounce, namespace: frozen }
spec:
  match: { recipients: ["*@frozen.example"] }
  reject: { code: ${code} }
`;

describe('a relay config the API server refuses to store', () => {
  let cp: ControlPlane;
  let admin: k8s.KubeConfig;
  let operator: Operator;
  const logs: string[] = [];

  const configMapHash = async () =>
    (
      await kubectl(cp, [
        'get',
        'configmap',
        CONFIGMAP,
        '-n',
        OPERATOR_NAMESPACE,
        '-o',
        'jsonpath={.metadata.annotations.mailplus\\.io/config-hash}',
      ])
    ).trim();
  const metric = async (name: string, labels: Record<string, string>) =>
    sample(await operator.metrics.registry.metrics(), name, labels) ?? 0;

  beforeAll(async () => {
    cp = await startCluster();
    admin = adminClient(cp);
    await kubectl(cp, ['apply', '-f', '-'], { input: manifest(550) });
    operator = await startOperator(
      inProcessOperatorOptions(
        loadKubeClient(cp.kubeconfigFor('operator')),
        'op-frozen',
        createLogger((line) => logs.push(line)),
        {
          batchWindowMs: 50,
        },
      ),
    );
  }, 180_000);

  afterAll(async () => {
    await operator?.stop();
    await cp?.stop();
  }, 60_000);

  it('is a condition and a Warning Event on the resources concerned, not a backoff loop', async () => {
    await waitForStatus(
      admin,
      'mailroutes',
      'frozen',
      'bounce',
      (o) => cond(o, 'Accepted')?.status === 'True',
    );
    const first = await eventually('the ConfigMap published', async () => {
      const hash = await configMapHash();
      return hash === operator.lastCompile()?.config.hash ? hash : undefined;
    });
    await kubectl(cp, [
      'patch',
      'configmap',
      CONFIGMAP,
      '-n',
      OPERATOR_NAMESPACE,
      '--type=merge',
      '-p',
      '{"immutable":true}',
    ]);
    await kubectl(cp, ['apply', '-f', '-'], { input: manifest(554) });

    const refused = await waitForStatus(
      admin,
      'mailroutes',
      'frozen',
      'bounce',
      (o) => cond(o, 'Programmed')?.reason === 'PublishRefused',
    );
    const programmed = cond(refused, 'Programmed');
    expect(programmed?.status).toBe('False');
    expect(programmed?.message).toContain(`${OPERATOR_NAMESPACE}/${CONFIGMAP}`);
    expect(programmed?.message).toMatch(/immutable/);
    expect(cond(refused, 'Ready')).toMatchObject({ status: 'False', reason: 'PublishRefused' });
    expect(cond(await getResource(admin, 'tenantpolicies', 'frozen', 'frozen'), 'Programmed')?.reason).toBe(
      'PublishRefused',
    );
    const event = await eventually('a Warning Event on the TenantPolicy', async () =>
      (await listEvents(admin, 'frozen')).find(
        (e) => e.regarding?.kind === 'TenantPolicy' && e.reason === 'PublishRefused',
      ),
    );
    expect(event.type).toBe('Warning');
    expect(event.note).toMatch(/immutable/);
    expect(await configMapHash()).toBe(first);

    // nothing is retried while nothing changes: no failed reconcile, no further write attempt
    await sleep(1000);
    const attempts = await metric('mailplus_operator_config_apply_total', { result: 'error' });
    expect(attempts).toBeGreaterThanOrEqual(1);
    await sleep(5000);
    expect(await metric('mailplus_operator_config_apply_total', { result: 'error' })).toBe(attempts);
    expect(
      await metric('controller_runtime_reconcile_errors_total', { controller: 'relayconfig' }),
      logs.filter((l) => l.includes('reconcile failed')).join('\n'),
    ).toBe(0);
    expect(await metric('mailplus_operator_tenants_held_back', { reason: 'PublishRefused' })).toBe(1);

    // the cause removed: the change goes out and the condition clears
    await kubectl(cp, ['delete', 'configmap', CONFIGMAP, '-n', OPERATOR_NAMESPACE]);
    await eventually('the change published', async () => {
      const hash = await configMapHash().catch(() => '');
      return hash !== '' && hash !== first && hash === operator.lastCompile()?.config.hash;
    });
    const after = await waitForStatus(
      admin,
      'mailroutes',
      'frozen',
      'bounce',
      (o) => cond(o, 'Programmed')?.reason !== 'PublishRefused',
    );
    expect(cond(after, 'Programmed')?.reason).toBe('NoRelays');
    expect(await metric('mailplus_operator_tenants_held_back', { reason: 'PublishRefused' })).toBe(0);
  }, 120_000);
});
