// Shared pieces of the operator integration tests: a real API server with the operator's and the
// relay's REAL RBAC rules (charts/mail-plus/files/*-rbac-rules.yaml) bound to their
// ServiceAccount users, operator and relay child processes, polling helpers.
//
// No kubelet runs here, so the harness plays its part for relays: each relay process gets a Pod
// object (labels as the chart sets them, container port `admin` = the process's admin port,
// status.podIP 127.0.0.1), whose Ready condition follows the process's /readyz like a readiness
// probe, and which is deleted when the process stops. The operator finds relays through these
// Pods and asks them for /config over loopback, exactly as in a cluster.
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import { parseAllDocuments, stringify } from 'yaml';
import { shardConfigMapName } from '../../contract/config/shards.ts';
import type { OperatorOptions } from '../../operator/operator.ts';
import type { KubeClient } from '../../platform/kube/client.ts';
import type { Logger } from '../../platform/log.ts';
import {
  type ControlPlane,
  kubectl,
  OPERATOR_NAMESPACE,
  OPERATOR_USER,
  RELAY_USER,
  type StartControlPlaneOptions,
  startControlPlane,
} from '../envtest/control-plane.ts';
import { freePort, type Managed, startProcess } from '../support/processes.ts';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const NODE = join(REPO, 'node_modules/.bin/node');
export const MAILPLUS = join(REPO, 'bin/mailplus.js');
export const CONFIGMAP = 'mailplus-relay-config';
export { OPERATOR_NAMESPACE };

interface RuleDoc {
  kind: 'ClusterRole' | 'Role';
  rules: Array<{ resourceNames?: string[] }>;
}

export function loadRules(file: string): RuleDoc[] {
  const text = readFileSync(join(REPO, 'charts/mail-plus/files', file), 'utf8');
  return parseAllDocuments(text).map((d) => d.toJS() as RuleDoc);
}

/**
 * ClusterRoles/Roles from the chart's rule files, bound to the operator's and relay's users. With
 * configShards > 1, resourceNames naming the relay ConfigMap also name its shards, as the chart
 * renders them (operator.configShards).
 */
export function rbacManifest(namespace = OPERATOR_NAMESPACE, configShards = 1): string {
  const docs: unknown[] = [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } }];
  const bind = (who: string, user: string, docsOf: RuleDoc[]) => {
    docsOf.forEach((d, i) => {
      const name = `mailplus-${who}-${i}`;
      const cluster = d.kind === 'ClusterRole';
      docs.push({
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: d.kind,
        metadata: cluster ? { name } : { name, namespace },
        rules: d.rules.map((r) =>
          r.resourceNames?.includes(CONFIGMAP) && configShards > 1
            ? {
                ...r,
                resourceNames: [
                  ...r.resourceNames,
                  ...Array.from({ length: configShards }, (_, i) => shardConfigMapName(CONFIGMAP, i)),
                ],
              }
            : r,
        ),
      });
      docs.push({
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: cluster ? 'ClusterRoleBinding' : 'RoleBinding',
        metadata: cluster ? { name } : { name, namespace },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: d.kind, name },
        subjects: [{ kind: 'User', apiGroup: 'rbac.authorization.k8s.io', name: user }],
      });
    });
  };
  bind('operator', OPERATOR_USER, loadRules('operator-rbac-rules.yaml'));
  bind('relay', RELAY_USER, loadRules('relay-rbac-rules.yaml'));
  return docs.map((d) => stringify(d)).join('---\n');
}

export async function startCluster(opts: StartControlPlaneOptions = {}): Promise<ControlPlane> {
  const cp = await startControlPlane({ crdDir: join(REPO, 'crds'), ...opts });
  await kubectl(cp, ['apply', '-f', '-'], { input: rbacManifest() });
  return cp;
}

export function adminClient(cp: ControlPlane): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(cp.kubeconfigAdmin);
  return kc;
}

export interface OperatorProcess extends Managed {
  metricsPort: number;
  identity: string;
}

