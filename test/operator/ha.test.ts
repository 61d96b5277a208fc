// High availability with two real operator processes on one Lease: one leads and writes, the
// other stays warm and writes nothing; SIGKILL of the leader → the standby takes over after the
// Lease expires (LeaseDuration 15 s) and publishes a later change; SIGTERM of a leader releases
// the Lease so the standby takes over at once.
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeRelayConfigMap } from '../../contract/config/configmap.ts';
import { type ControlPlane, kubectl } from '../envtest/control-plane.ts';
import {
  adminClient,
  CONFIGMAP,
  eventually,
  metricsText,
  OPERATOR_NAMESPACE,
  type OperatorProcess,
  sample,
  startCluster,
  startOperatorProcess,
} from './support.ts';

const TENANT = `apiVersion: mailplus.io/v1alpha1
kind: TenantPolicy
metadata: { name: ha, namespace: ha }
spec:
  domains: [ha.example.com]
`;
const route = (name: string) => `apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: { name: ${name}, namespace: ha }
spec:
  match: { recipients: ["${name}@ha.example.com"] }
  reject: { code: 550 }
`;

describe('leader election between two operator processes', () => {
  let cp: ControlPlane;
  let kc: k8s.KubeConfig;
  const procs: OperatorProcess[] = [];

  const lease = () =>
    kc
      .makeApiClient(k8s.CoordinationV1Api)
      .readNamespacedLease({ name: 'mailplus-operator', namespace: OPERATOR_NAMESPACE });
  const routesInConfig = async () => {
    const cm = await kc
      .makeApiClient(k8s.CoreV1Api)
      .readNamespacedConfigMap({ name: CONFIGMAP, namespace: OPERATOR_NAMESPACE });
    return decodeRelayConfigMap(cm).tenants.flatMap((t) => t.routes.map((r) => r.name));
  };
  const leaderStatus = async (p: OperatorProcess) =>
    sample(await metricsText(p.metricsPort), 'leader_election_master_status', { name: 'mailplus-operator' });

  beforeAll(async () => {
    cp = await startCluster();
    kc = adminClient(cp);
    await kubectl(cp, ['create', 'namespace', 'ha']);
    await kubectl(cp, ['apply', '-f', '-'], { input: `${TENANT}---\n${route('first')}` });
    procs.push(await startOperatorProcess(cp, 'op-a'));
    await eventually('op-a leads', async () => (await lease()).spec?.holderIdentity === 'op-a', 30_000);
    procs.push(await startOperatorProcess(cp, 'op-b'));
  }, 180_000);

  afterAll(async () => {
    for (const p of procs) await p.stop(5000);
    await cp?.stop();
  }, 60_000);

  it('one leader writes; the standby keeps its informers warm and reports master_status 0', async () => {
    await eventually('first route published', async () => (await routesInConfig()).includes('ha/first'));
    const [a, b] = procs;
    await eventually(
      'op-b ready',
      async () => (await fetch(`http://127.0.0.1:${b.metricsPort}/readyz`)).status === 200,
    );
    expect(await leaderStatus(a)).toBe(1);
    expect(await leaderStatus(b)).toBe(0);
    const mb = await metricsText(b.metricsPort);
    expect(sample(mb, 'mailplus_operator_informer_synced', { kind: 'MailRoute' })).toBe(1);
    expect(sample(mb, 'mailplus_operator_config_apply_total', { result: 'success' }) ?? 0).toBe(0);
    expect(sample(mb, 'mailplus_operator_status_writes_total', { result: 'success' }) ?? 0).toBe(0);
  }, 60_000);

  it('SIGKILL of the leader: the standby takes over within ~20 s and publishes a later change', async () => {
    const [a, b] = procs;
    const before = await lease();
    const transitions = before.spec?.leaseTransitions ?? 0;
    const killedAt = Date.now();
    process.kill(a.pid, 'SIGKILL');
    await a.exited;
    await kubectl(cp, ['apply', '-f', '-'], { input: route('second') });
    await eventually(
      'second route published by op-b',
      async () => (await routesInConfig()).includes('ha/second'),
      30_000,
      250,
    );
    const tookOver = Date.now() - killedAt;
    const after = await lease();
    expect(after.spec?.holderIdentity).toBe('op-b');
    expect(after.spec?.leaseTransitions).toBe(transitions + 1);
    expect(tookOver).toBeLessThan(22_000);
    expect(await leaderStatus(b)).toBe(1);
    const mb = await metricsText(b.metricsPort);
    expect(sample(mb, 'mailplus_operator_config_apply_total', { result: 'success' })).toBeGreaterThan(0);
  }, 60_000);

  it('SIGTERM of the leader releases the Lease: a new standby takes over in seconds, not 15', async () => {
    const c = await startOperatorProcess(cp, 'op-c');
    procs.push(c);
    await eventually(
      'op-c ready',
      async () => (await fetch(`http://127.0.0.1:${c.metricsPort}/readyz`)).status === 200,
    );
    const b = procs[1];
    const stoppedAt = Date.now();
    expect(await b.stop(10_000)).toBe(0);
    await eventually('op-c leads', async () => (await lease()).spec?.holderIdentity === 'op-c', 15_000, 100);
    expect(Date.now() - stoppedAt).toBeLessThan(8_000);
    await kubectl(cp, ['apply', '-f', '-'], { input: route('third') });
    await eventually('third route published by op-c', async () =>
      (await routesInConfig()).includes('ha/third'),
    );
  }, 60_000);

  it('a leader that loses its Lease to someone else stops writing and exits non-zero (fail-stop)', async () => {
    const c = procs[2];
    const l = await lease();
    await kc.makeApiClient(k8s.CoordinationV1Api).replaceNamespacedLease({
      name: 'mailplus-operator',
      namespace: OPERATOR_NAMESPACE,
      body: {
        ...l,
        spec: {
          ...l.spec,
          holderIdentity: 'intruder',
          leaseDurationSeconds: 3600,
          renewTime: new k8s.V1MicroTime(),
        },
      },
    });
    const code = await Promise.race([
      c.exited,
      new Promise((r) => setTimeout(() => r('still running'), 10_000)),
    ]);
    expect(code).toBe(1);
    expect(c.lines.some((line) => line.json?.msg === 'leadership lost')).toBe(true);
  }, 30_000);
});
