// The Kubernetes minimum (Chart.yaml kubeVersion, README, docs/install.md) is what the chart and
// CRDs really need, proven with a real helm and a real kube-apiserver v1.20.2 (no CEL, no
// policy/v1 PodDisruptionBudget, no autoscaling/v2): the chart renders CEL rules only from 1.25
// (a rule's `reason` only from 1.28), PDB and HPA API versions by server version, and the
// documented way to install the CRDs on an old server works with kubectl, while `kubectl apply -f
// crds/` (CEL included) is refused there. Skipped loudly without helm, like helm.test.ts.
import { execFile } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments, stringify } from 'yaml';
import {
  type ControlPlane,
  K8S_VERSION,
  kubectl,
  OPERATOR_NAMESPACE,
  startControlPlane,
} from '../envtest/control-plane.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const chart = join(root, 'charts/mail-plus');

function findHelm(): string | undefined {
  const candidates = process.env.HELM
    ? [process.env.HELM]
    : (process.env.PATH ?? '').split(delimiter).map((d) => join(d, 'helm'));
  return candidates.find((c) => {
    try {
      accessSync(c, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}
const helm = findHelm();
if (!helm) {
  console.warn(
    '\n*** test/chart/kube-version.test.ts SKIPPED: no helm binary (set HELM=/path/to/helm). ***\n',
  );
}

function helmTemplate(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      helm as string,
      ['template', 'mailplus', chart, '--namespace', OPERATOR_NAMESPACE, ...args],
      { timeout: 60_000, killSignal: 'SIGKILL', maxBuffer: 32 * 1024 * 1024 },
      (err, out, errOut) =>
        err ? reject(new Error(`helm template failed: ${err.message}\n${errOut}`)) : resolve(out),
    );
  });
}

interface Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
}
const docs = (text: string) =>
  parseAllDocuments(text)
    .map((d) => d.toJS() as Obj | null)
    .filter((d): d is Obj => d !== null);

/** Every x-kubernetes-validations rule below node. */
function celRules(node: unknown): Array<Record<string, unknown>> {
  if (Array.isArray(node)) return node.flatMap(celRules);
  if (!node || typeof node !== 'object') return [];
  const out: Array<Record<string, unknown>> = [];
  for (const [k, v] of Object.entries(node)) {
    if (k === 'x-kubernetes-validations') out.push(...(v as Array<Record<string, unknown>>));
    else out.push(...celRules(v));
  }
  return out;
}

const withHpa = ['--set', 'relay.autoscaling.enabled=true'];
const apiVersionOf = (objs: Obj[], kind: string) => [
  ...new Set(objs.filter((o) => o.kind === kind).map((o) => o.apiVersion)),
];

