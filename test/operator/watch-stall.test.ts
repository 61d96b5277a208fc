// The operator's informers (operator/kube/informer.ts) against a misbehaving network between them
// and a REAL kube-apiserver: the operator runs in-process with the operator ServiceAccount's
// kubeconfig pointed at a loopback TCP proxy (test/support/tcp-proxy.ts; TLS passes through it
// unchanged, the serving certificate has SAN 127.0.0.1), while the test changes MailRoutes with the
// admin kubeconfig, straight to the API server. Each scenario gets a fresh proxy and operator:
// a. silent stall (client-node #596/#958/#364): the open connections stop forwarding without any
//    FIN/RST, so the watches go quiet without an error; new connections work. The staleness
//    watchdog (small resync/staleAfter here) must notice the LIST/cache disagreement, recreate the
//    informer, and the change must reach the ConfigMap well before client-node's own 30 s watch
//    inactivity timeout would have rescued it.
// b. connection resets every second: informers restart with backoff (bounded connection count),
//    resume from their resourceVersion (no relist), and a later change propagates.
// c. API server unreachable for ~5 s (new connections reset, open ones reset): backoff keeps the
//    attempts few, /readyz stays 200 (it means "every informer has listed once"; the cache keeps
//    serving), and a change made during the outage propagates after it.
// d. full blackhole for 5 s (new connections too), then "healed" with the blackholed connections
//    dead for good: the staleness checks started meanwhile fail rather than hang, and the watchdog
//    recreates the informer once LISTs work again.

import { readFileSync } from 'node:fs';
import * as k8s from '@kubernetes/client-node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { decodeRelayConfigMap } from '../../contract/config/configmap.ts';
import { startProbeServer } from '../../operator/http.ts';
import { type Operator, type OperatorOptions, startOperator } from '../../operator/operator.ts';
import { KubeClient } from '../../platform/kube/client.ts';
import { connectionFromKubeconfig } from '../../platform/kube/config.ts';
import { createLogger } from '../../platform/log.ts';
import { type ControlPlane, kubectl } from '../envtest/control-plane.ts';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.ts';
import {
  adminClient,
  CONFIGMAP,
  eventually,
  inProcessOperatorOptions,
  OPERATOR_NAMESPACE,
  patchRejectMessage,
  sample,
  sleep,
  startCluster,
} from './support.ts';

const NS = 'stall';
const ROUTE = `MailRoute/${NS}/route`;
const KINDS = ['TenantPolicy', 'MailRoute', 'Service', 'Pod', 'ConfigMap'];

const MANIFEST = `apiVersion: v1
kind: Namespace
metadata: { name: ${NS} }
---
apiVersion: mailplus.io/v1alpha1
kind: TenantPolicy
metadata: { name: ${NS}, namespace: ${NS} }
spec:
  domains: [stall.example.com]
---
apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: { name: route, namespace: ${NS} }
spec:
  priority: 1
  match: { recipients: ["x@stall.example.com"] }
  reject: { code: 550, message: generation 1 }
`;

interface Harness {
  proxy: TcpProxy;
  operator: Operator;
  probePort: number;
  logs: Array<{ msg: string; kind?: string; [k: string]: unknown }>;
  metric(name: string, kind: string): Promise<number>;
  readyz(): Promise<number>;
  stop(): Promise<void>;
}

