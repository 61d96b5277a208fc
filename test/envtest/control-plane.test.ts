// The envtest control plane itself: a real kube-apiserver v1.20.2 + etcd, RBAC enforced,
// kubeconfigs per user, API-server restart on the same port. Never skipped: missing binaries
// fail (scripts/envtest-assets.sh builds them; see docs/envtest.md).
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ControlPlane,
  K8S_VERSION,
  kubectl,
  OPERATOR_USER,
  startControlPlane,
} from './control-plane.ts';

// The first run may build kube-apiserver (minutes); starting takes ~5-20 s.
const START_TIMEOUT_MS = 20 * 60_000;

// A CRD with a CEL rule: v1.20 predates CEL, so startControlPlane must drop the rule to apply it.
const WIDGET_CRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.envtest.mailplus.io
spec:
  group: envtest.mailplus.io
  scope: Namespaced
  names: { plural: widgets, singular: widget, kind: Widget, listKind: WidgetList }
  versions:
    - name: v1alpha1
      served: true
      storage: true
      subresources: { status: {} }
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              x-kubernetes-validations:
                - rule: self.min <= self.max
                  message: min must not exceed max
              properties:
                min: { type: integer }
                max: { type: integer }
            status:
              type: object
              properties:
                phase: { type: string }
`;

describe('envtest control plane', () => {
  let cp: ControlPlane;
  let crdDir: string;

  beforeAll(async () => {
    crdDir = await mkdtemp(join(tmpdir(), 'mailplus-test-crds-'));
    await writeFile(join(crdDir, 'widget.yaml'), WIDGET_CRD);
    cp = await startControlPlane({ crdDir });
  }, START_TIMEOUT_MS);

  afterAll(async () => {
    await cp?.stop();
    if (crdDir) await rm(crdDir, { recursive: true, force: true });
  }, 60_000);

  it('serves kube-apiserver v1.20.2 to kubectl with the admin kubeconfig', async () => {
    const version = JSON.parse(await kubectl(cp, ['version', '-o', 'json']));
    expect(version.serverVersion.gitVersion).toBe(`v${K8S_VERSION}`);
    const namespaces = await kubectl(cp, ['get', 'ns', '-o', 'name']);
    expect(namespaces.split('\n')).toContain('namespace/default');
    expect(cp.server).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  }, 60_000);

  it('authenticates the operator token as the operator ServiceAccount and enforces RBAC', async () => {
    const whoami = await kubectl(cp, ['auth', 'can-i', 'list', 'secrets', '--all-namespaces'], {
      user: 'operator',
    }).catch((err: Error) => err.message);
    expect(whoami).toMatch(/\bno\b/);

    await expect(kubectl(cp, ['get', 'secrets', '--all-namespaces'], { user: 'operator' })).rejects.toThrow(
      /forbidden.*system:serviceaccount:mailplus-system:mailplus-operator/is,
    );

    // Granting the permission (as admin) makes the same request pass: RBAC, not a broken token.
    await kubectl(cp, [
      'create',
      'clusterrole',
      'envtest-secret-reader',
      '--verb=list',
      '--resource=secrets',
    ]);
    await kubectl(cp, [
      'create',
      'clusterrolebinding',
      'envtest-secret-reader',
      '--clusterrole=envtest-secret-reader',
      '--serviceaccount=mailplus-system:mailplus-operator',
    ]);
    expect(cp.userNames.operator).toBe(OPERATOR_USER);
    let lastError: unknown;
    for (let i = 0; i < 50; i++) {
      try {
        await kubectl(cp, ['get', 'secrets', '--all-namespaces'], { user: 'operator' });
        lastError = undefined;
        break;
      } catch (err) {
        lastError = err; // the RBAC authorizer's informer may take a moment to see the binding
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    expect(lastError).toBeUndefined();
    // The relay's identity still has no such right.
    await expect(kubectl(cp, ['get', 'secrets', '--all-namespaces'], { user: 'relay' })).rejects.toThrow(
      /forbidden/i,
    );
  }, 60_000);

  it('applies CRDs from crdDir, dropping CEL rules the v1.20 server cannot take', async () => {
    expect(cp.crds).toEqual({
      crds: ['customresourcedefinition.apiextensions.k8s.io/widgets.envtest.mailplus.io'],
      celRulesDropped: 1,
    });
    const established = await kubectl(cp, [
      'get',
      'crd',
      'widgets.envtest.mailplus.io',
      '-o',
      'jsonpath={.status.conditions[?(@.type=="Established")].status}',
    ]);
    expect(established).toBe('True');
    // Without CEL the server does not enforce the rule: the operator must check it itself.
    const out = await kubectl(cp, ['apply', '--server-side', '-f', '-'], {
      input:
        'apiVersion: envtest.mailplus.io/v1alpha1\nkind: Widget\nmetadata: { name: w1, namespace: default }\nspec: { min: 5, max: 1 }\n',
    });
    expect(out).toContain('widget.envtest.mailplus.io/w1 serverside-applied');
  }, 60_000);

  it('serves events.k8s.io/v1 and coordination.k8s.io/v1 (Lease)', async () => {
    const versions = (await kubectl(cp, ['api-versions'])).split('\n');
    expect(versions).toEqual(expect.arrayContaining(['events.k8s.io/v1', 'coordination.k8s.io/v1']));
  }, 60_000);

  it('restarts the API server on the same port, keeping the data in etcd', async () => {
    await kubectl(cp, ['create', 'namespace', 'envtest-restart']);
    const pidBefore = cp.apiServerPid();
    await cp.restartApiServer();
    expect(cp.apiServerPid()).not.toBe(pidBefore);
    expect(() => process.kill(pidBefore, 0)).toThrow(); // the old process is gone
    const ns = await kubectl(cp, ['get', 'namespace', 'envtest-restart', '-o', 'name']);
    expect(ns.trim()).toBe('namespace/envtest-restart');
  }, 120_000);

  it('stops the API server for as long as the test wants, then starts it against the same etcd', async () => {
    await kubectl(cp, ['create', 'namespace', 'envtest-outage']);
    const etcdPid = cp.etcdPid();
    await expect(cp.startApiServer()).rejects.toThrow(/while kube-apiserver runs/);
    const pidBefore = cp.apiServerPid();
    await cp.stopApiServer();
    expect(() => process.kill(pidBefore, 0)).toThrow();
    await expect(kubectl(cp, ['get', 'ns'], { timeoutMs: 10_000 })).rejects.toThrow(/refused/);
    await cp.startApiServer();
    expect(cp.etcdPid()).toBe(etcdPid);
    const ns = await kubectl(cp, ['get', 'namespace', 'envtest-outage', '-o', 'name']);
    expect(ns.trim()).toBe('namespace/envtest-outage');
  }, 120_000);

  it('stops every process it started and removes its directory', async () => {
    const pids = [cp.apiServerPid(), cp.etcdPid()];
    const dir = cp.dir;
    await cp.stop();
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
    expect(existsSync(dir)).toBe(false);
    await cp.stop(); // idempotent
  }, 60_000);
});
