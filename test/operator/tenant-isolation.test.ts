// Oversized-tenant drill on a real kube-apiserver (RBAC from the chart's rule files): a tenant that
// may only create MailRoutes in its own namespace pushes 300 routes of 100 patterns each (over
// 1 MiB of relay config gzipped: 1.08 MiB). Everyone else keeps publishing: another tenant's new route and a
// revocation reach a real relay process (`mailplus relay --configmap`, real SMTP) while the
// offender exists, the offender's previously published route keeps delivering, and its resources
// say which budget they broke. Run with one ConfigMap (the default) and with --config-shards=4.

import { readFile } from 'node:fs/promises';
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { decodeRelayConfigMap } from '../../contract/config/configmap.ts';
import { unionHash } from '../../contract/config/hash.ts';
import { unionOfShards } from '../../contract/config/shards.ts';
import type { RelayConfig } from '../../contract/config/types.gen.ts';
import { type ControlPlane, kubectl } from '../envtest/control-plane.ts';
import { type CaptureSink, startCaptureSink } from '../support/capture-sink.ts';
import { incompressiblePatterns } from '../support/fleet.ts';
import { runSwaks } from '../support/swaks.ts';
import {
  adminClient,
  CONFIGMAP,
  cond,
  eventually,
  getResource,
  metricsText,
  OPERATOR_NAMESPACE,
  type OperatorProcess,
  type RelayProcess,
  rbacManifest,
  relayConfigInfo,
  sample,
  startCluster,
  startOperatorProcess,
  startRelayProcess,
  waitForStatus,
} from './support.ts';

const route = (ns: string, name: string, recipients: string[], port: number) => ({
  apiVersion: 'mailplus.io/v1alpha1',
  kind: 'MailRoute',
  metadata: { name, namespace: ns },
  spec: { match: { recipients }, forward: { upstreams: [{ host: '127.0.0.1', port, tls: 'none' }] } },
});
const yaml = (docs: unknown[]) => docs.map((d) => stringify(d)).join('---\n');

