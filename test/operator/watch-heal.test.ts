// Watches that heal: the relay (--configmap) and the operator ride out a kube-apiserver outage
// without spinning, and a change made once the API server is back reaches the relay within
// seconds. Before the fix the relay re-watched from the ConfigMap's own (pre-restart)
// resourceVersion after every 410 Gone and re-read it with no backoff (~55 times a second,
// growing RSS), and both the relay and the operator sat out backoffs of up to 30 s after the
// server came back.

import { gzipSync } from 'node:zlib';
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CONFIG_GZ_KEY,
  CONFIG_KEY,
  decodeRelayConfigMap,
  relayConfigText,
} from '../../contract/config/configmap.ts';
import { type ControlPlane, kubectl } from '../envtest/control-plane.ts';
import { memoryOf } from '../support/processes.ts';
import {
  adminClient,
  CONFIGMAP,
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
} from './support.ts';

const MANIFEST = `apiVersion: v1
kind: Namespace
metadata: { name: heal }
---
apiVersion: mailplus.io/v1alpha1
kind: TenantPolicy
metadata: { name: heal, namespace: heal }
spec:
  domains: [heal.example.com]
---
apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: { name: r, namespace: heal }
spec:
  priority: 1
  match: { recipients: ["r@heal.example.com"] }
  reject: { code: 550, message: generation 1 }
`;

const GONE_LINE = 'configmap watch expired (410 Gone); re-reading';
/** How long the API server stays down: long enough for an unbounded backoff to grow past 10 s. */
const OUTAGE_MS = 15_000;
const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(0);

