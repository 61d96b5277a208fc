// Operator benchmark (npm run bench:operator). Targets (issue: tenant isolation):
//  1. compile (pure) + budgets + shard plan for 1k .. 100k MailRoutes over 1,000 tenants:
//     100k compile < 1 s, every shard under the 1 MiB ConfigMap limit;
//  2. on a real kube-apiserver: 100k routes over 1,000 tenants (BENCH_ROUTES, BENCH_TENANTS) are
//     published by a `mailplus operator --config-shards=BENCH_SHARDS` process and served by a relay
//     process; operator RSS < 300 MB (read when the relay serves, once every object has its
//     status, and after the changes); apply-to-relay latency (patch a MailRoute → the relay has
//     applied a config containing the new generation) p50/p99 over BENCH_CHANGES changes,
//     target p99 < 1 s, printed beside the API server's own write latency (plain ConfigMap patches)
//     measured in the same run. BENCH_RELAY_OLD_SPACE_MB: the relay's V8 old-generation limit (default
//     256 MB, the chart's default pod), as in a relay pod sized for the fleet.
// Every child process is stopped by PID at the end (and killed on exit by test/support/processes.ts).
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import * as k8s from '@kubernetes/client-node';
import { decodeRelayConfigMap } from '../../contract/config/configmap.ts';
import { assembledFromVerified } from '../../contract/config/load.ts';
import { mergeShards, shardIndex } from '../../contract/config/shards.ts';
import type { RelayConfig } from '../../contract/config/types.gen.ts';
import { DEFAULT_TENANT_BUDGETS, enforceTenantBudgets } from '../../operator/compile/budgets.ts';
import { CompileCache, compile } from '../../operator/compile/compile.ts';
import { relayConfigMap } from '../../operator/publish/configmap.ts';
import { planPublish } from '../../operator/publish/sharded.ts';
import type { ConfigMap } from '../../platform/kube/objects.ts';
import { createLogger } from '../../platform/log.ts';
import { withUnchangedTenantsOf } from '../../relay/config/configmap-set.ts';
import { RelayMetrics } from '../../relay/observability/metrics.ts';
import { RelayConfigState } from '../../relay/relay-config-state.ts';
import { kubectl } from '../envtest/control-plane.ts';
import {
  adminClient,
  CONFIGMAP,
  eventually,
  metricsText,
  OPERATOR_NAMESPACE,
  rbacManifest,
  relayConfigInfo,
  sample,
  startCluster,
  startOperatorProcess,
  startRelayProcess,
} from '../operator/support.ts';
import { fleet } from '../support/fleet.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const MB = 1024 * 1024;
const ROUTES = Number(process.env.BENCH_ROUTES ?? 100_000);
const TENANTS = Number(process.env.BENCH_TENANTS ?? 1000);
const SHARDS = Number(process.env.BENCH_SHARDS ?? 64);

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};
const ratio = (value: number, target: number) => `${(value / target).toFixed(2)}× target`;
/** The machine's load beside every number: wall-clock times on a shared machine mean little without it. */
const load = () =>
  `load ${loadavg()
    .map((l) => l.toFixed(1))
    .join(' ')}`;

/**
 * Change i of a run, as the operator sees one edit: one MailRoute (spread over the fleet) becomes
 * a new object with the next generation, every other object stays the same.
 */
function changeOneRoute(routes: ReturnType<typeof fleet>['mailRoutes'], i: number): void {
  const k = (i * 7919) % routes.length;
  const r = routes[k];
  routes[k] = {
    ...r,
    metadata: { ...r.metadata, generation: (r.metadata.generation ?? 1) + 1 },
    spec: { ...r.spec, priority: 101 + i },
  };
}

