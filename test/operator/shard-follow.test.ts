// A relay following a sharded config (`mailplus relay --configmap`, real API server, the relay's
// real RBAC with the shard names): it serves the union of the shards only once every shard is at
// the hash the index names, never a mix, and refuses an index that points outside its shards.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  mergeShards,
  shardConfigMapName,
  shardIndex,
  shardOf,
  splitRelayConfig,
} from '../../contract/config/shards.ts';
import type { RelayConfig } from '../../contract/config/types.gen.ts';
import { compile } from '../../operator/compile/compile.ts';
import { applyConfigMap, encodeRelayConfig, relayConfigMap } from '../../operator/publish/configmap.ts';
import { type KubeClient, loadKubeClient } from '../../platform/kube/client.ts';
import { type ControlPlane, kubectl } from '../envtest/control-plane.ts';
import { mailRoute, tenantPolicy } from '../support/fleet.ts';
import {
  CONFIGMAP,
  eventually,
  MAILPLUS,
  NODE,
  OPERATOR_NAMESPACE,
  type RelayProcess,
  rbacManifest,
  relayConfigInfo,
  sleep,
  startCluster,
  startRelayProcess,
} from './support.ts';

const SHARDS = 2;
// two tenants in different shards
const A = 'alpha';
const B = ['beta', 'gamma', 'delta', 'epsilon'].find(
  (t) => shardOf(t, SHARDS) !== shardOf(A, SHARDS),
) as string;

function version(n: number): { shards: RelayConfig[]; index: RelayConfig; union: RelayConfig } {
  const { config } = compile({
    tenantPolicies: [tenantPolicy(A, [`${A}.example.com`]), tenantPolicy(B, [`${B}.example.com`])],
    mailRoutes: [A, B].map((t) => mailRoute(t, 'r', [`v${n}@${t}.example.com`], n)),
    services: [],
  });
  const shards = splitRelayConfig(config, SHARDS);
  // as the operator writes it: the index names the union's hash (the compiled config's)
  const index = shardIndex(
    shards.map((s, i) => ({ configMap: shardConfigMapName(CONFIGMAP, i), hash: s.hash })),
    config.hash,
  );
  const union = mergeShards(index, new Map(shards.map((s, i) => [shardConfigMapName(CONFIGMAP, i), s])));
  if (!union.ok || union.config.hash !== config.hash) throw new Error('union');
  return { shards, index, union: union.config };
}

describe('relay following a sharded config (real API server)', () => {
  let cp: ControlPlane;
  let core: KubeClient;
  let relay: RelayProcess;
  const put = (name: string, doc: RelayConfig) =>
    applyConfigMap(core, relayConfigMap(OPERATOR_NAMESPACE, name, doc, encodeRelayConfig(doc)));
  const served = async () => (await relayConfigInfo(relay.adminPort)).hash;

  beforeAll(async () => {
    cp = await startCluster();
    await kubectl(cp, ['apply', '-f', '-'], { input: rbacManifest(OPERATOR_NAMESPACE, SHARDS) });
    core = loadKubeClient(cp.kubeconfigAdmin);
    relay = await startRelayProcess(cp, 'relay-shards');
  }, 120_000);

  afterAll(async () => {
    await relay?.stop(5000);
    await cp?.stop();
  }, 60_000);

  it('an index naming shards that do not exist yet: waits, then serves them once they appear', async () => {
    const v0 = version(0);
    await put(CONFIGMAP, v0.index);
    await sleep(1500);
    expect(await served()).toBeNull();
    for (const [i, s] of v0.shards.entries()) await put(shardConfigMapName(CONFIGMAP, i), s);
    await eventually('relay serves v0', async () => (await served()) === v0.union.hash, 30_000);
  }, 60_000);

  it('serves the union once the index names the shards', async () => {
    // the operator's order: shards first, the index last
    const v1 = version(1);
    for (const [i, s] of v1.shards.entries()) await put(shardConfigMapName(CONFIGMAP, i), s);
    await sleep(1500);
    expect(await served(), 'shards without a new index are not served').toBe(version(0).union.hash);
    await put(CONFIGMAP, v1.index);
    await eventually('relay serves v1', async () => (await served()) === v1.union.hash);
    const line = await relay.waitForLine((l) => l.json?.msg === 'config applied', 5000);
    expect(line.json?.tenants).toBe(2);
  }, 60_000);

  it('keeps the last consistent union until every shard matches the new index', async () => {
    const v1 = version(1);
    const v2 = version(2);
    await put(CONFIGMAP, v2.index);
    await put(shardConfigMapName(CONFIGMAP, 0), v2.shards[0]);
    await sleep(2000);
    expect(await served(), 'half an update must not be served').toBe(v1.union.hash);
    await put(shardConfigMapName(CONFIGMAP, 1), v2.shards[1]);
    await eventually('relay serves v2', async () => (await served()) === v2.union.hash);
  }, 60_000);

  it('mailplus route --cluster answers from the union of the shards', async () => {
    const { execFile } = await import('node:child_process');
    const out = await new Promise<{ code: number; stdout: string }>((resolve) => {
      execFile(
        NODE,
        [
          MAILPLUS,
          'route',
          '--cluster',
          `--kubeconfig=${cp.kubeconfigFor('relay')}`,
          `--configmap=${OPERATOR_NAMESPACE}/${CONFIGMAP}`,
          `--to=v2@${A}.example.com`,
          `--to=v2@${B}.example.com`,
        ],
        { timeout: 30_000 },
        (err, stdout) => resolve({ code: (err as { code?: number } | null)?.code ?? 0, stdout }),
      );
    });
    expect(out.stdout).toContain(`${A}/r`);
    expect(out.stdout).toContain(`${B}/r`);
    // both are routed (one transaction cannot carry two upstream sets: the second gets 452 split)
    expect(out.stdout).not.toMatch(/5\.7\.1|5\.1\.1/);
  }, 60_000);

  it('refuses an index naming a ConfigMap that is not one of its shards', async () => {
    const v2 = version(2);
    const foreign = shardIndex([{ configMap: 'kube-root-ca.crt', hash: v2.shards[0].hash }]);
    await put(CONFIGMAP, foreign);
    await relay.waitForLine(
      (l) =>
        l.json?.msg === 'config refused, keeping the last good one' &&
        /not shards of/.test(String(l.json?.error)),
      10_000,
    );
    expect(await served()).toBe(v2.union.hash);
  }, 60_000);

  it('serves an index without the union hash (an older operator) with the hash computed from the shards', async () => {
    const v3 = version(3);
    for (const [i, s] of v3.shards.entries()) await put(shardConfigMapName(CONFIGMAP, i), s);
    const older = shardIndex(v3.index.shards ?? []);
    expect(older.unionHash).toBeUndefined();
    await put(CONFIGMAP, older);
    await eventually('relay serves v3', async () => (await served()) === v3.union.hash);
  }, 60_000);
});
