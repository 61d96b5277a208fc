// Operator benchmark (npm run bench:operator):
//  1. compile + encode time and memory for 1k, 10k, 50k MailRoutes across 500 tenants
//     (targets: 50k in < 1 s and < 300 MB);
//  2. apply-to-relay latency on a real kube-apiserver: patch a MailRoute → a relay following the
//     ConfigMap has applied a config containing the new generation; p50/p99 over 100 changes
//     (target p99 < 1 s), printed beside the API server's own write latency (100 plain ConfigMap
//     patches) measured in the same run.
// Every child process is stopped by PID at the end (and killed on exit by test/support/processes.ts).
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import * as k8s from '@kubernetes/client-node';
import type { MailRoute, TenantPolicy } from '../../operator/api/types.gen.ts';
import { compile } from '../../operator/compile/compile.ts';
import { encodeRelayConfig } from '../../operator/publish/configmap.ts';
import { decodeRelayConfigMap } from '../../relay/config-configmap-watch.ts';
import { kubectl } from '../envtest/control-plane.ts';
import {
  adminClient,
  CONFIGMAP,
  eventually,
  OPERATOR_NAMESPACE,
  relayConfigInfo,
  startCluster,
  startOperatorProcess,
  startRelayProcess,
} from '../operator/support.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const MB = 1024 * 1024;

function fleet(routes: number, tenants: number): { tenantPolicies: TenantPolicy[]; mailRoutes: MailRoute[] } {
  const tenantPolicies: TenantPolicy[] = [];
  const mailRoutes: MailRoute[] = [];
  for (let t = 0; t < tenants; t++) {
    tenantPolicies.push({
      apiVersion: 'mailplus.io/v1alpha1',
      kind: 'TenantPolicy',
      metadata: {
        name: 'policy',
        namespace: `tenant-${t}`,
        generation: 1,
        creationTimestamp: '2026-01-01T00:00:00Z',
      },
      spec: { domains: [`t${t}.example.com`, `*.t${t}.example.com`] },
    });
  }
  for (let r = 0; r < routes; r++) {
    const t = r % tenants;
    mailRoutes.push({
      apiVersion: 'mailplus.io/v1alpha1',
      kind: 'MailRoute',
      metadata: {
        name: `route-${r}`,
        namespace: `tenant-${t}`,
        generation: 1,
        creationTimestamp: '2026-01-01T00:00:00Z',
      },
      spec: {
        priority: 100 + (r % 10),
        match: { recipients: [`user${r}@t${t}.example.com`, `*@r${r}.t${t}.example.com`] },
        forward: { upstreams: [{ host: `mx${r % 7}.t${t}.example.com`, port: 25, tls: 'opportunistic' }] },
      },
    });
  }
  return { tenantPolicies, mailRoutes };
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};
const ratio = (value: number, target: number) => `${(value / target).toFixed(2)}× target`;

function benchCompile(): void {
  console.log('== compile (pure) + encode, 500 tenants ==');
  console.log('routes   compile_ms  encode_ms  json_MB  stored_MB  gzip  heap_delta_MB  rss_delta_MB');
  for (const n of [1_000, 10_000, 50_000]) {
    const input = { ...fleet(n, 500), services: [] };
    gc();
    const heap0 = process.memoryUsage().heapUsed;
    const rss0 = process.memoryUsage().rss;
    const t0 = performance.now();
    const result = compile(input);
    const t1 = performance.now();
    const payload = encodeRelayConfig(result.config);
    const t2 = performance.now();
    const heap = (process.memoryUsage().heapUsed - heap0) / MB;
    const rss = (process.memoryUsage().rss - rss0) / MB;
    console.log(
      `${String(n).padStart(6)}  ${(t1 - t0).toFixed(0).padStart(10)}  ${(t2 - t1).toFixed(0).padStart(9)}  ${(payload.jsonBytes / MB).toFixed(2).padStart(7)}  ${(payload.bytes / MB).toFixed(2).padStart(9)}  ${String(payload.compressed).padStart(5)}  ${heap.toFixed(0).padStart(13)}  ${rss.toFixed(0).padStart(12)}`,
    );
    if (n === 50_000) {
      console.log(`   50k compile: ${(t1 - t0).toFixed(0)} ms = ${ratio(t1 - t0, 1000)} (target < 1000 ms)`);
      console.log(
        `   50k memory: heap +${heap.toFixed(0)} MB = ${ratio(heap, 300)}; RSS +${rss.toFixed(0)} MB = ${ratio(rss, 300)} (target < 300 MB)`,
      );
      console.log(
        `   50k stored: ${(payload.bytes / MB).toFixed(2)} MiB of the 1 MiB ConfigMap limit (${ratio(payload.bytes, MB)})`,
      );
    }
  }
}

