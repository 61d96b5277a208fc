// A standby that takes over must carry over what the relays serve, not what the ConfigMap held when
// it last compiled. Real API server: the operator runs in-process as a standby (the leader Lease is
// held by a leader that is gone), compiles an invalid MailRoute before the old leader's publish of
// the route's last valid generation reaches it (here: the test writes exactly what that leader
// wrote, after the standby compiled), then takes over. The route's last valid generation must stay
// in force in the ConfigMap it publishes.
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeRelayConfigMap } from '../../contract/config/configmap.ts';
import type { MailRoute, TenantPolicy } from '../../operator/api/types.gen.ts';
import { compile } from '../../operator/compile/compile.ts';
import { type Operator, startOperator } from '../../operator/operator.ts';
import { applyConfigMap, encodeRelayConfig, relayConfigMap } from '../../operator/publish/configmap.ts';
import { loadKubeClient } from '../../platform/kube/client.ts';
import { createLogger } from '../../platform/log.ts';
import { type ControlPlane, kubectl } from '../envtest/control-plane.ts';
import {
  adminClient,
  CONFIGMAP,
  cond,
  eventually,
  inProcessOperatorOptions,
  OPERATOR_NAMESPACE,
  sleep,
  startCluster,
  waitForStatus,
} from './support.ts';

const NS = 'takeover';
const LEASE = 'mailplus-operator';
const POLICY = `apiVersion: mailplus.io/v1alpha1
kind: TenantPolicy
metadata: { name: takeover, namespace: ${NS} }
spec:
  domains: [takeover.example]
`;
const route = (action: string) => `apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: { name: inbox, namespace: ${NS} }
spec:
  match: { recipients: ["*@takeover.example"] }
${action}`;
const FORWARD = '  forward: { upstreams: [{ host: mx.takeover.example, port: 25 }] }\n';
// accepted by a 1.20 API server (no CEL), refused by the operator: both actions at once
const BOTH = `${FORWARD}  reject: { code: 550 }\n`;

describe('a standby that takes over keeps invalid resources at their last valid generation', () => {
  let cp: ControlPlane;
  let admin: k8s.KubeConfig;
  let operator: Operator | undefined;
  const logs: string[] = [];

  const configMap = () =>
    admin
      .makeApiClient(k8s.CoreV1Api)
      .readNamespacedConfigMap({ name: CONFIGMAP, namespace: OPERATOR_NAMESPACE });

  beforeAll(async () => {
    cp = await startCluster();
    admin = adminClient(cp);
    await kubectl(cp, ['create', 'namespace', NS]);
  }, 180_000);

  afterAll(async () => {
    await operator?.stop();
    await cp?.stop();
  }, 60_000);

  it('publishes the carried-over route after taking over, not its own stale compile', async () => {
    await kubectl(cp, ['apply', '-f', '-'], { input: `${POLICY}---\n${route(FORWARD)}` });
    const co = admin.makeApiClient(k8s.CustomObjectsApi);
    const read = async () => ({
      tenantPolicies: [
        (await co.getNamespacedCustomObject({
          group: 'mailplus.io',
          version: 'v1alpha1',
          namespace: NS,
          plural: 'tenantpolicies',
          name: 'takeover',
        })) as TenantPolicy,
      ],
      mailRoutes: [
        (await co.getNamespacedCustomObject({
          group: 'mailplus.io',
          version: 'v1alpha1',
          namespace: NS,
          plural: 'mailroutes',
          name: 'inbox',
        })) as MailRoute,
      ],
      services: [],
    });
    // what the old leader published while the route was valid (generation 1)
    const valid = compile(await read()).config;
    expect(valid.sources?.[`MailRoute/${NS}/inbox`]).toBe(1);

    // the old leader holds the Lease (and is gone); the route gets an invalid edit
    const coordination = admin.makeApiClient(k8s.CoordinationV1Api);
    await coordination.createNamespacedLease({
      namespace: OPERATOR_NAMESPACE,
      body: {
        metadata: { name: LEASE, namespace: OPERATOR_NAMESPACE },
        spec: {
          holderIdentity: 'gone-leader',
          leaseDurationSeconds: 3600,
          acquireTime: new k8s.V1MicroTime(),
          renewTime: new k8s.V1MicroTime(),
        },
      },
    });
    await kubectl(cp, ['apply', '-f', '-'], { input: route(BOTH) });

    operator = await startOperator(
      inProcessOperatorOptions(
        loadKubeClient(cp.kubeconfigFor('operator')),
        'op-standby',
        createLogger((line) => logs.push(line)),
        {
          leaderElect: true,
          leaseName: LEASE,
          leaseTimings: { leaseDurationSeconds: 4, renewDeadlineMs: 3000, retryPeriodMs: 300 },
          batchWindowMs: 50,
        },
      ),
    );
    const op = operator;
    await eventually(
      'the standby compiled the invalid generation',
      async () => op.lastCompile()?.statuses.get(`MailRoute/${NS}/inbox`)?.generation === 2,
      30_000,
    );
    expect(op.isLeader()).toBe(false);

    // the old leader's publish of generation 1 reaches the standby only now
    await applyConfigMap(
      loadKubeClient(cp.kubeconfigFor('operator')),
      relayConfigMap(OPERATOR_NAMESPACE, CONFIGMAP, valid, encodeRelayConfig(valid)),
    );
    await sleep(1000); // the standby's ConfigMap informer has seen it

    // the old leader's Lease goes away: the standby takes over and publishes
    await coordination.deleteNamespacedLease({ name: LEASE, namespace: OPERATOR_NAMESPACE });
    await eventually('the standby leads', async () => op.isLeader(), 30_000);
    await eventually(
      'the new leader reconciled the ConfigMap',
      async () => {
        const text = await op.metrics.registry.metrics();
        return /mailplus_operator_config_apply_total\{result="(success|unchanged)"\} [1-9]/.test(text);
      },
      30_000,
    );
    await sleep(500);

    // relays keep serving the route's last valid generation
    const served = decodeRelayConfigMap(await configMap());
    expect(served.sources?.[`MailRoute/${NS}/inbox`], logs.join('\n')).toBe(1);
    expect(served.tenants.flatMap((t) => t.routes.map((r) => r.name))).toContain(`${NS}/inbox`);
    const mr = await waitForStatus(admin, 'mailroutes', NS, 'inbox', (o) => !!cond(o, 'Programmed'));
    expect(cond(mr, 'Accepted')?.message).toMatch(/generation 1, the last valid one, stays in force/);
  }, 120_000);
});
