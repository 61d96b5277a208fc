// Consent-gated capture in the control plane, on a real API server: a TenantPolicy with a valid
// troubleshooting consent is published with its capture (the clock is an input of the compile),
// the start is recorded as an Event on the TenantPolicy and an audit log line, and when the
// consent expires the operator recompiles on its own, drops the capture from the relay config,
// records the end, and reports the consent as invalid.
import { generateKeyPairSync } from 'node:crypto';
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
  inProcessOperatorOptions,
  listEvents,
  OPERATOR_NAMESPACE,
  startCluster,
  waitForStatus,
} from './support.ts';

const publicKey = generateKeyPairSync('x25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
const indent = (text: string, n: number) =>
  text
    .trim()
    .split('\n')
    .map((l) => ' '.repeat(n) + l)
    .join('\n');

function manifest(expiresAt: string): string {
  return `apiVersion: v1
kind: Namespace
metadata: { name: helpdesk }
---
apiVersion: mailplus.io/v1alpha1
kind: TenantPolicy
metadata: { name: helpdesk, namespace: helpdesk }
spec:
  domains: [helpdesk.example.com]
  troubleshooting:
    scope: ["broken@helpdesk.example.com"]
    consentReference: TICKET-4711
    approvedBy: dpo@helpdesk.example.com
    expiresAt: "${expiresAt}"
    maxMessages: 5
    publicKey: |
${indent(publicKey, 6)}
`;
}

async function publishedTenant(admin: k8s.KubeConfig) {
  const { CoreV1Api } = await import('@kubernetes/client-node');
  const cm = await admin.makeApiClient(CoreV1Api).readNamespacedConfigMap({
    name: CONFIGMAP,
    namespace: OPERATOR_NAMESPACE,
  });
  const config = JSON.parse(cm.data?.['relay-config.json'] ?? '{}') as {
    tenants?: Array<{ name: string; capture?: { consentReference: string } }>;
  };
  return config.tenants?.find((t) => t.name === 'helpdesk');
}

describe('troubleshooting consent in the operator', () => {
  let cp: ControlPlane;
  let admin: k8s.KubeConfig;
  let operator: Operator;
  const logs: string[] = [];

  beforeAll(async () => {
    cp = await startCluster();
    admin = adminClient(cp);
    operator = await startOperator(
      inProcessOperatorOptions(
        loadKubeClient(cp.kubeconfigFor('operator')),
        'op-consent',
        createLogger((line) => logs.push(line)),
        {
          leaderElect: true,
        },
      ),
    );
  }, 180_000);

  afterAll(async () => {
    await operator?.stop();
    await cp?.stop();
  }, 60_000);

  it('publishes a valid consent, records start and end, and stops capturing at expiry', async () => {
    // Timestamps have second precision; expire a few seconds from now.
    const expiresAt = new Date(Math.ceil(Date.now() / 1000) * 1000 + 8000)
      .toISOString()
      .replace('.000Z', 'Z');
    await kubectl(cp, ['apply', '-f', '-'], { input: manifest(expiresAt) });

    const tp = await waitForStatus(
      admin,
      'tenantpolicies',
      'helpdesk',
      'helpdesk',
      (o) => !!cond(o, 'Accepted'),
    );
    expect(cond(tp, 'Accepted')).toMatchObject({ status: 'True' });
    const published = await eventually(
      'capture in the relay config',
      async () => (await publishedTenant(admin))?.capture,
    );
    expect(published.consentReference).toBe('TICKET-4711');

    const started = await eventually('CaptureStarted event', async () =>
      (await listEvents(admin, 'helpdesk')).find((e) => e.reason === 'CaptureStarted'),
    );
    expect(started.regarding).toMatchObject({ kind: 'TenantPolicy', name: 'helpdesk' });
    expect(started.note).toContain('TICKET-4711');
    expect(started.note).toContain('dpo@helpdesk.example.com');
    const audit = logs.map((l) => JSON.parse(l)).filter((l) => l.msg === 'audit');
    expect(audit[0]).toMatchObject({
      event: 'capture started',
      tenant: 'helpdesk',
      consentReference: 'TICKET-4711',
      approvedBy: 'dpo@helpdesk.example.com',
    });
    expect(Date.parse(audit[0].expiresAt)).toBe(Date.parse(expiresAt));

    // Nothing changes in the API at expiry: the operator must notice the time by itself.
    const ended = await eventually(
      'CaptureEnded event',
      async () => (await listEvents(admin, 'helpdesk')).find((e) => e.reason === 'CaptureEnded'),
      20_000,
    );
    expect(ended.note).toContain('expired');
    expect((await publishedTenant(admin))?.capture).toBeUndefined();
    const after = await waitForStatus(
      admin,
      'tenantpolicies',
      'helpdesk',
      'helpdesk',
      (o) => cond(o, 'Accepted')?.reason === 'ConsentInvalid',
    );
    expect(cond(after, 'Accepted')?.message).toMatch(/expiresAt/);
    expect(
      logs.map((l) => JSON.parse(l)).filter((l) => l.msg === 'audit' && l.event === 'capture ended'),
    ).toHaveLength(1);
  }, 60_000);
});