function benchCompile(): void {
  console.log(
    `== compile (pure) + budgets + shard plan, ${TENANTS} tenants, ${SHARDS} shards (${load()}) ==`,
  );
  console.log(
    '"cold": from scratch; "change": one MailRoute changed since the last compile, with the CompileCache the operator keeps',
  );
  console.log(
    'routes   compile_ms  budgets_ms  plan_ms  json_MB  largest_shard_MB  heap_delta_MB  rss_delta_MB  change_compile_ms  change_plan_ms',
  );
  for (const n of [1_000, 10_000, 50_000, 100_000].filter((x) => x <= Math.max(ROUTES, 1_000))) {
    const input = { ...fleet(n, TENANTS), services: [] };
    gc();
    const heap0 = process.memoryUsage().heapUsed;
    const rss0 = process.memoryUsage().rss;
    const cache = new CompileCache();
    const t0 = performance.now();
    const compiled = compile(input, { cache, hash: 'union' });
    const t1 = performance.now();
    const result = enforceTenantBudgets(compiled, DEFAULT_TENANT_BUDGETS, undefined);
    const t2 = performance.now();
    const plan = planPublish({ config: result.config, base: CONFIGMAP, shards: SHARDS, previous: new Map() });
    const t3 = performance.now();
    const heap = (process.memoryUsage().heapUsed - heap0) / MB;
    const rss = (process.memoryUsage().rss - rss0) / MB;
    const json = plan.reduce((a, d) => a + (d.payload?.jsonBytes ?? 0), 0);
    const largest = Math.max(...plan.map((d) => d.payload?.bytes ?? 0));
    // what the operator does on a change: one MailRoute is a new object, everything else is the same
    const changes: Array<[number, number]> = [];
    let previous = new Map(plan.map((d) => [d.name, d.config]));
    for (let i = 0; i < 5; i++) {
      changeOneRoute(input.mailRoutes, i);
      gc();
      const c0 = performance.now();
      const again = compile(input, { cache, hash: 'union' });
      const c1 = performance.now();
      const budgeted = enforceTenantBudgets(again, DEFAULT_TENANT_BUDGETS, undefined);
      const replan = planPublish({ config: budgeted.config, base: CONFIGMAP, shards: SHARDS, previous });
      changes.push([c1 - c0, performance.now() - c1]);
      previous = new Map(replan.map((d) => [d.name, d.config]));
    }
    const change = pct(
      changes.map(([c]) => c),
      50,
    );
    const changePlan = pct(
      changes.map(([, p]) => p),
      50,
    );
    console.log(
      `${String(n).padStart(6)}  ${(t1 - t0).toFixed(0).padStart(10)}  ${(t2 - t1).toFixed(0).padStart(10)}  ${(t3 - t2).toFixed(0).padStart(7)}  ${(json / MB).toFixed(2).padStart(7)}  ${(largest / MB).toFixed(2).padStart(16)}  ${heap.toFixed(0).padStart(13)}  ${rss.toFixed(0).padStart(12)}  ${change.toFixed(0).padStart(17)}  ${changePlan.toFixed(0).padStart(14)}`,
    );
    if (n === 100_000) {
      console.log(
        `   100k compile after one change (median of 5, budgets and plan excluded): ${change.toFixed(0)} ms = ${ratio(change, 1000)} (target < 1000 ms); from scratch: ${(t1 - t0).toFixed(0)} ms = ${ratio(t1 - t0, 1000)} (${load()})`,
      );
      console.log(
        `   100k largest shard: ${(largest / MB).toFixed(2)} MiB of the 1 MiB ConfigMap limit (${ratio(largest, MB)}); held back: ${plan.reduce((a, d) => a + d.heldBack.length, 0)} tenants`,
      );
    }
  }
}

/**
 * The relay's side of one change, with the relay's own functions: the shard ConfigMaps a relay
 * holds, and what it does when a shard and then the index change (decode and verify the shard,
 * form the union the index names, build the routing table).
 */
class RelaySide {
  private readonly docs = new Map<string, RelayConfig>();
  readonly state = new RelayConfigState(
    new RelayMetrics(),
    createLogger(() => {}),
  );

  /** ms spent decoding (gunzip, parse, schema, hash) the shard ConfigMap. */
  shard(cm: ConfigMap): number {
    const t0 = performance.now();
    const name = cm.metadata?.name as string;
    this.docs.set(name, withUnchangedTenantsOf(this.docs.get(name), decodeRelayConfigMap(cm)));
    return performance.now() - t0;
  }