async function benchApplyLatency(changes: number): Promise<void> {
  console.log(`\n== apply-to-relay latency on kube-apiserver 1.20 (${changes} changes) ==`);
  const cp = await startCluster();
  const stops: Array<() => Promise<unknown>> = [];
  try {
    const kc = adminClient(cp);
    const co = kc.makeApiClient(k8s.CustomObjectsApi);
    const core = kc.makeApiClient(k8s.CoreV1Api);
    await kubectl(cp, ['create', 'namespace', 'bench']);
    const routes = Array.from(
      { length: 200 },
      (_, i) => `---
apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: { name: r${i}, namespace: bench }
spec:
  match: { recipients: ["u${i}@bench.example.com"] }
  reject: { code: 550 }
`,
    ).join('');
    await kubectl(cp, ['apply', '-f', '-'], {
      input: `apiVersion: mailplus.io/v1alpha1
kind: TenantPolicy
metadata: { name: bench, namespace: bench }
spec: { domains: [bench.example.com] }
${routes}`,
    });
    const op = await startOperatorProcess(cp, 'op-bench', [], false);
    stops.push(() => op.stop(5000));
    const relay = await startRelayProcess(cp, 'relay-bench', [], false);
    stops.push(() => relay.stop(5000));
    await eventually('relay has a config', async () => (await relayConfigInfo(relay.adminPort)).hash, 60_000);

    const latencies: number[] = [];
    for (let i = 0; i < changes; i++) {
      const linesBefore = relay.lines.length;
      const t0 = Date.now();
      const patched = (await co.patchNamespacedCustomObject(
        {
          group: 'mailplus.io',
          version: 'v1alpha1',
          plural: 'mailroutes',
          namespace: 'bench',
          name: 'r0',
          body: { spec: { reject: { code: 550, message: `change ${i}` } } },
        },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      )) as { metadata: { generation: number } };
      const generation = patched.metadata.generation;
      // the relay logs "config applied" with the hash; the ConfigMap tells which generation it holds
      const line = await relay.waitForLine(
        (l) => relay.lines.indexOf(l) >= linesBefore && l.json?.msg === 'config applied',
        10_000,
      );
      const cm = await core.readNamespacedConfigMap({ name: CONFIGMAP, namespace: OPERATOR_NAMESPACE });
      const config = decodeRelayConfigMap(cm);
      if (config.hash === line.json?.hash && (config.sources?.['MailRoute/bench/r0'] ?? 0) < generation)
        throw new Error(`relay applied ${config.hash} without generation ${generation}`);
      latencies.push(line.at - t0);
    }

    const writes: number[] = [];
    await core.createNamespacedConfigMap({
      namespace: 'bench',
      body: { metadata: { name: 'plain' }, data: { v: '0' } },
    });
    for (let i = 0; i < changes; i++) {
      const t0 = performance.now();
      await core.patchNamespacedConfigMap(
        { name: 'plain', namespace: 'bench', body: { data: { v: String(i) } } },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      );
      writes.push(performance.now() - t0);
    }
    const p50 = pct(latencies, 50);
    const p99 = pct(latencies, 99);
    console.log(
      `MailRoute patch → relay applied: p50 ${p50} ms, p99 ${p99} ms, max ${Math.max(...latencies)} ms`,
    );
    console.log(`   p99 ${ratio(p99, 1000)} (target < 1000 ms)`);
    console.log(
      `API server write latency (plain ConfigMap merge patch): p50 ${pct(writes, 50).toFixed(1)} ms, p99 ${pct(writes, 99).toFixed(1)} ms`,
    );
    console.log(
      `   the path is ~${(p50 / pct(writes, 50)).toFixed(1)}× one API write at p50 (patch, watch → operator, batch window 100 ms, compile, SSA, watch → relay)`,
    );
  } finally {
    for (const s of stops.reverse()) await s().catch(() => {});
    await cp.stop();
  }
}

const changes = Number(process.env.BENCH_CHANGES ?? 100);
const deadline = setTimeout(() => {
  console.error('operator-bench: over 15 minutes, giving up');
  process.exit(2);
}, 15 * 60_000);
deadline.unref();
benchCompile();
await benchApplyLatency(changes);
process.exit(0);
