// How the operator learns what relays serve, end to end on a real API server: it finds the ready
// relay pods (Pod objects the harness keeps for real relay processes on loopback, as a kubelet
// would) and asks each for /config. Programmed waits for every ready relay; a relay pod that hangs
// (as a compromised relay might) blocks Programmed with its name and shows in the metrics, but
// never slows publishing to the others; relays that stop or lose readiness stop counting.

import http from 'node:http';
import type { AddressInfo } from 'node:net';
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
  type RelayProcess,
  relayConfigInfo,
  relayPod,
  sample,
  startCluster,
  startOperatorProcess,
  startRelayProcess,
  waitForStatus,
} from './support.ts';

const NS = 'pull';
const MANIFEST = `apiVersion: v1
kind: Namespace
metadata: { name: ${NS} }
---
apiVersion: mailplus.io/v1alpha1
kind: TenantPolicy
metadata: { name: ${NS}, namespace: ${NS} }
spec:
  domains: [pull.example.com]
---
apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: { name: route, namespace: ${NS} }
spec:
  match: { recipients: ["x@pull.example.com"] }
  reject: { code: 550, message: generation 1 }
`;

describe('relay reports are pulled from ready relay pods (real API server, real relays)', () => {
  let cp: ControlPlane;
  let kc: k8s.KubeConfig;
  let operator: OperatorProcess;
  const relays: RelayProcess[] = [];
  let hang: http.Server | undefined;
  let removeHangPod: (() => Promise<void>) | undefined;

  const patchRoute = (message: string) =>
    kubectl(cp, [
      'patch',
      'mailroute',
      '-n',
      NS,
      'route',
      '--type=merge',
      '-p',
      JSON.stringify({ spec: { reject: { code: 550, message } } }),
    ]);
  const publishedHash = async () =>
    decodeRelayConfigMap(
      await kc
        .makeApiClient(k8s.CoreV1Api)
        .readNamespacedConfigMap({ name: CONFIGMAP, namespace: OPERATOR_NAMESPACE }),
    ).hash;

  beforeAll(async () => {
    cp = await startCluster();
    kc = adminClient(cp);
    await kubectl(cp, ['apply', '-f', '-'], { input: MANIFEST });
    operator = await startOperatorProcess(cp, 'op-pull', ['--relay-scrape-timeout=1s']);
    relays.push(await startRelayProcess(cp, 'relay-a'));
    relays.push(await startRelayProcess(cp, 'relay-b'));
  }, 120_000);

  afterAll(async () => {
    await removeHangPod?.();
    hang?.closeAllConnections();
    hang?.close();
    for (const r of relays) await r.stop(5000);
    await operator?.stop(5000);
    await cp?.stop();
  }, 60_000);

  it('Programmed waits for every ready relay pod', async () => {
    const o = await waitForStatus(kc, 'mailroutes', NS, 'route', (x) =>
      /all 2 live relays/.test(cond(x, 'Programmed')?.message ?? ''),
    );
    expect(cond(o, 'Programmed')).toMatchObject({
      status: 'True',
      message: 'generation 1 is served by all 2 live relays',
    });
    const m = await metricsText(operator.metricsPort);
    expect(sample(m, 'mailplus_operator_live_relays')).toBe(2);
    expect(sample(m, 'mailplus_operator_relays_unreachable')).toBe(0);
    expect(sample(m, 'mailplus_operator_relay_scrapes_total', { result: 'success' })).toBeGreaterThan(0);
  }, 60_000);

  it('a ready relay pod that hangs blocks Programmed by name, but publishing to the others goes on', async () => {
    hang = http.createServer(() => undefined); // accepts, never answers
    await new Promise<void>((r) => hang?.listen(0, '127.0.0.1', r));
    const hangPort = (hang.address() as AddressInfo).port;
    // its Pod stays Ready (its /readyz hangs too; Ready regardless is the worst case)
    removeHangPod = await relayPod(cp, 'relay-hang', hangPort, new Promise(() => undefined), {
      alwaysReady: true,
    });

    await patchRoute('generation 2');
    const o = await waitForStatus(
      kc,
      'mailroutes',
      NS,
      'route',
      // the honest relays' answers for the new hash arrive on their own schedule: wait for both
      (x) =>
        x.metadata.generation === 2 &&
        /^2 of 3 live relays .*not reachable: relay-hang \(no answer/.test(
          cond(x, 'Programmed')?.message ?? '',
        ),
    );
    expect(cond(o, 'Programmed')).toMatchObject({ status: 'False', reason: 'Pending' });
    expect(cond(o, 'Programmed')?.message).toBe(
      '2 of 3 live relays serve generation 2; waiting for the others to load the new config; not reachable: relay-hang (no answer within 1000 ms)',
    );
    // the honest relays got the new config as usual
    const hash = await publishedHash();
    for (const r of relays) expect((await relayConfigInfo(r.adminPort)).hash).toBe(hash);
    const m = await metricsText(operator.metricsPort);
    expect(sample(m, 'mailplus_operator_live_relays')).toBe(3);
    expect(sample(m, 'mailplus_operator_relays_unreachable')).toBe(1);
    expect(sample(m, 'mailplus_operator_relay_scrapes_total', { result: 'error' })).toBeGreaterThan(0);

    // once it is no longer a ready relay pod, it no longer counts
    await removeHangPod();
    removeHangPod = undefined;
    const after = await waitForStatus(
      kc,
      'mailroutes',
      NS,
      'route',
      (x) => cond(x, 'Programmed')?.status === 'True',
    );
    expect(cond(after, 'Programmed')?.message).toBe('generation 2 is served by all 2 live relays');
  }, 90_000);

  it('a relay that stops (its pod goes away) stops counting; the next change is Programmed on the rest', async () => {
    const b = relays.pop() as RelayProcess;
    await b.stop(5000);
    await patchRoute('generation 3');
    const o = await waitForStatus(
      kc,
      'mailroutes',
      NS,
      'route',
      (x) => x.metadata.generation === 3 && cond(x, 'Programmed')?.status === 'True',
    );
    expect(cond(o, 'Programmed')?.message).toBe('generation 3 is served by all 1 live relay');
    await eventually('live relays 1', async () =>
      sample(await metricsText(operator.metricsPort), 'mailplus_operator_live_relays') === 1
        ? true
        : undefined,
    );
  }, 60_000);
});