  /** ms spent forming the union, and then applying it (routing table). */
  index(index: RelayConfig): [number, number] {
    const t0 = performance.now();
    const m = mergeShards(index, this.docs, { sources: false });
    if (!m.ok) throw new Error(`relay waits for ${m.waitingFor.join(',')}`);
    const union = assembledFromVerified(m.config);
    const t1 = performance.now();
    const r = this.state.apply(union, 'bench');
    if (!r.ok) throw new Error(r.error);
    return [t1 - t0, performance.now() - t1];
  }
}

/**
 * The apply path of one MailRoute change at BENCH_ROUTES routes, in process, without the API
 * server: the operator's plan after the compile (split, render and gzip of the changed shard, the
 * index), then the relay's decode of that shard, its union and its routing table.
 */
function benchApplyPath(): void {
  console.log(
    `\n== apply path of one changed MailRoute, ${ROUTES} routes over ${TENANTS} tenants, ${SHARDS} shards, in process (${load()}) ==`,
  );
  const input = { ...fleet(ROUTES, TENANTS), services: [] };
  const cache = new CompileCache();
  const compileOnce = () =>
    enforceTenantBudgets(compile(input, { cache }), DEFAULT_TENANT_BUDGETS, undefined).config;
  const relay = new RelaySide();
  const publish = (config: RelayConfig, previous: Map<string, RelayConfig>) => {
    const plan = planPublish({ config, base: CONFIGMAP, shards: SHARDS, previous });
    const cms = plan.flatMap((d) =>
      d.payload ? [relayConfigMap(OPERATOR_NAMESPACE, d.name, d.config, d.payload)] : [],
    );
    const index =
      SHARDS > 1
        ? shardIndex(
            plan.map((d) => ({ configMap: d.name, hash: d.config.hash })),
            config.hash,
          )
        : undefined;
    return { plan, cms, index };
  };
  let first = publish(compileOnce(), new Map());
  for (const cm of first.cms) relay.shard(cm);
  if (first.index) relay.index(first.index);
  const rows: number[][] = [];
  for (let i = 0; i < 7; i++) {
    changeOneRoute(input.mailRoutes, i);
    const config = compileOnce();
    gc();
    const t0 = performance.now();
    const next = publish(config, new Map(first.plan.map((d) => [d.name, d.config])));
    const plan = performance.now() - t0;
    if (next.cms.length !== 1) throw new Error(`${next.cms.length} documents changed, expected 1`);
    const bytes = next.cms[0].binaryData
      ? Buffer.from(Object.values(next.cms[0].binaryData)[0], 'base64').length
      : 0;
    const decode = relay.shard(next.cms[0]);
    const [union, table] = next.index ? relay.index(next.index) : [0, 0];
    rows.push([plan, decode, union, table, plan + decode + union + table, bytes]);
    first = next;
  }
  const med = (j: number) =>
    pct(
      rows.map((r) => r[j]),
      50,
    );
  const max = (j: number) => Math.max(...rows.map((r) => r[j]));
  const cell = (j: number) => `${med(j).toFixed(0)} / ${max(j).toFixed(0)} ms`;
  console.log(`median / max of ${rows.length} changes (the first 2 warm up the JIT and are included):`);
  console.log(`   operator plan (split, render + gzip of the changed shard, index): ${cell(0)}`);
  console.log(`   relay decode of the changed shard (${(med(5) / 1024).toFixed(0)} KiB gzip): ${cell(1)}`);
  console.log(`   relay union of the shards: ${cell(2)}`);
  console.log(`   relay routing table: ${cell(3)}`);
  console.log(`   total (operator compile and the API server not included): ${cell(4)} (${load()})`);
}