export async function startOperatorProcess(
  cp: ControlPlane,
  identity: string,
  extra: string[] = [],
  echo = !!process.env.MAILPLUS_TEST_ECHO,
): Promise<OperatorProcess> {
  const metricsPort = await freePort();
  const p = startProcess(
    NODE,
    [
      MAILPLUS,
      'operator',
      `--kubeconfig=${cp.kubeconfigFor('operator')}`,
      `--namespace=${OPERATOR_NAMESPACE}`,
      `--metrics-listen=127.0.0.1:${metricsPort}`,
      `--identity=${identity}`,
      ...extra,
    ],
    { name: `operator ${identity}`, echo, cwd: REPO },
  );
  await p.waitForPort(metricsPort, '127.0.0.1', 20_000);
  return Object.assign(p, { metricsPort, identity });
}

/**
 * An operator run inside the test process, as the in-process tests share it: the operator's own
 * credentials, the default ConfigMap and Lease, relays found by the chart's label, no periodic
 * resync. A test names its identity and overrides what it exercises.
 */
export function inProcessOperatorOptions(
  client: KubeClient,
  identity: string,
  logger: Logger,
  overrides: Partial<OperatorOptions> = {},
): OperatorOptions {
  return {
    client,
    namespace: OPERATOR_NAMESPACE,
    configMapName: CONFIGMAP,
    identity,
    leaderElect: false,
    leaseName: 'mailplus-operator',
    relaySelector: 'app.kubernetes.io/component=relay',
    relayPort: 'admin',
    resyncMs: 600_000,
    maxConcurrentReconciles: 2,
    logger,
    ...overrides,
  };
}

export interface RelayProcess extends Managed {
  smtpPort: number;
  adminPort: number;
  id: string;
}

/** Labels of the relay pods (as the chart renders them); the operator's default selector matches. */
export const RELAY_POD_LABELS = {
  'app.kubernetes.io/name': 'mail-plus',
  'app.kubernetes.io/component': 'relay',
};

async function readyzOk(adminPort: number): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${adminPort}/readyz`, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

/**
 * The kubelet's share for one relay process: a Pod pointing at it (podIP 127.0.0.1, container port
 * `admin`), Ready following /readyz (polled every 200 ms, as a readiness probe would; or, with
 * `alwaysReady`, Ready whatever the process does: the worst case of a hostile relay), deleted
 * when the returned function is called.
 */
export async function relayPod(
  cp: ControlPlane,
  name: string,
  adminPort: number,
  exited: Promise<unknown>,
  opts: { alwaysReady?: boolean } = {},
): Promise<() => Promise<void>> {
  const core = adminClient(cp).makeApiClient(k8s.CoreV1Api);
  const namespace = OPERATOR_NAMESPACE;
  await core.createNamespacedPod({
    namespace,
    body: {
      metadata: { name, namespace, labels: RELAY_POD_LABELS },
      spec: {
        containers: [
          { name: 'relay', image: 'mail-plus:test', ports: [{ name: 'admin', containerPort: adminPort }] },
        ],
      },
    },
  });
  let ready: boolean | undefined;
  let stopped = false;
  const setReady = async (value: boolean) => {
    const status = {
      phase: 'Running',
      podIP: '127.0.0.1',
      podIPs: [{ ip: '127.0.0.1' }],
      conditions: [{ type: 'Ready', status: value ? 'True' : 'False', lastTransitionTime: new Date() }],
    };
    await core.replaceNamespacedPodStatus({
      name,
      namespace,
      body: { ...(await core.readNamespacedPod({ name, namespace })), status },
    });
    ready = value;
  };
  let done = false;
  void exited.then(() => {
    done = true;
  });
  if (opts.alwaysReady) await setReady(true);
  const probe = (async () => {
    while (!stopped && !opts.alwaysReady) {
      // a process that exited fails its probe for good (no kubelet restarts it here)
      const ok = !done && (await readyzOk(adminPort));
      if (ok !== ready && !stopped) await setReady(ok).catch(() => undefined);
      if (done) break;
      await sleep(200);
    }
  })();
  return async () => {
    stopped = true;
    await probe;
    await core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 }).catch(() => undefined);
  };
}

export async function startRelayProcess(
  cp: ControlPlane,
  id: string,
  extra: string[] = [],
  echo = !!process.env.MAILPLUS_TEST_ECHO,
  /** Node flags for the relay process (NODE_OPTIONS), e.g. the heap limit of a bigger pod. */
  nodeOptions?: string,
): Promise<RelayProcess> {
  const smtpPort = await freePort();
  const adminPort = await freePort();
  const p = startProcess(
    NODE,
    [
      MAILPLUS,
      'relay',
      `--configmap=${OPERATOR_NAMESPACE}/${CONFIGMAP}`,
      `--kubeconfig=${cp.kubeconfigFor('relay')}`,
      `--listen=127.0.0.1:${smtpPort}`,
      `--admin-listen=127.0.0.1:${adminPort}`,
      '--drain-timeout=1s',
      ...extra,
    ],
    {
      name: `relay ${id}`,
      echo,
      cwd: REPO,
      env: nodeOptions ? { ...process.env, NODE_OPTIONS: nodeOptions } : undefined,
    },
  );
  await p.waitForPort(smtpPort, '127.0.0.1', 20_000);
  const removePod = await relayPod(cp, id, adminPort, p.exited);
  const stopProcess = p.stop.bind(p);
  const stop = async (graceMs?: number) => {
    const code = await stopProcess(graceMs);
    await removePod();
    return code;
  };
  return Object.assign(p, { smtpPort, adminPort, id, stop });
}

/** Sets a reject MailRoute's message (a spec change the operator must publish); returns its new generation. */
export async function patchRejectMessage(
  cp: ControlPlane,
  namespace: string,
  name: string,
  message: string,
): Promise<number> {
  const out = await kubectl(cp, [
    'patch',
    'mailroute',
    '-n',
    namespace,
    name,
    '--type=merge',
    '-o',
    'jsonpath={.metadata.generation}',
    '-p',
    JSON.stringify({ spec: { reject: { code: 550, message } } }),
  ]);
  return Number(out);
}

export async function metricsText(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) });
  return res.text();
}

/** The value of one sample `name{labels}` in Prometheus text, or undefined. */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

export async function relayConfigInfo(
  adminPort: number,
): Promise<{ hash: string | null; generation: number }> {
  const res = await fetch(`http://127.0.0.1:${adminPort}/config`, { signal: AbortSignal.timeout(5000) });
  return (await res.json()) as { hash: string | null; generation: number };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls until fn returns a truthy value (returned) or the deadline passes (throws with the last value). */