describe.each([1, 4])('oversized tenant with --config-shards=%i (real API server, real relay)', (shards) => {
  let cp: ControlPlane;
  let kc: k8s.KubeConfig;
  let sink: CaptureSink;
  let operator: OperatorProcess;
  let relay: RelayProcess;

  const send = (to: string) => runSwaks({ port: relay.smtpPort, to, from: 'ci@example.org', timeoutSec: 10 });

  beforeAll(async () => {
    cp = await startCluster();
    if (shards > 1)
      await kubectl(cp, ['apply', '-f', '-'], { input: rbacManifest(OPERATOR_NAMESPACE, shards) });
    kc = adminClient(cp);
    sink = await startCaptureSink({ host: '127.0.0.1' });
    await kubectl(cp, ['create', 'namespace', 'good']);
    await kubectl(cp, ['create', 'namespace', 'hostile']);
    // the hostile tenant's own user may create MailRoutes in its namespace, nothing else
    await kubectl(cp, ['apply', '-f', '-'], {
      input: yaml([
        {
          apiVersion: 'rbac.authorization.k8s.io/v1',
          kind: 'Role',
          metadata: { name: 'mailroute-editor', namespace: 'hostile' },
          rules: [
            { apiGroups: ['mailplus.io'], resources: ['mailroutes'], verbs: ['create', 'get', 'list'] },
          ],
        },
        {
          apiVersion: 'rbac.authorization.k8s.io/v1',
          kind: 'RoleBinding',
          metadata: { name: 'mailroute-editor', namespace: 'hostile' },
          roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'mailroute-editor' },
          subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: 'hostile-dev' }],
        },
        {
          apiVersion: 'mailplus.io/v1alpha1',
          kind: 'TenantPolicy',
          metadata: { name: 'policy', namespace: 'good' },
          spec: { domains: ['good.example.com'] },
        },
        {
          apiVersion: 'mailplus.io/v1alpha1',
          kind: 'TenantPolicy',
          metadata: { name: 'policy', namespace: 'hostile' },
          spec: { domains: ['hostile.example.com', '*.hostile.example.com'] },
        },
        route('good', 'old', ['old@good.example.com'], sink.port),
        route('hostile', 'first', ['first@hostile.example.com'], sink.port),
      ]),
    });
    operator = await startOperatorProcess(cp, `op-shards-${shards}`, [`--config-shards=${shards}`]);
    relay = await startRelayProcess(cp, `relay-shards-${shards}`);
  }, 180_000);

  afterAll(async () => {
    await relay?.stop(5000);
    await operator?.stop(5000);
    await sink?.close();
    await cp?.stop();
  }, 60_000);

  it('runs with the V8 flags and malloc thresholds of bin/v8-flags.js', async () => {
    const argv = (await readFile(`/proc/${operator.pid}/cmdline`, 'utf8')).split('\0');
    expect(argv).toContain('--heap-growing-percent=20');
    // glibc parses GLIBC_TUNABLES in place: /proc may show its ':' separators as NULs
    expect(await readFile(`/proc/${operator.pid}/environ`, 'utf8')).toMatch(
      /(^|\0)GLIBC_TUNABLES=glibc\.malloc\.trim_threshold=131072[:\0]glibc\.malloc\.mmap_threshold=131072(\0|$)/,
    );
  });

  it('serves both tenants before the flood', async () => {
    await eventually('relay serves old@good', async () => {
      if (!(await relayConfigInfo(relay.adminPort)).hash) return false;
      return (await send('old@good.example.com')).exitCode === 0;
    });
    expect((await send('first@hostile.example.com')).exitCode).toBe(0);
  }, 60_000);

  it('other tenants keep publishing while the offender is over budget; the offender says which limit', async () => {
    const flood = Array.from({ length: 300 }, (_, r) =>
      route('hostile', `flood-${r}`, incompressiblePatterns(r, 'hostile.example.com', 100), sink.port),
    );
    // as the tenant's own user (kubectl create: no last-applied annotation doubling each object)
    await kubectl(cp, ['create', '--as=hostile-dev', '-f', '-'], { input: yaml(flood) });
    await expect(
      kubectl(cp, ['create', '--as=hostile-dev', '-f', '-'], {
        input: yaml([{ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x', namespace: 'hostile' } }]),
      }),
    ).rejects.toThrow(/forbidden/);

    // another tenant's change and revocation go live while the offender exists
    await kubectl(cp, ['apply', '-f', '-'], {
      input: yaml([route('good', 'new', ['new@good.example.com'], sink.port)]),
    });
    await kubectl(cp, ['delete', 'mailroute', '-n', 'good', 'old']);
    const r = await eventually(
      'the new route and the revocation are live on the relay',
      async () => {
        const n = await send('new@good.example.com');
        const o = await send('old@good.example.com');
        return n.exitCode === 0 && o.rcpt[0]?.code === 550 ? o : undefined;
      },
      // the operator compiles the offender's 300 routes of 100 patterns as they arrive (batched):
      // 10-35 s for this whole test on 2 cores with the suite's other files running beside it
      60_000,
      500,
    );
    expect(r.rcpt[0]?.text).toMatch(/5\.1\.1 No route for old@good\.example\.com/);

    // the offender's resources say which budget they broke
    const over = await waitForStatus(
      kc,
      'mailroutes',
      'hostile',
      'flood-299',
      (o) => cond(o, 'Accepted')?.reason === 'TenantBudgetExceeded',
      60_000,
    );
    expect(cond(over, 'Accepted')?.status).toBe('False');
    expect(cond(over, 'Accepted')?.message).toMatch(
      /tenant hostile is over its budget: 30001 recipient and sender patterns \(limit 10000, --tenant-max-patterns\); \d+ bytes of relay config \(limit 524288, --tenant-max-config-bytes\)/,
    );
    expect(cond(over, 'Ready')).toMatchObject({ status: 'False', reason: 'TenantBudgetExceeded' });
    const policy = await waitForStatus(
      kc,
      'tenantpolicies',
      'hostile',
      'policy',
      (o) => cond(o, 'Accepted')?.reason === 'TenantBudgetExceeded',
    );
    expect(cond(policy, 'Accepted')?.message).toMatch(/routes published before stay in force/);
    // statuses are written for everyone (the offender's 300 come first in the queue)
    await waitForStatus(kc, 'mailroutes', 'good', 'new', (o) => cond(o, 'Ready')?.status === 'True');

    // the offender's previously published routes still deliver (the operator may have published
    // the first part of the flood while it was within budget); what broke the budget is not served
    expect((await send('first@hostile.example.com')).exitCode).toBe(0);
    expect((await send('user299@hostile.example.com')).rcpt[0]?.code).toBe(550);
    expect(
      sample(await metricsText(operator.metricsPort), 'mailplus_operator_tenants_held_back', {
        reason: 'TenantBudgetExceeded',
      }),
    ).toBe(1);
    const first = await getResource(kc, 'mailroutes', 'hostile', 'first');
    expect(cond(first, 'Accepted')?.reason).toBe('TenantBudgetExceeded');
  }, 240_000);

  it.runIf(shards > 1)(
    'the index names the hash of the union of the stored shards: the one relays serve',
    async () => {
      const core = kc.makeApiClient(k8s.CoreV1Api);
      const read = async (name: string) =>
        decodeRelayConfigMap(await core.readNamespacedConfigMap({ name, namespace: OPERATOR_NAMESPACE }));
      const index = await read(CONFIGMAP);
      expect(index.unionHash).toMatch(/^sha256:/);
      const docs = new Map<string, RelayConfig>();
      for (const s of index.shards ?? []) docs.set(s.configMap, await read(s.configMap));
      // the union hash (made from tenant digests) of the stored shards' content
      const computed = unionOfShards(index.shards ?? [], docs, { hash: unionHash });
      expect(computed.ok && computed.config.hash).toBe(index.unionHash);
      await eventually(
        'the relay serves the union the index names',
        async () => (await relayConfigInfo(relay.adminPort)).hash === index.unionHash,
      );
    },
    60_000,
  );
});