/** The union the relays serve, read from the index and shard ConfigMaps (as `route --cluster` does). */
async function publishedConfig(core: k8s.CoreV1Api): Promise<RelayConfig | undefined> {
  const read = async (name: string) =>
    decodeRelayConfigMap(await core.readNamespacedConfigMap({ name, namespace: OPERATOR_NAMESPACE }));
  const index = await read(CONFIGMAP);
  if (!index.shards) return index;
  const docs = new Map<string, RelayConfig>();
  for (const s of index.shards) docs.set(s.configMap, await read(s.configMap));
  const m = mergeShards(index, docs);
  return m.ok ? m.config : undefined;
}

/**
 * Fills Node's compile cache as the image does at build time (Dockerfile): an operator started on a
 * cold cache loads Node's TypeScript stripper, a WebAssembly module that stays resident (~28 MB of
 * RSS) and that no pod loads.
 */
function warmCompileCache(): void {
  const script = fileURLToPath(new URL('../../bin/warm-compile-cache.js', import.meta.url));
  execFileSync(process.execPath, [script], { stdio: 'inherit', timeout: 120_000 });
}

const rssMB = (pid: number): number => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
};

/**
 * Resident MB of the process's malloc heap (the `[heap]` mapping: glibc's main arena), where the
 * native side of its I/O (HTTP, TLS, zlib, buffers) allocates; NaN when there is none.
 */
const mallocHeapMB = (pid: number): number => {
  const smaps = readFileSync(`/proc/${pid}/smaps`, 'utf8');
  const at = smaps.indexOf(' [heap]\n');
  const m = at < 0 ? null : /\nRss:\s+(\d+) kB/.exec(smaps.slice(at));
  return m ? Number(m[1]) / 1024 : Number.NaN;
};

/**
 * Stores custom resources straight into the API server's etcd (key /registry/<group>/<plural>/<ns>/<name>,
 * JSON as the API server stores them), 128 puts per transaction; returns the elapsed ms. The API
 * server serves and watches them like any other object. Only for seeding: creating 100k MailRoutes
 * through the API server of this harness runs at 25-120/s on a shared 2-core machine (an hour).
 */
async function seedViaEtcd(
  etcdUrl: string,
  plural: string,
  items: Array<{ metadata: object }>,
): Promise<number> {
  const t0 = performance.now();
  const b64 = (x: string) => Buffer.from(x).toString('base64');
  for (let i = 0; i < items.length; i += 128) {
    const success = items.slice(i, i + 128).map((o) => {
      const md = o.metadata as { name: string; namespace: string };
      const obj = { ...o, metadata: { ...o.metadata, uid: randomUUID() } };
      return {
        requestPut: {
          key: b64(`/registry/mailplus.io/${plural}/${md.namespace}/${md.name}`),
          value: b64(JSON.stringify(obj)),
        },
      };
    });
    const res = await fetch(`${etcdUrl}/v3/kv/txn`, {
      method: 'POST',
      body: JSON.stringify({ success }),
      signal: AbortSignal.timeout(60_000),
    });
    if (!res.ok) throw new Error(`etcd txn: HTTP ${res.status} ${await res.text()}`);
  }
  return performance.now() - t0;
}

/** Creates objects through the API with bounded concurrency; returns the elapsed ms. */
async function createAll(items: Array<() => Promise<unknown>>, concurrency = 16): Promise<number> {
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) await items[next++]();
    }),
  );
  return performance.now() - t0;
}