export async function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined | false | null> | T | undefined | false | null,
  timeoutMs = 30_000,
  everyMs = 200,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as T;
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`,
      );
    }
    await sleep(everyMs);
  }
}

export interface Cond {
  type: string;
  status: string;
  reason: string;
  message: string;
  observedGeneration?: number;
  lastTransitionTime?: string;
}

export interface MailPlusObject {
  metadata: { name: string; namespace: string; generation: number; resourceVersion: string; uid: string };
  spec: Record<string, unknown>;
  status?: { observedGeneration?: number; conditions?: Cond[] };
}

export async function getResource(
  kc: k8s.KubeConfig,
  plural: 'mailroutes' | 'tenantpolicies',
  namespace: string,
  name: string,
): Promise<MailPlusObject> {
  const co = kc.makeApiClient(k8s.CustomObjectsApi);
  return (await co.getNamespacedCustomObject({
    group: 'mailplus.io',
    version: 'v1alpha1',
    plural,
    namespace,
    name,
  })) as MailPlusObject;
}

export const cond = (o: MailPlusObject | undefined, type: string): Cond | undefined =>
  o?.status?.conditions?.find((c) => c.type === type);

/** Waits until the object's status describes its current generation and `check` holds. */
export async function waitForStatus(
  kc: k8s.KubeConfig,
  plural: 'mailroutes' | 'tenantpolicies',
  namespace: string,
  name: string,
  check: (o: MailPlusObject) => boolean,
  timeoutMs = 30_000,
): Promise<MailPlusObject> {
  return eventually(
    `${plural} ${namespace}/${name} status`,
    async () => {
      const o = await getResource(kc, plural, namespace, name);
      return o.status?.observedGeneration === o.metadata.generation && check(o) ? o : undefined;
    },
    timeoutMs,
  );
}

export async function listEvents(
  kc: k8s.KubeConfig,
  namespace: string,
): Promise<
  Array<{
    reason?: string;
    note?: string;
    type?: string;
    regarding?: { name?: string; kind?: string };
    reportingController?: string;
  }>
> {
  const api = kc.makeApiClient(k8s.EventsV1Api);
  const list = await api.listNamespacedEvent({ namespace });
  return list.items;
}
