// The operator and a relay keep up when the API server misbehaves: watches ended every 1-2 s
// (--min-request-timeout=1), resourceVersions compacted away every few seconds with no watch cache
// (watches from an old RV get 410 Gone → relist), and a kube-apiserver restart. In each case a
// change made afterwards still reaches the ConfigMap, the relay and the status.
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeRelayConfigMap } from '../../contract/config/configmap.ts';
import { type ControlPlane, kubectl } from '../envtest/control-plane.ts';
import {
  adminClient,
  CONFIGMAP,
  cond,
  eventually,
  metricsText,
  OPERATOR_NAMESPACE,
  type OperatorProcess,
  patchRejectMessage,
  type RelayProcess,
  relayConfigInfo,
  sample,
  sleep,
  startCluster,
  startOperatorProcess,
  startRelayProcess,
  waitForStatus,
} from './support.ts';

const MANIFEST = `apiVersion: v1
kind: Namespace
metadata: { name: res }
---
apiVersion: mailplus.io/v1alpha1
kind: TenantPolicy
metadata: { name: res, namespace: res }
spec:
  domains: [res.example.com]
---
apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: { name: churn, namespace: res }
spec:
  priority: 1
  match: { recipients: ["churn@res.example.com"] }
  reject: { code: 550, message: generation 1 }
`;

describe('resilience: short watches, 410 Gone, API server restart', () => {
  let cp: ControlPlane;
  let kc: k8s.KubeConfig;
  let operator: OperatorProcess;
  let relay: RelayProcess;

  const configSource = async (key: string) => {
    const cm = await kc
      .makeApiClient(k8s.CoreV1Api)
      .readNamespacedConfigMap({ name: CONFIGMAP, namespace: OPERATOR_NAMESPACE });
    const c = decodeRelayConfigMap(cm);
    return { generation: c.sources?.[key], hash: c.hash };
  };
  /** Patches the route; returns its new generation. */
  const patchRoute = (message: string) => patchRejectMessage(cp, 'res', 'churn', message);
  /** The change reached the ConfigMap, the relay loaded that config, and the status says Programmed. */
  const propagated = async (generation: number, timeoutMs = 30_000) => {
    const src = await eventually(
      `ConfigMap with MailRoute/res/churn generation ${generation}`,
      async () => {
        const s = await configSource('MailRoute/res/churn');
        return s.generation === generation ? s : undefined;
      },
      timeoutMs,
    );
    await eventually(
      'relay serves it',
      async () => (await relayConfigInfo(relay.adminPort)).hash === src.hash,
      timeoutMs,
    );
    const o = await waitForStatus(
      kc,
      'mailroutes',
      'res',
      'churn',
      (x) => cond(x, 'Programmed')?.status === 'True',
      timeoutMs,
    );
    expect(o.metadata.generation).toBe(generation);
  };

  beforeAll(async () => {
    cp = await startCluster({
      extraApiServerArgs: ['--min-request-timeout=1', '--watch-cache=false', '--etcd-compaction-interval=5s'],
    });
    kc = adminClient(cp);
    await kubectl(cp, ['apply', '-f', '-'], { input: MANIFEST });
    operator = await startOperatorProcess(cp, 'op-res');
    relay = await startRelayProcess(cp, 'relay-res');
    await propagated(1);
  }, 180_000);

  afterAll(async () => {
    await relay?.stop(5000);
    await operator?.stop(5000);
    await cp?.stop();
    // (a supervisor-started replacement is tracked in `operator`; processes.ts kills leftovers on exit)
  }, 60_000);

  it('keeps up while watches end every 1-2 s and compaction forces 410 Gone relists', async () => {
    const before = await metricsText(operator.metricsPort);
    const relistsBefore =
      sample(before, 'mailplus_operator_informer_relists_total', { kind: 'TenantPolicy' }) ?? 0;
    // 12 changes over ~18 s: watches restart many times, and the quiet kinds' resourceVersions get
    // compacted while other objects move the revision on
    for (let i = 2; i <= 13; i++) {
      await patchRoute(`generation ${i}`);
      await sleep(1500);
    }
    await propagated(13);
    const after = await metricsText(operator.metricsPort);
    const relists = sample(after, 'mailplus_operator_informer_relists_total', { kind: 'TenantPolicy' }) ?? 0;
    expect(relists, 'a quiet informer had to relist after 410 Gone').toBeGreaterThan(relistsBefore);
    // now the ConfigMap stays quiet while other objects move the revision on: the relay's watch
    // resourceVersion gets compacted away too (410 → re-GET)
    // (its watches run ~25 s, the server keeps revisions ~5-10 s)
    const deadline = Date.now() + 60_000;
    for (
      let i = 0;
      !relay.lines.some((l) => l.json?.msg === 'configmap watch expired (410 Gone); re-reading');
      i++
    ) {
      expect(Date.now(), 'the relay saw 410 Gone within 60 s').toBeLessThan(deadline);
      await kubectl(cp, ['annotate', '--overwrite', 'namespace', 'res', `churn=${i}`]);
      await sleep(1000);
    }
    await propagated(await patchRoute('after the relay relisted'));
  }, 150_000);

  it('recovers from a kube-apiserver restart: a later change still propagates', async () => {
    // kube-apiserver takes ~10 s to stop and start: longer than the 10 s renew deadline, so the
    // leader may fail-stop (exit 1) like controller-runtime; here we play kubelet and restart it.
    const first = operator;
    let restarted: Promise<OperatorProcess> | undefined;
    void first.exited.then((code) => {
      if (code === 1) restarted = startOperatorProcess(cp, 'op-res-2');
    });
    const started = Date.now();
    await cp.restartApiServer();
    const restartMs = Date.now() - started;
    await propagated(await patchRoute('after restart'), 60_000);
    if (restarted) {
      operator = await restarted;
      expect(first.lines.some((l) => l.json?.msg === 'leadership lost')).toBe(true);
    } else {
      expect(
        restartMs,
        'the leader survived only because the restart was shorter than the renew deadline',
      ).toBeLessThan(10_000);
    }
    // the relay has no supervisor: it rode out the restart on its own
    expect(relay.child.exitCode).toBeNull();
    const m = await metricsText(operator.metricsPort);
    expect(sample(m, 'mailplus_operator_informer_synced', { kind: 'MailRoute' })).toBe(1);
    expect((await fetch(`http://127.0.0.1:${operator.metricsPort}/readyz`)).status).toBe(200);
    expect(sample(m, 'leader_election_master_status', { name: 'mailplus-operator' })).toBe(1);
  }, 90_000);
});