async function benchApplyLatency(changes: number): Promise<void> {
  console.log(
    `\n== ${ROUTES} routes over ${TENANTS} tenants on kube-apiserver 1.20, ${SHARDS} shards; apply-to-relay latency (${changes} changes) ==`,
  );
  const cp = await startCluster();
  const stops: Array<() => Promise<unknown>> = [];
  try {
    const kc = adminClient(cp);
    const co = kc.makeApiClient(k8s.CustomObjectsApi);
    const core = kc.makeApiClient(k8s.CoreV1Api);
    if (SHARDS > 1)
      await kubectl(cp, ['apply', '-f', '-'], { input: rbacManifest(OPERATOR_NAMESPACE, SHARDS) });
    const { tenantPolicies, mailRoutes } = fleet(ROUTES, TENANTS);
    const group = { group: 'mailplus.io', version: 'v1alpha1' };
    const strip = <T extends { metadata: object }>(o: T): T => ({
      ...o,
      metadata: {
        name: (o.metadata as { name: string }).name,
        namespace: (o.metadata as { namespace: string }).namespace,
      },
    });
    const nsMs = await createAll(
      tenantPolicies.map(
        (p) => () => core.createNamespace({ body: { metadata: { name: p.metadata.namespace } } }),
      ),
    );
    const viaEtcd = (process.env.BENCH_SEED ?? 'etcd') === 'etcd';
    let tpMs: number;
    let mrMs: number;
    console.log(
      `created ${TENANTS} namespaces through the API server in ${(nsMs / 1000).toFixed(1)} s (${((TENANTS * 1000) / nsMs).toFixed(0)}/s); seeding ${TENANTS} TenantPolicies and ${ROUTES} MailRoutes ${viaEtcd ? 'straight into etcd (BENCH_SEED=api: through the API server)' : 'through the API server'} (${load()})`,
    );
    if (viaEtcd) {
      tpMs = await seedViaEtcd(cp.etcdUrl, 'tenantpolicies', tenantPolicies);
      mrMs = await seedViaEtcd(cp.etcdUrl, 'mailroutes', mailRoutes);
    } else {
      tpMs = await createAll(
        tenantPolicies.map(
          (p) => () =>
            co.createNamespacedCustomObject({
              ...group,
              plural: 'tenantpolicies',
              namespace: p.metadata.namespace as string,
              body: strip(p),
            }),
        ),
      );
      mrMs = await createAll(
        mailRoutes.map(
          (r) => () =>
            co.createNamespacedCustomObject({
              ...group,
              plural: 'mailroutes',
              namespace: r.metadata.namespace as string,
              body: strip(r),
            }),
        ),
        64,
      );
    }
    console.log(
      `seeded ${TENANTS} TenantPolicies (${(tpMs / 1000).toFixed(1)} s), ${ROUTES} MailRoutes (${(mrMs / 1000).toFixed(1)} s, ${((ROUTES * 1000) / mrMs).toFixed(0)}/s)`,
    );
    warmCompileCache();
    const tStart = Date.now();
    const op = await startOperatorProcess(cp, 'op-bench', [`--config-shards=${SHARDS}`], false);
    stops.push(() => op.stop(5000));
    // the relay's old generation: 256 MB as in the chart's default pod (limits.memory 512Mi), or
    // BENCH_RELAY_OLD_SPACE_MB as in a pod sized for the fleet (Node derives half the memory limit)
    const relayOldSpace = process.env.BENCH_RELAY_OLD_SPACE_MB;
    const relay = await startRelayProcess(
      cp,
      'relay-bench',
      [],
      false,
      relayOldSpace ? `--max-old-space-size=${Number(relayOldSpace)}` : undefined,
    );
    stops.push(() => relay.stop(5000));
    const full = await eventually(
      `all ${ROUTES} routes published`,
      async () => {
        const c = await publishedConfig(core).catch(() => undefined);
        const n = c?.tenants.reduce((a, t) => a + t.routes.length, 0) ?? 0;
        return n === ROUTES ? c : undefined;
      },
      10 * 60_000,
      2000,
    );
    const published = Date.now() - tStart;
    await eventually(
      'the relay serves it',
      async () => (await relayConfigInfo(relay.adminPort)).hash === full.hash,
      5 * 60_000,
      1000,
    );
    console.log(
      `${ROUTES} routes over ${TENANTS} tenants published in ${SHARDS} shard ConfigMaps ${(published / 1000).toFixed(1)} s after the operator started (initial list of every object included); relay serving after ${((Date.now() - tStart) / 1000).toFixed(1)} s`,
    );
    const opRss = rssMB(op.pid);
    // the operator's event loop can be busy for seconds at 100k routes: its /metrics answers late
    const opMetrics = await eventually(
      'operator /metrics',
      () => metricsText(op.metricsPort).catch(() => undefined),
      120_000,
      1000,
    );
    const opMB = (name: string) => (sample(opMetrics, name) ?? Number.NaN) / MB;
    const heap = opMB('nodejs_heap_size_used_bytes');
    console.log(
      `relay old generation limit: ${relayOldSpace ? `${Number(relayOldSpace)} MB (BENCH_RELAY_OLD_SPACE_MB)` : '256 MB (the default pod)'}`,
    );
    console.log(
      `operator RSS ${opRss.toFixed(0)} MB = ${ratio(opRss, 300)} (target < 300 MB; V8 heap in use ${heap.toFixed(0)} MB); relay RSS ${rssMB(relay.pid).toFixed(0)} MB (${load()})`,
    );
    // where the RSS over the heap in use goes: V8's committed heap (pages kept after a GC) and
    // memory outside it (buffers, code, the libraries' native parts)
    console.log(
      `   operator V8 heap committed ${opMB('nodejs_heap_size_total_bytes').toFixed(0)} MB, external ${opMB('nodejs_external_memory_bytes').toFixed(0)} MB, malloc heap ${mallocHeapMB(op.pid).toFixed(0)} MB`,
    );
    // Publishing is followed by a status write for every object: the steady state a change meets
    // is after that burst (bounded: BENCH_SETTLE_S).
    const settleMs = Number(process.env.BENCH_SETTLE_S ?? 900) * 1000;
    const s0 = Date.now();
    let depth = Number.NaN;
    let written = 0;
    for (;;) {
      const text = await metricsText(op.metricsPort).catch(() => '');
      depth = sample(text, 'workqueue_depth', { name: 'status' }) ?? Number.NaN;
      written = sample(text, 'mailplus_operator_status_writes_total', { result: 'success' }) ?? written;
      if (depth === 0 || Date.now() - s0 > settleMs) break;
      await new Promise((r) => setTimeout(r, 2000));
    }
    // a few seconds for what the operator gives back once its queue ran empty (memory-after-burst.ts)
    if (depth === 0) await new Promise((r) => setTimeout(r, 5000));
    const settledRss = rssMB(op.pid);
    console.log(
      `status writes after publishing: ${written} written in ${((Date.now() - s0) / 1000).toFixed(0)} s, ${depth} still queued${depth === 0 ? '' : ' (settle time over: measuring during the burst)'} (${load()})`,
    );
    // every object has its status now (unless the settle time ran out): the steady state
    const settledHeap =
      (sample(await metricsText(op.metricsPort), 'nodejs_heap_size_used_bytes') ?? Number.NaN) / MB;
    console.log(
      `   operator RSS ${settledRss.toFixed(0)} MB = ${ratio(settledRss, 300)} ${depth === 0 ? 'with every status written' : 'during the status writes'} (target < 300 MB; V8 heap in use ${settledHeap.toFixed(0)} MB)`,
    );
    const changeNs = tenantPolicies[0].metadata.namespace as string;
    const changeName = mailRoutes[0].metadata.name;
    await core.createNamespacedConfigMap({
      namespace: changeNs,
      body: { metadata: { name: 'plain' }, data: { v: '0' } },
    });
    // each change is preceded by one plain ConfigMap merge patch: the API server's own write
    // latency under the same conditions as the change
    const latencies: number[] = [];
    const writes: number[] = [];
    const tChanges = Date.now();
    for (let i = 0; i < changes; i++) {
      const w0 = performance.now();
      await core.patchNamespacedConfigMap(
        { name: 'plain', namespace: changeNs, body: { data: { v: String(i) } } },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      );
      writes.push(performance.now() - w0);
      const t0 = Date.now();
      const patched = (await co.patchNamespacedCustomObject(
        {
          group: 'mailplus.io',
          version: 'v1alpha1',
          plural: 'mailroutes',
          namespace: changeNs,
          name: changeName,
          body: { spec: { priority: 100 + (i % 2) + 1 } },
        },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      )) as { metadata: { generation: number } };
      const generation = patched.metadata.generation;
      // the relay logs "config applied" with the hash; the ConfigMap tells which generation it holds
      // by time, not by position: the relay's line buffer is bounded (oldest lines dropped)
      const line = await relay
        .waitForLine((l) => l.at >= t0 && l.json?.msg === 'config applied', 120_000)
        .catch((err) => {
          const tail = op.lines.slice(-20).map((l) => l.text);
          throw new Error(`${(err as Error).message}\noperator's last lines:\n${tail.join('\n')}`);
        });
      latencies.push(line.at - t0);
      // each one as it comes (a run cut short, e.g. the operator losing its lease under load, still
      // tells), with where the time went by the operator's own log: patch → its compile started,
      // the compile, → its last ConfigMap write answered (the index), → the relay applied
      const opLines = op.lines.filter((l) => l.at >= t0 && l.at <= line.at);
      const compiled = opLines.find((l) => l.json?.msg === 'compiled relay config');
      const wrote = opLines.filter((l) => l.json?.msg === 'published relay config').at(-1);
      const ms = Number(compiled?.json?.ms ?? Number.NaN);
      const parts = compiled
        ? `until compile ${compiled.at - ms - t0} ms, compile ${ms} ms, publish ${wrote ? wrote.at - compiled.at : '?'} ms, relay ${wrote ? line.at - wrote.at : '?'} ms`
        : 'no compile logged';
      console.log(`   change ${i + 1}: ${line.at - t0} ms = ${parts} (${load()})`);
      const config = await publishedConfig(core);
      const key = `MailRoute/${changeNs}/${changeName}`;
      if (config && config.hash === line.json?.hash && (config.sources?.[key] ?? 0) < generation)
        throw new Error(`relay applied ${config.hash} without generation ${generation}`);
    }
    const p50 = pct(latencies, 50);
    const p99 = pct(latencies, 99);
    // where the time goes on the operator side: its own log of each compile during the changes
    const compiles = op.lines
      .filter((l) => l.at >= tChanges && l.json?.msg === 'compiled relay config')
      .map((l) => Number(l.json?.ms));
    if (compiles.length > 0)
      console.log(
        `operator compile (incl. budgets) during the changes: p50 ${pct(compiles, 50)} ms, max ${Math.max(...compiles)} ms over ${compiles.length} compiles`,
      );
    const endRss = rssMB(op.pid);
    console.log(
      `operator RSS after the changes ${endRss.toFixed(0)} MB = ${ratio(endRss, 300)} (target < 300 MB)`,
    );
    console.log(
      `MailRoute patch → relay applied: p50 ${p50} ms, p99 ${p99} ms, max ${Math.max(...latencies)} ms (${load()})`,
    );
    console.log(`   p99 ${ratio(p99, 1000)} (target < 1000 ms)`);
    console.log(
      `API server write latency (plain ConfigMap merge patch, one before each change): p50 ${pct(writes, 50).toFixed(1)} ms, p99 ${pct(writes, 99).toFixed(1)} ms`,
    );
    console.log(
      `   the path is ~${(p50 / pct(writes, 50)).toFixed(1)}× one API write at p50 (patch, watch → operator, batch window 0-100 ms, compile, SSA, watch → relay)`,
    );
  } finally {
    for (const s of stops.reverse()) await s().catch(() => {});
    await cp.stop();
  }
}

const changes = Number(process.env.BENCH_CHANGES ?? 100);
// Bounded: at 100k routes, creating them and the status writes after publishing take most of it.
const deadlineMin = Number(process.env.BENCH_DEADLINE_MIN ?? 75);
const deadline = setTimeout(() => {
  console.error(`operator-bench: over ${deadlineMin} minutes, giving up (${load()})`);
  process.exit(2);
}, deadlineMin * 60_000);
deadline.unref();
if (process.env.BENCH_COMPILE !== '0') benchCompile();
if (process.env.BENCH_APPLY !== '0') benchApplyPath();
if (process.env.BENCH_CLUSTER !== '0') await benchApplyLatency(changes);
process.exit(0);