describe.skipIf(!helm)('Kubernetes versions the chart supports (real helm)', () => {
  it('Chart.yaml states the same minimum as the README and docs/install.md', () => {
    const min = (parse(readFileSync(join(chart, 'Chart.yaml'), 'utf8')) as { kubeVersion: string })
      .kubeVersion;
    expect(min).toBe('>=1.20.0-0');
    for (const doc of ['README.md', 'docs/install.md']) {
      expect(readFileSync(join(root, doc), 'utf8'), doc).toContain('Kubernetes 1.20 or newer');
    }
  });

  it('refuses a server older than the minimum', async () => {
    await expect(helmTemplate(['--kube-version', '1.19.16'])).rejects.toThrow(/kubeVersion/);
  }, 60_000);

  it('1.20-1.24: no CEL rules, PDB policy/v1beta1 (before 1.21), HPA autoscaling/v2beta2 (before 1.23)', async () => {
    const objs = docs(await helmTemplate(['--kube-version', K8S_VERSION, ...withHpa]));
    const crds = objs.filter((o) => o.kind === 'CustomResourceDefinition');
    expect(crds).toHaveLength(2);
    expect(celRules(crds)).toEqual([]);
    expect(apiVersionOf(objs, 'PodDisruptionBudget')).toEqual(['policy/v1beta1']);
    expect(apiVersionOf(objs, 'HorizontalPodAutoscaler')).toEqual(['autoscaling/v2beta2']);
    const at122 = docs(await helmTemplate(['--kube-version', '1.22.0', ...withHpa]));
    expect(apiVersionOf(at122, 'PodDisruptionBudget')).toEqual(['policy/v1']);
    expect(apiVersionOf(at122, 'HorizontalPodAutoscaler')).toEqual(['autoscaling/v2beta2']);
  }, 60_000);

  it('1.25-1.27: CEL rules without reason; 1.28+: with reason (as in crds/)', async () => {
    const source = celRules(
      ['mailplus.io_mailroutes.yaml', 'mailplus.io_tenantpolicies.yaml'].map((f) =>
        parse(readFileSync(join(root, 'crds', f), 'utf8')),
      ),
    );
    expect(source.length).toBeGreaterThan(0);
    const at125 = celRules(docs(await helmTemplate(['--kube-version', '1.25.0', ...withHpa])));
    expect(at125.map((r) => r.rule).sort()).toEqual(source.map((r) => r.rule).sort());
    expect(at125.filter((r) => 'reason' in r || 'fieldPath' in r)).toEqual([]);
    const objs128 = docs(await helmTemplate(['--kube-version', '1.28.0', ...withHpa]));
    expect(celRules(objs128).sort((a, b) => String(a.rule).localeCompare(String(b.rule)))).toEqual(
      source.sort((a, b) => String(a.rule).localeCompare(String(b.rule))),
    );
    expect(apiVersionOf(objs128, 'PodDisruptionBudget')).toEqual(['policy/v1']);
    expect(apiVersionOf(objs128, 'HorizontalPodAutoscaler')).toEqual(['autoscaling/v2']);
  }, 60_000);

  describe(`on a real kube-apiserver ${K8S_VERSION} (no CEL)`, () => {
    let cp: ControlPlane | undefined;

    beforeAll(async () => {
      cp = await startControlPlane();
      await kubectl(cp, ['create', 'namespace', OPERATOR_NAMESPACE]);
    }, 180_000);

    afterAll(async () => {
      await cp?.stop();
    }, 30_000);

    it('kubectl apply -f crds/ (CEL rules included) is refused, as documented', async () => {
      const c = cp as ControlPlane;
      await expect(kubectl(c, ['apply', '-f', join(root, 'crds')])).rejects.toThrow(
        /x-kubernetes-validations/,
      );
      await expect(kubectl(c, ['apply', '--server-side', '-f', join(root, 'crds')])).rejects.toThrow(
        /x-kubernetes-validations/,
      );
    }, 60_000);

    it('the documented install works: chart-rendered CRDs by server-side apply, then the schema rules hold', async () => {
      const c = cp as ControlPlane;
      // docs/install.md: helm template ... --kube-version <server> --show-only templates/crds.yaml | kubectl apply --server-side -f -
      const crds = await helmTemplate(['--kube-version', K8S_VERSION, '--show-only', 'templates/crds.yaml']);
      const out = await kubectl(c, ['apply', '--server-side', '-f', '-'], { input: crds });
      expect(out).toMatch(/tenantpolicies\.mailplus\.io serverside-applied/);
      await kubectl(c, [
        'wait',
        '--for=condition=Established',
        '--timeout=60s',
        'crd/tenantpolicies.mailplus.io',
        'crd/mailroutes.mailplus.io',
      ]);
      // what the schema checks without CEL is still checked by the server
      await kubectl(c, ['create', 'namespace', 'sales']);
      const tp = (cidr: string, domain = 'sales.example.com') =>
        stringify({
          apiVersion: 'mailplus.io/v1alpha1',
          kind: 'TenantPolicy',
          metadata: { name: 'sales', namespace: 'sales' },
          spec: { domains: [domain], clientCIDRs: [cidr] },
        });
      await expect(kubectl(c, ['apply', '-f', '-'], { input: tp('10.0.0.0/33') })).rejects.toThrow(/cidr/);
      await expect(
        kubectl(c, ['apply', '-f', '-'], { input: tp('10.0.0.0/8', 'a..example.com') }),
      ).rejects.toThrow(/spec\.domains/);
      await kubectl(c, ['apply', '-f', '-'], { input: tp('10.0.0.0/8') });
    }, 90_000);

    it('the whole chart rendered for this server passes a server-side dry-run (PDB v1beta1, HPA v2beta2 included)', async () => {
      const c = cp as ControlPlane;
      const served = new Set((await kubectl(c, ['api-versions'])).split('\n').filter(Boolean));
      const objs = docs(await helmTemplate(['--kube-version', K8S_VERSION, ...withHpa]));
      // only the optional integrations (Prometheus Operator, cert-manager) need CRDs this server lacks
      const foreign = objs.filter((o) => !served.has(o.apiVersion));
      expect(foreign.map((o) => o.apiVersion).filter((v) => !/coreos\.com|cert-manager\.io/.test(v))).toEqual(
        [],
      );
      const mine = objs.filter((o) => served.has(o.apiVersion));
      expect(mine.map((o) => o.kind)).toEqual(
        expect.arrayContaining(['PodDisruptionBudget', 'HorizontalPodAutoscaler']),
      );
      const out = await kubectl(
        c,
        [
          'apply',
          '--server-side',
          '--dry-run=server',
          '--field-manager=helm-test',
          '--force-conflicts',
          '-f',
          '-',
        ],
        { input: mine.map((o) => stringify(o)).join('---\n') },
      );
      expect(out.split('\n').filter(Boolean)).toHaveLength(mine.length);
    }, 90_000);
  });
});
