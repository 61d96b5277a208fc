// Status writes against a concurrent writer, on a real API server: the operator runs in-process
// (operator ServiceAccount, real RBAC) with a hook that lets another field manager write a
// condition of its own between the operator's read and its write. The write carries the
// resourceVersion it was computed from, so it gets 409; the operator re-reads and retries, and the
// foreign condition survives (the operator sends the full list: its own conditions recomputed,
// the others as read), also across later rewrites. Without relays, Programmed is False/NoRelays.
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Operator, startOperator } from '../../operator/operator.ts';
import { loadKubeClient } from '../../platform/kube/client.ts';
import { createLogger } from '../../platform/log.ts';
import { type ControlPlane, kubectl } from '../envtest/control-plane.ts';
import { adminClient, cond, inProcessOperatorOptions, startCluster, waitForStatus } from './support.ts';

const MANIFEST = `apiVersion: v1
kind: Namespace
metadata: { name: race }
---
apiVersion: mailplus.io/v1alpha1
kind: TenantPolicy
metadata: { name: race, namespace: race }
spec:
  domains: [race.example.com]
---
apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: { name: contested, namespace: race }
spec:
  match: { recipients: ["*@race.example.com"] }
  reject: { code: 550 }
`;

describe('status writes under concurrent writers (409) keep foreign conditions', () => {
  let cp: ControlPlane;
  let admin: k8s.KubeConfig;
  let operator: Operator;
  const attempts: number[] = [];
  const logs: string[] = [];
  let injected = 0;

  // Another controller's well-behaved read-modify-write of its own condition (merge patch with the
  // full list and the resourceVersion it read). On 1.20 a server-side apply would replace the whole
  // list (see operator/status/writer.ts), so the other controller cannot use it either.
  const foreignWrite = async (message: string) => {
    const co = admin.makeApiClient(k8s.CustomObjectsApi);
    const ref = {
      group: 'mailplus.io',
      version: 'v1alpha1',
      plural: 'mailroutes',
      namespace: 'race',
      name: 'contested',
    };
    const o = (await co.getNamespacedCustomObject(ref)) as {
      metadata: { resourceVersion: string };
      status?: { conditions?: Array<{ type: string }> };
    };
    const mine = {
      type: 'ExternalCheck',
      status: 'True',
      reason: 'Checked',
      message,
      lastTransitionTime: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
    };
    const conditions = [...(o.status?.conditions ?? []).filter((c) => c.type !== 'ExternalCheck'), mine];
    await co.patchNamespacedCustomObjectStatus(
      {
        ...ref,
        fieldManager: 'external-checker',
        body: { metadata: { resourceVersion: o.metadata.resourceVersion }, status: { conditions } },
      },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
  };

  beforeAll(async () => {
    cp = await startCluster();
    admin = adminClient(cp);
    await kubectl(cp, ['apply', '-f', '-'], { input: MANIFEST });
    operator = await startOperator(
      inProcessOperatorOptions(
        loadKubeClient(cp.kubeconfigFor('operator')),
        'op-inproc',
        createLogger((line) => logs.push(line)),
        {
          leaderElect: true,
          beforeStatusWrite: async (target, attempt) => {
            if (target.name !== 'contested') return;
            attempts.push(attempt);
            // the first write of each generation races with another controller
            if (attempt === 1 && injected < 2) {
              injected++;
              await foreignWrite(`external check ${injected}`);
            }
          },
        },
      ),
    );
  }, 180_000);

  afterAll(async () => {
    await operator?.stop();
    await cp?.stop();
  }, 60_000);

  it("gets 409, re-reads, retries, and leaves the other manager's condition alone", async () => {
    const o = await waitForStatus(admin, 'mailroutes', 'race', 'contested', (x) => !!cond(x, 'Accepted'));
    expect(attempts).toContain(2);
    expect(cond(o, 'ExternalCheck')).toMatchObject({ status: 'True', message: 'external check 1' });
    expect(cond(o, 'Accepted')).toMatchObject({ status: 'True', reason: 'Accepted' });
    expect(cond(o, 'ResolvedRefs')?.status).toBe('True');
    expect(cond(o, 'Programmed')).toMatchObject({ status: 'False', reason: 'NoRelays' });
    expect(cond(o, 'Ready')).toMatchObject({ status: 'False', reason: 'NoRelays' });
    const metrics = await operator.metrics.registry.getSingleMetricAsString(
      'mailplus_operator_status_writes_total',
    );
    expect(metrics).toMatch(/result="conflict"} [1-9]/);
    const raw = (await admin.makeApiClient(k8s.CustomObjectsApi).getNamespacedCustomObject({
      group: 'mailplus.io',
      version: 'v1alpha1',
      plural: 'mailroutes',
      namespace: 'race',
      name: 'contested',
    })) as { metadata: { managedFields: Array<{ manager: string }> } };
    const managers = raw.metadata.managedFields.map((f) => f.manager);
    expect(managers).toContain('external-checker');
    expect(managers).toContain('mailplus-operator');
  }, 60_000);

  it('a later rewrite (new generation) still keeps the foreign condition; lastTransitionTime only moves on flips', async () => {
    const before = await waitForStatus(
      admin,
      'mailroutes',
      'race',
      'contested',
      (x) => !!cond(x, 'Accepted'),
    );
    await kubectl(cp, [
      'patch',
      'mailroute',
      '-n',
      'race',
      'contested',
      '--type=merge',
      '-p',
      '{"spec":{"priority":7}}',
    ]);
    const after = await waitForStatus(
      admin,
      'mailroutes',
      'race',
      'contested',
      (x) => cond(x, 'Accepted')?.observedGeneration === 2,
    );
    expect(cond(after, 'ExternalCheck')).toMatchObject({ reason: 'Checked', message: 'external check 2' });
    // Accepted stayed True: its lastTransitionTime did not move
    expect(cond(after, 'Accepted')?.lastTransitionTime).toBe(cond(before, 'Accepted')?.lastTransitionTime);
    expect(attempts.filter((a) => a === 2).length).toBeGreaterThanOrEqual(2);
  }, 60_000);

  it("another writer's status-only change makes the operator look at that object's status only: no recompile, no sweep over every object", async () => {
    await waitForStatus(admin, 'mailroutes', 'race', 'contested', (x) => !!cond(x, 'Accepted'));
    const reconciles = async (controller: string) => {
      const text = await operator.metrics.registry.getSingleMetricAsString(
        'controller_runtime_reconcile_total',
      );
      let n = 0;
      for (const m of text.matchAll(/controller="([^"]+)"[^}]*} (\d+)/g))
        if (m[1] === controller) n += Number(m[2]);
      return n;
    };
    const aggregate = await reconciles('relayconfig');
    const status = await reconciles('status');
    // each of three updates reaches the status controller (one at a time: a work queue rightly
    // folds updates of one object that arrive before it is processed into one reconcile) ...
    let seen = status;
    for (let i = 0; i < 3; i++) {
      await foreignWrite(`status-only change ${i}`);
      const deadline = Date.now() + 20_000;
      while ((await reconciles('status')) <= seen && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      const now = await reconciles('status');
      expect(now, `status reconcile after change ${i}`).toBeGreaterThan(seen);
      seen = now;
    }
    // ... past the aggregate batch window, which none of them started
    await new Promise((r) => setTimeout(r, 1000));
    expect(await reconciles('relayconfig')).toBe(aggregate);
    const o = await waitForStatus(admin, 'mailroutes', 'race', 'contested', (x) => !!cond(x, 'Accepted'));
    expect(cond(o, 'ExternalCheck')).toMatchObject({ message: 'status-only change 2' });
    expect(cond(o, 'Accepted')).toMatchObject({ status: 'True', reason: 'Accepted' });
  }, 60_000);
});