describe('informers against stalled, reset and unreachable API server connections', () => {
  let cp: ControlPlane;
  let admin: k8s.KubeConfig;
  let h: Harness | undefined;

  /** The operator's own kubeconfig (its ServiceAccount token, real RBAC), via the proxy. */
  const startViaProxy = async (extra: Partial<OperatorOptions> = {}): Promise<Harness> => {
    const proxy = await startTcpProxy({ target: { host: '127.0.0.1', port: cp.port } });
    const text = readFileSync(cp.kubeconfigFor('operator'), 'utf8').replace(
      /^(\s*server:\s*).*$/m,
      `$1https://${proxy.address}`,
    );
    const client = new KubeClient(connectionFromKubeconfig(text, '.', 'operator kubeconfig via the proxy'));
    expect(client.connection.server).toBe(`https://${proxy.address}`);
    const logs: Harness['logs'] = [];
    const logger = createLogger((line) => {
      logs.push(JSON.parse(line));
      if (process.env.MAILPLUS_TEST_ECHO) process.stderr.write(line);
    });
    const operator = await startOperator(inProcessOperatorOptions(client, 'op-stall', logger, extra));
    const probes = await startProbeServer(
      { registry: operator.metrics.registry, ready: () => operator.ready() },
      { host: '127.0.0.1', port: 0 },
    );
    const probePort = probes.address.port;
    return {
      proxy,
      operator,
      probePort,
      logs,
      async metric(name, kind) {
        const res = await fetch(`http://127.0.0.1:${probePort}/metrics`, {
          signal: AbortSignal.timeout(5000),
        });
        return sample(await res.text(), name, { kind }) ?? Number.NaN;
      },
      async readyz() {
        const res = await fetch(`http://127.0.0.1:${probePort}/readyz`, {
          signal: AbortSignal.timeout(5000),
        });
        await res.arrayBuffer();
        return res.status;
      },
      async stop() {
        await operator.stop();
        await probes.close();
        await proxy.close();
      },
    };
  };

  /** The generation of our MailRoute in the published ConfigMap (read by the admin, directly). */
  const publishedGeneration = async (): Promise<number | undefined> => {
    const cm = await admin
      .makeApiClient(k8s.CoreV1Api)
      .readNamespacedConfigMap({ name: CONFIGMAP, namespace: OPERATOR_NAMESPACE });
    return decodeRelayConfigMap(cm).sources?.[ROUTE];
  };
  const patchRoute = (message: string) => patchRejectMessage(cp, NS, 'route', message);
  const currentGeneration = async (): Promise<number> =>
    Number(
      await kubectl(cp, ['get', 'mailroute', '-n', NS, 'route', '-o', 'jsonpath={.metadata.generation}']),
    );
  /** Waits until the ConfigMap carries `generation`; returns how long that took. */
  const published = async (generation: number, timeoutMs: number): Promise<number> => {
    const started = Date.now();
    await eventually(
      `ConfigMap with ${ROUTE} generation ${generation}`,
      async () => (await publishedGeneration()) === generation,
      timeoutMs,
      100,
    );
    return Date.now() - started;
  };
  /** Operator synced, the current generation published, and every informer's watch connected. */
  const steady = async (x: Harness) => {
    await eventually('operator ready', () => x.operator.ready(), 30_000, 50);
    await published(await currentGeneration(), 30_000);
    // every informer has listed and opened its watch: one connection each at least is open
    await eventually('watches open', () => x.proxy.counters().active >= KINDS.length, 10_000, 50);
    await sleep(300);
  };
  const sum = async (x: Harness, name: string) => {
    let n = 0;
    for (const kind of KINDS) n += await x.metric(name, kind);
    return n;
  };

  beforeAll(async () => {
    cp = await startCluster();
    admin = adminClient(cp);
    await kubectl(cp, ['apply', '-f', '-'], { input: MANIFEST });
  }, 90_000);

  afterEach(async () => {
    await h?.stop();
    h = undefined;
  }, 20_000);

  afterAll(async () => {
    await h?.stop();
    await cp?.stop();
  }, 30_000);

  it('silent stall: frozen watches are detected by the staleness watchdog and recreated', async () => {
    h = await startViaProxy({ resyncMs: 1000, staleAfterMs: 2000 });
    await steady(h);
    const restartsBefore = await h.metric('mailplus_operator_informer_restarts_total', 'MailRoute');
    const relistsBefore = await h.metric('mailplus_operator_informer_relists_total', 'MailRoute');
    const acceptedBefore = h.proxy.counters().accepted;

    h.proxy.freeze(); // the open connections (the watches) go silent: no data, no FIN, no RST
    const frozen = h.proxy.counters().frozen;
    expect(frozen, 'every watch connection is frozen').toBeGreaterThanOrEqual(KINDS.length);
    const generation = await patchRoute('changed during a silent stall');
    const recoveryMs = await published(generation, 25_000);

    // well under client-node's 30 s watch inactivity timeout: the watchdog did it
    expect(recoveryMs).toBeLessThan(20_000);
    const restarts = await h.metric('mailplus_operator_informer_restarts_total', 'MailRoute');
    const relists = await h.metric('mailplus_operator_informer_relists_total', 'MailRoute');
    expect(restarts, 'the MailRoute informer was recreated').toBeGreaterThan(restartsBefore);
    expect(relists).toBeGreaterThan(relistsBefore);
    expect(
      h.logs.some((l) => l.kind === 'MailRoute' && /informer cache is stale/.test(l.msg)),
      'the watchdog logged the stale cache',
    ).toBe(true);
    // new connections worked throughout (LISTs, the new watch, the ConfigMap apply); the frozen
    // ones stay frozen (the client may abort its own, e.g. the replaced watch)
    const c = h.proxy.counters();
    expect(c.accepted).toBeGreaterThan(acceptedBefore);
    expect(c.frozen).toBeGreaterThan(0);
    console.log(
      `[watch-stall a] recovered in ${recoveryMs} ms; MailRoute restarts ${restartsBefore}→${restarts}, relists ${relistsBefore}→${relists}; ${frozen} frozen connections, ${c.accepted - acceptedBefore} new connections meanwhile`,
    );
  }, 60_000);

  it('connection resets every second: restarts back off, resume without relisting, a later change propagates', async () => {
    h = await startViaProxy();
    await steady(h);
    const restartsBefore = await sum(h, 'mailplus_operator_informer_restarts_total');
    const relistsBefore = await sum(h, 'mailplus_operator_informer_relists_total');
    const before = h.proxy.counters();
    const RESETS = 5;
    for (let i = 0; i < RESETS; i++) {
      h.proxy.resetAll();
      await sleep(1000);
    }
    const generation = await patchRoute('changed after resets');
    const recoveryMs = await published(generation, 30_000);
    const after = h.proxy.counters();
    const restarts = (await sum(h, 'mailplus_operator_informer_restarts_total')) - restartsBefore;
    const relists = (await sum(h, 'mailplus_operator_informer_relists_total')) - relistsBefore;
    const connections = after.accepted - before.accepted;
    console.log(
      `[watch-stall b] ${after.resets - before.resets} connections reset in ${RESETS} rounds; ${restarts} informer restarts, ${relists} relists, ${connections} new connections; change published ${recoveryMs} ms after the patch`,
    );
    // every informer noticed; with one pending restart at a time and delays of 1-1.5 s, then 2-3 s
    // (WATCH_RETRY), a reset every second can kill a watch at most 3 times (at 0 s, ~1-2 s, ~4 s):
    // ≤ 3 restarts per informer. Without backoff (or a fixed 1 s) it would be one per round: 5.
    expect(restarts).toBeGreaterThanOrEqual(KINDS.length);
    expect(restarts).toBeLessThanOrEqual(KINDS.length * 3);
    // a restart resumes the watch from its resourceVersion: no LIST
    expect(relists).toBe(0);
    // each API request is a new connection (client-node 2.0 builds an undici Agent per request):
    // one watch per restart plus the ConfigMap apply and status writes for the change
    expect(connections).toBeLessThanOrEqual(KINDS.length * 3 + 10);
    expect(await h.readyz()).toBe(200);
  }, 60_000);

  it('API server unreachable for 5 s: few attempts (backoff), /readyz stays 200, the change made meanwhile propagates', async () => {
    h = await startViaProxy();
    await steady(h);
    expect(await h.readyz()).toBe(200);
    await h.proxy.refuse(true);
    h.proxy.resetAll();
    const outageStarted = Date.now();
    // changed while the operator cannot see the API server
    const generation = await patchRoute('changed during an outage');
    const during: number[] = [];
    const synced: number[] = [];
    while (Date.now() - outageStarted < 5000) {
      during.push(await h.readyz());
      synced.push(await h.metric('mailplus_operator_informer_synced', 'MailRoute'));
      await sleep(500);
    }
    const refused = h.proxy.counters().refused;
    await h.proxy.refuse(false);
    const backAt = Date.now();
    await published(generation, 40_000);
    const recoveryMs = Date.now() - backAt;
    const restarts = await sum(h, 'mailplus_operator_informer_restarts_total');
    console.log(
      `[watch-stall c] ${refused} connection attempts refused in 5 s (5 informers); /readyz during outage: ${[...new Set(during)].join(',')}; change published ${recoveryMs} ms after the API server was reachable again; ${restarts} informer restarts in total`,
    );
    // readiness means "every informer has listed once": it does not flap during an outage (the
    // cache keeps serving; a controller takes no traffic that unreadiness would divert)
    expect(new Set(during)).toEqual(new Set([200]));
    expect(new Set(synced)).toEqual(new Set([1]));
    // backoff 1-1.5 s, then 2-3 s: about 3 watch attempts per informer in 5 s, not a tight loop
    expect(refused).toBeGreaterThanOrEqual(KINDS.length);
    expect(refused).toBeLessThanOrEqual(KINDS.length * 4 + 6);
    // the next attempt comes at most one backoff step (≤ 3 s) after the outage ends
    expect(recoveryMs).toBeLessThan(15_000);
    expect(await h.readyz()).toBe(200);
    expect(await h.metric('mailplus_operator_informer_synced', 'MailRoute')).toBe(1);
  }, 60_000);

  it('blackhole, then heal: the checks started meanwhile fail (not hang), the watchdog recreates the informer', async () => {
    h = await startViaProxy({ resyncMs: 1000, staleAfterMs: 2000 });
    await steady(h);
    const restartsBefore = await h.metric('mailplus_operator_informer_restarts_total', 'MailRoute');
    // everything goes dark, new connections included (TCP connects to the proxy, TLS never completes)
    h.proxy.freeze({ newConnections: true });
    const blackholeAt = Date.now();
    const generation = await patchRoute('changed during a blackhole');
    await sleep(5000);
    const blackholed = h.proxy.counters().frozen;
    h.proxy.freeze(); // heal: new connections work again, the blackholed ones stay dead for good
    const healedAt = Date.now();
    const checkFailed = () =>
      h?.logs.find((l) => l.kind === 'MailRoute' && /staleness check failed/.test(l.msg));
    await published(generation, 40_000);
    const recoveryMs = Date.now() - healedAt;
    const restarts = await h.metric('mailplus_operator_informer_restarts_total', 'MailRoute');
    const failed = checkFailed();
    console.log(
      `[watch-stall d] ${blackholed} connections blackholed for 5 s; MailRoute staleness check failed after ${failed ? Date.parse(String(failed.time)) - blackholeAt : '-'} ms (${failed?.error}); change published ${recoveryMs} ms after healing; MailRoute restarts ${restartsBefore}→${restarts}`,
    );
    // the staleness LIST started in the blackhole failed (undici's 10 s connect timeout: the TLS
    // handshake never completes) instead of hanging and disabling the watchdog for that kind
    expect(failed, 'the MailRoute staleness check failed rather than hung').toBeDefined();
    expect(restarts, 'then the MailRoute informer was recreated').toBeGreaterThan(restartsBefore);
    expect(h.logs.some((l) => l.kind === 'MailRoute' && /informer cache is stale/.test(l.msg))).toBe(true);
    // connect timeout (10 s, counted from inside the blackhole) + a tick + the 5 s grace
    expect(recoveryMs).toBeLessThan(25_000);
  }, 60_000);
});
