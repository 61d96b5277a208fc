// One ownership rule in file mode and in the cluster: a domain claimed by two tenants belongs to
// the older claim. In the cluster "older" is creation time; in files document order stands in for
// it. The same documents, created in the cluster in document order, must give the same owner as
// `mailplus route -f` / `validate` on the files (real CLI, real API server, real operator).
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { type ControlPlane, kubectl } from '../envtest/control-plane.ts';
import {
  adminClient,
  cond,
  MAILPLUS,
  NODE,
  type OperatorProcess,
  REPO,
  startCluster,
  startOperatorProcess,
  waitForStatus,
} from './support.ts';

const DOMAIN = 'shared.example';

// zeta comes first in the file but last by name: today's name order and document order disagree
const docs = ['zeta', 'alpha'].flatMap((ns) => [
  {
    apiVersion: 'mailplus.io/v1alpha1',
    kind: 'TenantPolicy',
    metadata: { name: 'policy', namespace: ns },
    spec: { domains: [DOMAIN] },
  },
  {
    apiVersion: 'mailplus.io/v1alpha1',
    kind: 'MailRoute',
    metadata: { name: 'inbox', namespace: ns },
    spec: {
      match: { recipients: [`*@${DOMAIN}`] },
      forward: { upstreams: [{ host: `mx.${ns}.internal` }] },
    },
  },
]);

function mailplus(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(NODE, [MAILPLUS, ...args], { cwd: REPO, timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

describe('the same owner in file mode and in the cluster', () => {
  let dir: string;
  let file: string;
  let cp: ControlPlane;
  let kc: k8s.KubeConfig;
  let operator: OperatorProcess;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mailplus-order-'));
    file = join(dir, 'tenants.yaml');
    writeFileSync(file, docs.map((d) => stringify(d)).join('---\n'));
    cp = await startCluster();
    kc = adminClient(cp);
    await kubectl(cp, ['create', 'namespace', 'zeta']);
    await kubectl(cp, ['create', 'namespace', 'alpha']);
    operator = await startOperatorProcess(cp, 'op-order');
  }, 180_000);

  afterAll(async () => {
    await operator?.stop(5000);
    await cp?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('files: the earlier document holds the domain (route -f, validate)', async () => {
    const r = await mailplus(['route', '-f', file, '--to', `x@${DOMAIN}`]);
    expect(r.stdout, r.stderr).toContain('relay via route zeta/inbox (tenant zeta');
    const v = await mailplus(['validate', '-f', file]);
    expect(v.stdout + v.stderr).toMatch(
      /TenantPolicy alpha\/policy.*DomainClaimedByOtherTenant.*held by TenantPolicy zeta\/policy/,
    );
  }, 60_000);

  it('cluster: the same documents created in that order give the same owner', async () => {
    for (const [i, d] of docs.entries()) {
      // creation timestamps have one-second precision: one second between creations
      if (i > 0 && d.kind === 'TenantPolicy') await new Promise((r) => setTimeout(r, 1100));
      await kubectl(cp, ['create', '-f', '-'], { input: stringify(d) });
    }
    const alpha = await waitForStatus(kc, 'tenantpolicies', 'alpha', 'policy', (o) => !!cond(o, 'Ready'));
    expect(cond(alpha, 'Accepted')).toMatchObject({ status: 'False', reason: 'DomainClaimedByOtherTenant' });
    expect(cond(alpha, 'Accepted')?.message).toContain('held by TenantPolicy zeta/policy');
    await waitForStatus(kc, 'mailroutes', 'zeta', 'inbox', (o) => cond(o, 'Accepted')?.status === 'True');
    const r = await mailplus([
      'route',
      '--cluster',
      `--kubeconfig=${cp.kubeconfigAdmin}`,
      '--to',
      `x@${DOMAIN}`,
    ]);
    expect(r.stdout, r.stderr).toContain('relay via route zeta/inbox (tenant zeta');
  }, 60_000);
});