describe('watches that heal after a kube-apiserver outage', () => {
  let cp: ControlPlane;
  let kc: k8s.KubeConfig;
  let operator: OperatorProcess;
  let relay: RelayProcess;

  const configMap = () =>
    kc
      .makeApiClient(k8s.CoreV1Api)
      .readNamespacedConfigMap({ name: CONFIGMAP, namespace: OPERATOR_NAMESPACE });
  const publishedGeneration = async () =>
    decodeRelayConfigMap(await configMap()).sources?.['MailRoute/heal/r'] as number | undefined;
  const patchRoute = (message: string) => patchRejectMessage(cp, 'heal', 'r', message);
  /** Resolves with the time at which the relay serves the config holding the route's `generation`. */
  const relayServes = async (generation: number, timeoutMs: number) => {
    const hash = await eventually(
      `ConfigMap with MailRoute/heal/r generation ${generation}`,
      async () =>
        (await publishedGeneration()) === generation
          ? decodeRelayConfigMap(await configMap()).hash
          : undefined,
      timeoutMs,
      100,
    );
    const published = Date.now();
    await eventually(
      'relay serves it',
      async () => (await relayConfigInfo(relay.adminPort)).hash === hash,
      timeoutMs,
      100,
    );
    return { published, served: Date.now() };
  };
  const goneLines = () => relay.lines.filter((l) => l.json?.msg === GONE_LINE).length;

  beforeAll(async () => {
    cp = await startCluster();
    kc = adminClient(cp);
    await kubectl(cp, ['apply', '-f', '-'], { input: MANIFEST });
    // no leader election: this drill is about the informers, not about a leader that fail-stops
    // when its renew deadline passes during the outage (test/operator/resilience.test.ts)
    operator = await startOperatorProcess(cp, 'op-heal', ['--no-leader-elect']);
    relay = await startRelayProcess(cp, 'relay-heal');
    await relayServes(1, 60_000);
  }, 180_000);

  afterAll(async () => {
    await relay?.stop(5000);
    await operator?.stop(5000);
    await cp?.stop();
  }, 60_000);

  /** Stops the API server for OUTAGE_MS, starts it again; returns when it is back (ready). */
  const outage = async () => {
    // other objects move the revision on, so the ConfigMap's own resourceVersion is older than
    // what the restarted API server's watch cache starts from
    for (let i = 0; i < 3; i++)
      await kubectl(cp, ['annotate', '--overwrite', 'namespace', 'heal', `tick=${i}`]);
    await cp.stopApiServer();
    await sleep(OUTAGE_MS);
    const starting = Date.now(); // nothing can sync before this
    await cp.startApiServer();
    return { starting, back: Date.now() };
  };
  const relayRelists = async () =>
    sample(await metricsText(relay.adminPort), 'mailplus_relay_config_watch_relists_total', {
      configmap: CONFIGMAP,
    });

  it('after the outage the relay neither spins nor grows while the ConfigMap stays unchanged', async () => {
    await sleep(2000);
    const rssBefore = (await memoryOf(relay.pid))?.rss ?? 0;
    const goneBefore = goneLines();
    const relistsBefore = await relayRelists();
    const { starting } = await outage();
    // nothing changes now: a watch that resumes from a stale resourceVersion spins here
    await sleep(15_000);
    const rssAfter = (await memoryOf(relay.pid))?.rss ?? 0;
    const gone = goneLines() - goneBefore;
    const relists = ((await relayRelists()) ?? 0) - (relistsBefore ?? 0);
    process.stderr.write(
      `[watch-heal] quiet: 410 re-reads ${gone}, relay re-lists ${relists}, relay RSS ${mb(rssBefore)} → ${mb(rssAfter)} MB\n`,
    );
    expect(
      gone,
      'the relay re-read the ConfigMap after 410 Gone only a handful of times',
    ).toBeLessThanOrEqual(3);
    expect(relistsBefore, 'the relay exports its re-lists').toBeDefined();
    expect(relists, 'relay re-lists during and after the outage').toBeLessThanOrEqual(5);
    expect(relists, 'the relay re-listed after the outage').toBeGreaterThanOrEqual(1);
    // RSS stays flat (the spinning relay grew by several MB a second)
    expect(rssAfter - rssBefore, `relay RSS ${mb(rssBefore)} → ${mb(rssAfter)} MB`).toBeLessThan(
      40 * 2 ** 20,
    );

    // watch health is visible in /metrics
    const m = await metricsText(relay.adminPort);
    expect(
      sample(m, 'mailplus_relay_config_watch_last_sync_timestamp_seconds', { configmap: CONFIGMAP }),
      'relay last sync is after the outage',
    ).toBeGreaterThan(starting / 1000);
    expect(
      sample(m, 'mailplus_relay_config_watch_errors_total', { configmap: CONFIGMAP }),
      'the outage shows as watch errors',
    ).toBeGreaterThan(0);
    const op = await metricsText(operator.metricsPort);
    for (const kind of ['MailRoute', 'TenantPolicy', 'ConfigMap']) {
      expect(
        sample(op, 'mailplus_operator_informer_last_sync_timestamp_seconds', { kind }),
        `${kind} informer synced after the outage`,
      ).toBeGreaterThan(starting / 1000);
      expect(sample(op, 'mailplus_operator_informer_errors_total', { kind })).toBeGreaterThan(0);
    }
    expect(relay.child.exitCode).toBeNull();
    expect(operator.child.exitCode).toBeNull();
  }, 120_000);

  it('a change made as the API server comes back is published and applied within 5 s', async () => {
    const { back } = await outage();
    const generation = await patchRoute('after the outage');
    const t = await relayServes(generation, 60_000);
    process.stderr.write(
      `[watch-heal] change: published +${t.published - back} ms, served +${t.served - back} ms\n`,
    );
    expect(
      t.published - back,
      'the operator published the change within 5 s of the server being back',
    ).toBeLessThan(5000);
    expect(t.served - back, 'the relay applied the change within 5 s of the server being back').toBeLessThan(
      5000,
    );
    expect(relay.child.exitCode).toBeNull();
    expect(operator.child.exitCode).toBeNull();
  }, 150_000);

  it('ConfigMap mode: a refused config reverted to the active one sets last_reload_successful back to 1', async () => {
    const core = kc.makeApiClient(k8s.CoreV1Api);
    const reloads = async (result: string) =>
      sample(await metricsText(relay.adminPort), 'mailplus_relay_config_reloads_total', { result }) ?? 0;
    const gauge = async () =>
      sample(await metricsText(relay.adminPort), 'mailplus_relay_config_last_reload_successful');
    const original = await configMap();
    const active = decodeRelayConfigMap(original).hash;
    expect((await relayConfigInfo(relay.adminPort)).hash).toBe(active);
    const failuresBefore = await reloads('failure');
    // a hand edit that breaks the hash, in whichever key the operator publishes
    const forged = JSON.parse(relayConfigText(original)) as { sources?: Record<string, number> };
    forged.sources = { ...forged.sources, 'MailRoute/heal/forged': 1 };
    const text = JSON.stringify(forged);
    // unconditional writes (no resourceVersion): the operator repairs hand edits and may write
    // in between
    const write = (data: Pick<k8s.V1ConfigMap, 'data' | 'binaryData'>) =>
      core.replaceNamespacedConfigMap({
        name: CONFIGMAP,
        namespace: OPERATOR_NAMESPACE,
        body: { ...original, metadata: { ...original.metadata, resourceVersion: undefined }, ...data },
      });
    await write(
      original.binaryData?.[CONFIG_GZ_KEY] !== undefined
        ? { binaryData: { ...original.binaryData, [CONFIG_GZ_KEY]: gzipSync(text).toString('base64') } }
        : { data: { ...original.data, [CONFIG_KEY]: text } },
    );
    await eventually(
      'the relay refused the forged config',
      async () => (await reloads('failure')) > failuresBefore,
    );
    // revert to the last good content (the operator may already have republished it; either way
    // the relay loads the hash it already serves)
    await write({ data: original.data, binaryData: original.binaryData });
    await eventually('last_reload_successful is 1 again', async () => (await gauge()) === 1, 15_000);
    expect((await relayConfigInfo(relay.adminPort)).hash).toBe(active);
  }, 60_000);
});
