// End to end on a real kube-apiserver (v1.20, RBAC enforced with the chart's rules): kubectl
// apply -f examples/ → the operator (a child process, operator ServiceAccount token) publishes the
// compiled config to the ConfigMap → a relay (child process, relay token) following the ConfigMap
// routes a real message to a capture upstream → statuses and Events; invalid, conflicting and
// cross-tenant resources; a Service that appears later; updates; deletion stops traffic.
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeRelayConfigMap } from '../../contract/config/configmap.ts';
import { type ControlPlane, kubectl } from '../envtest/control-plane.ts';
import { type CaptureSink, startCaptureSink } from '../support/capture-sink.ts';
import { runSwaks } from '../support/swaks.ts';
import {
  adminClient,
  CONFIGMAP,
  cond,
  eventually,
  listEvents,
  metricsText,
  OPERATOR_NAMESPACE,
  type OperatorProcess,
  REPO,
  type RelayProcess,
  relayConfigInfo,
  sample,
  startCluster,
  startOperatorProcess,
  startRelayProcess,
  waitForStatus,
} from './support.ts';

const ready = (o: { status?: { conditions?: Array<{ type: string; status: string }> } }) =>
  o.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';

describe('operator end to end (real API server)', () => {
  let cp: ControlPlane;
  let kc: k8s.KubeConfig;
  let core: k8s.CoreV1Api;
  let sink: CaptureSink;
  let operator: OperatorProcess;
  let relay: RelayProcess;
  let examples: string;

  const readConfigMap = () =>
    core.readNamespacedConfigMap({ name: CONFIGMAP, namespace: OPERATOR_NAMESPACE });
  const apply = (yaml: string) => kubectl(cp, ['apply', '-f', '-'], { input: yaml });

  beforeAll(async () => {
    cp = await startCluster();
    kc = adminClient(cp);
    core = kc.makeApiClient(k8s.CoreV1Api);
    sink = await startCaptureSink({ host: '127.0.0.1' });
    // examples/ with the capture upstream's port instead of 2526
    examples = mkdtempSync(join(tmpdir(), 'mailplus-examples-'));
    // the tenants and routes (examples/ holds other things too, e.g. Argo CD Applications)
    cpSync(join(REPO, 'examples/tenants.yaml'), join(examples, 'tenants.yaml'));
    cpSync(join(REPO, 'examples/routes'), join(examples, 'routes'), { recursive: true });
    for (const dir of [examples, join(examples, 'routes')]) {
      for (const f of readdirSync(dir).filter((n) => n.endsWith('.yaml'))) {
        const p = join(dir, f);
        writeFileSync(p, readFileSync(p, 'utf8').replaceAll('port: 2526', `port: ${sink.port}`));
      }
    }
    await kubectl(cp, ['create', 'namespace', 'sales']);
    await kubectl(cp, ['create', 'namespace', 'support']);
    await kubectl(cp, ['create', 'namespace', 'engineering']);
    operator = await startOperatorProcess(cp, 'op-e2e');
    relay = await startRelayProcess(cp, 'relay-e2e');
  }, 180_000);

  afterAll(async () => {
    await relay?.stop(5000);
    await operator?.stop(5000);
    await sink?.close();
    await cp?.stop();
    if (examples) rmSync(examples, { recursive: true, force: true });
  }, 60_000);

  it('publishes the config compiled from kubectl apply -f examples/ to the ConfigMap, with only its own labels', async () => {
    await kubectl(cp, ['apply', '-f', examples, '-f', join(examples, 'routes')]);
    // kubectl creates the resources one by one: wait for a config that holds every one of them,
    // not for the first one that names the three tenants.
    const applied = await kubectl(cp, ['get', 'mailroutes,tenantpolicies', '-A', '-o', 'json']);
    const keys = (JSON.parse(applied).items as k8s.KubernetesObject[]).map(
      (o) => `${o.kind}/${o.metadata?.namespace}/${o.metadata?.name}`,
    );
    const cm = await eventually('ConfigMap with every applied resource', async () => {
      const c = await readConfigMap().catch(() => undefined);
      const sources = c && decodeRelayConfigMap(c).sources;
      return sources && keys.every((k) => k in sources) ? c : undefined;
    });
    const config = decodeRelayConfigMap(cm);
    expect(config.tenants.map((t) => t.name)).toEqual(['engineering', 'sales', 'support']);
    expect(config.sources?.['MailRoute/engineering/alerts']).toBe(1);
    expect(cm.metadata?.labels).toEqual({
      'app.kubernetes.io/managed-by': 'mailplus-operator',
      'app.kubernetes.io/part-of': 'mail-plus',
      'app.kubernetes.io/component': 'relay-config',
    });
    expect(cm.metadata?.annotations?.['mailplus.io/config-hash']).toBe(config.hash);
    expect(cm.metadata?.managedFields?.map((f) => f.manager)).toContain('mailplus-operator');
  }, 60_000);

  it('a relay following the ConfigMap routes a real message to the upstream', async () => {
    await eventually('relay loaded the config', async () => (await relayConfigInfo(relay.adminPort)).hash);
    const r = await runSwaks({ port: relay.smtpPort, to: 'alerts@eng.example.com', from: 'ci@example.org' });
    expect(r.exitCode, r.transcript).toBe(0);
    const [msg] = await sink.waitForMessages(1, 10_000);
    expect(msg.rcptTo).toEqual(['alerts@eng.example.com']);
  }, 60_000);

  it("keeps a route's forward.rewrite through the API server: the upstream gets the rewritten RCPT", async () => {
    const o = await waitForStatus(kc, 'mailroutes', 'support', 'escalations', ready);
    expect((o.spec as { forward?: { rewrite?: unknown } }).forward?.rewrite).toEqual({
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a recipient template, not JS
      recipient: 'helpdesk+escalation${tag?-}${tag}@support.example.com',
    });
    const before = sink.messages.length;
    const to = 'escalations+urgent@support.example.com';
    const r = await runSwaks({ port: relay.smtpPort, to, from: 'customer@example.org' });
    expect(r.exitCode, r.transcript).toBe(0);
    const msgs = await sink.waitForMessages(before + 1, 10_000);
    expect(msgs[before].rcptTo).toEqual(['helpdesk+escalation-urgent@support.example.com']);
  }, 60_000);

  it('writes Accepted, ResolvedRefs, Programmed and Ready with observedGeneration, and Events', async () => {
    const o = await waitForStatus(kc, 'mailroutes', 'engineering', 'alerts', ready);
    for (const type of ['Accepted', 'ResolvedRefs', 'Programmed', 'Ready']) {
      const c = cond(o, type);
      expect(c?.status, `${type}: ${JSON.stringify(c)}`).toBe('True');
      expect(c?.observedGeneration).toBe(o.metadata.generation);
      expect(c?.lastTransitionTime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    }
    expect(cond(o, 'Programmed')?.reason).toBe('Programmed');
    expect(cond(o, 'Programmed')?.message).toMatch(/all 1 live relay/);
    const tp = await waitForStatus(kc, 'tenantpolicies', 'sales', 'sales', ready);
    expect(cond(tp, 'Accepted')?.reason).toBe('Accepted');
    const evs = await eventually('Ready event', async () => {
      const e = await listEvents(kc, 'engineering');
      return e.some((x) => x.regarding?.name === 'alerts' && x.reason === 'Ready') ? e : undefined;
    });
    const mine = evs.filter((e) => e.regarding?.name === 'alerts');
    expect(mine.every((e) => e.reportingController === 'mailplus.io/operator')).toBe(true);
    expect(mine.map((e) => e.reason)).toContain('Accepted');
  }, 60_000);

  it('reports invalid, conflicting and cross-tenant resources with their reasons (and Warning Events)', async () => {
    // (the rogue namespace sorts after "sales": creation timestamps have second precision, and on a
    // tie the older-wins rule falls back to namespace/name)
    // v1.20 has no CEL: "forward and reject" reaches the operator, which re-checks the rule
    await apply(`apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: { name: both-actions, namespace: engineering }
spec:
  match: { recipients: ["both@eng.example.com"] }
  forward: { upstreams: [{ host: 127.0.0.1, port: ${sink.port}, tls: none }] }
  reject: { code: 550 }
---
apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: { name: steal-sales, namespace: engineering }
spec:
  match: { recipients: ["*@sales.example.com"] }
  reject: { code: 550 }
---
apiVersion: v1
kind: Namespace
metadata: { name: zz-rogue }
---
apiVersion: mailplus.io/v1alpha1
kind: TenantPolicy
metadata: { name: rogue, namespace: zz-rogue }
spec:
  domains: [sales.example.com]
---
apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: { name: alerts-again, namespace: engineering }
spec:
  match: { recipients: ["alerts@eng.example.com"] }
  forward: { upstreams: [{ host: 127.0.0.1, port: ${sink.port}, tls: none }] }
`);
    const invalid = await waitForStatus(
      kc,
      'mailroutes',
      'engineering',
      'both-actions',
      (o) => !!cond(o, 'Ready'),
    );
    expect(cond(invalid, 'Accepted')).toMatchObject({ status: 'False', reason: 'InvalidSpec' });
    expect(cond(invalid, 'Programmed')).toMatchObject({ status: 'False', reason: 'Invalid' });
    expect(cond(invalid, 'Ready')).toMatchObject({ status: 'False', reason: 'InvalidSpec' });

    const cross = await waitForStatus(
      kc,
      'mailroutes',
      'engineering',
      'steal-sales',
      (o) => !!cond(o, 'Ready'),
    );
    expect(cond(cross, 'Accepted')).toMatchObject({ status: 'False', reason: 'DomainNotOwned' });
    expect(cond(cross, 'Accepted')?.message).toContain('held by tenant sales');

    const rogue = await waitForStatus(kc, 'tenantpolicies', 'zz-rogue', 'rogue', (o) => !!cond(o, 'Ready'));
    expect(cond(rogue, 'Accepted')).toMatchObject({ status: 'False', reason: 'DomainClaimedByOtherTenant' });

    const shadowed = await waitForStatus(
      kc,
      'mailroutes',
      'engineering',
      'alerts-again',
      (o) => !!cond(o, 'Ready'),
    );
    expect(cond(shadowed, 'Accepted')).toMatchObject({ status: 'True', reason: 'Conflicted' });
    expect(cond(shadowed, 'Accepted')?.message).toContain('MailRoute engineering/alerts');

    const evs = await eventually('Warning events', async () => {
      const e = await listEvents(kc, 'engineering');
      const warn = e.filter((x) => x.type === 'Warning');
      return ['InvalidSpec', 'DomainNotOwned', 'Conflicted'].every((r) => warn.some((x) => x.reason === r))
        ? warn
        : undefined;
    });
    expect(evs.find((e) => e.reason === 'InvalidSpec')?.note).toContain('both-actions');
    const m = await metricsText(operator.metricsPort);
    expect(sample(m, 'mailplus_operator_conflicts')).toBeGreaterThanOrEqual(2);
    expect(
      sample(m, 'mailplus_operator_resources', { kind: 'MailRoute', condition: 'Ready', status: 'False' }),
    ).toBeGreaterThanOrEqual(2);
    await kubectl(cp, [
      'delete',
      'mailroute',
      '-n',
      'engineering',
      'both-actions',
      'steal-sales',
      'alerts-again',
    ]);
    await kubectl(cp, ['delete', 'namespace', 'zz-rogue', '--wait=false']);
  }, 90_000);

  it('flips ResolvedRefs when a referenced Service appears later', async () => {
    await apply(`apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: { name: via-service, namespace: engineering }
spec:
  match: { recipients: ["svc@eng.example.com"] }
  forward: { upstreams: [{ service: { name: mx, port: smtp }, tls: none }] }
`);
    const before = await waitForStatus(
      kc,
      'mailroutes',
      'engineering',
      'via-service',
      (o) => !!cond(o, 'Ready'),
    );
    expect(cond(before, 'ResolvedRefs')).toMatchObject({ status: 'False', reason: 'ServiceNotFound' });
    expect(cond(before, 'Ready')?.status).toBe('False');
    await apply(`apiVersion: v1
kind: Service
metadata: { name: mx, namespace: engineering }
spec:
  ports: [{ name: smtp, port: 2525 }]
`);
    const after = await waitForStatus(
      kc,
      'mailroutes',
      'engineering',
      'via-service',
      (o) => cond(o, 'ResolvedRefs')?.status === 'True' && ready(o),
    );
    expect(cond(after, 'ResolvedRefs')?.reason).toBe('ResolvedRefs');
    const svc = await core.readNamespacedService({ name: 'mx', namespace: 'engineering' });
    const config = decodeRelayConfigMap(await readConfigMap());
    const route = config.tenants
      .find((t) => t.name === 'engineering')
      ?.routes.find((r) => r.name === 'engineering/via-service');
    expect(route?.action).toMatchObject({
      forward: { upstreams: [{ host: svc.spec?.clusterIP, port: 2525 }] },
    });
  }, 60_000);

  it('an update propagates: Programmed and Ready come back at the new generation once the relay serves it', async () => {
    await kubectl(cp, [
      'patch',
      'mailroute',
      '-n',
      'engineering',
      'alerts',
      '--type=merge',
      '-p',
      '{"spec":{"priority":50}}',
    ]);
    const o = await waitForStatus(kc, 'mailroutes', 'engineering', 'alerts', ready);
    expect(o.metadata.generation).toBe(2);
    expect(cond(o, 'Programmed')?.message).toContain('generation 2');
    const config = decodeRelayConfigMap(await readConfigMap());
    expect(config.sources?.['MailRoute/engineering/alerts']).toBe(2);
  }, 60_000);

  it('restores the ConfigMap when someone edits it by hand', async () => {
    const good = decodeRelayConfigMap(await readConfigMap()).hash;
    await kubectl(cp, [
      'patch',
      'configmap',
      '-n',
      OPERATOR_NAMESPACE,
      CONFIGMAP,
      '--type=merge',
      '-p',
      '{"data":{"relay-config.json":"{}"},"metadata":{"labels":{"app.kubernetes.io/managed-by":"someone"}}}',
    ]);
    const cm = await eventually('restored ConfigMap', async () => {
      const c = await readConfigMap();
      try {
        return decodeRelayConfigMap(c).hash === good &&
          c.metadata?.labels?.['app.kubernetes.io/managed-by'] === 'mailplus-operator'
          ? c
          : undefined;
      } catch {
        return undefined;
      }
    });
    expect(cm).toBeDefined();
  }, 60_000);

  it('deleting a route stops its traffic (550 5.1.1 from the relay)', async () => {
    const before = await runSwaks({
      port: relay.smtpPort,
      to: 'ci+other@eng.example.com',
      quitAfter: 'RCPT',
    });
    expect(before.rcpt[0]?.code).toBe(250);
    await kubectl(cp, ['delete', 'mailroute', '-n', 'engineering', 'all']);
    const r = await eventually('550 after delete', async () => {
      const x = await runSwaks({ port: relay.smtpPort, to: 'ci+other@eng.example.com', quitAfter: 'RCPT' });
      return x.rcpt[0]?.code === 550 ? x : undefined;
    });
    expect(r.rcpt[0]?.text).toContain('5.1.1');
  }, 60_000);

  it('exports controller-runtime, workqueue, informer and leader metrics, and /readyz', async () => {
    const m = await metricsText(operator.metricsPort);
    expect(
      sample(m, 'controller_runtime_reconcile_total', { controller: 'relayconfig', result: 'success' }),
    ).toBeGreaterThan(0);
    expect(
      sample(m, 'controller_runtime_reconcile_total', { controller: 'status', result: 'success' }),
    ).toBeGreaterThan(0);
    expect(sample(m, 'controller_runtime_max_concurrent_reconciles', { controller: 'status' })).toBe(4);
    for (const name of [
      'controller_runtime_active_workers',
      'workqueue_depth',
      'workqueue_unfinished_work_seconds',
      'workqueue_longest_running_processor_seconds',
    ])
      expect(m).toContain(`${name}{`);
    expect(sample(m, 'workqueue_adds_total', { name: 'status' })).toBeGreaterThan(0);
    expect(m).toContain('workqueue_queue_duration_seconds_bucket{');
    expect(m).toContain('controller_runtime_reconcile_time_seconds_bucket{');
    expect(sample(m, 'leader_election_master_status', { name: 'mailplus-operator' })).toBe(1);
    for (const kind of ['TenantPolicy', 'MailRoute', 'Service', 'Pod', 'ConfigMap'])
      expect(sample(m, 'mailplus_operator_informer_synced', { kind })).toBe(1);
    expect(sample(m, 'mailplus_operator_config_apply_total', { result: 'success' })).toBeGreaterThan(0);
    expect(sample(m, 'mailplus_operator_config_bytes')).toBeGreaterThan(0);
    expect(sample(m, 'mailplus_operator_live_relays')).toBe(1);
    expect(m).toContain('process_cpu_user_seconds_total');
    const rz = await fetch(`http://127.0.0.1:${operator.metricsPort}/readyz`);
    expect(rz.status).toBe(200);
  }, 30_000);

  it('mailplus route --cluster answers from the live ConfigMap', async () => {
    const { execFile } = await import('node:child_process');
    const out = await new Promise<{ code: number; stdout: string }>((resolve) => {
      execFile(
        join(REPO, 'node_modules/.bin/node'),
        [
          join(REPO, 'bin/mailplus.js'),
          'route',
          '--cluster',
          `--kubeconfig=${cp.kubeconfigFor('relay')}`,
          `--configmap=${OPERATOR_NAMESPACE}/${CONFIGMAP}`,
          '--to=alerts@eng.example.com',
          '--to=escalations@support.example.com',
          '--to=nobody@nowhere.example',
        ],
        { timeout: 30_000 },
        (err, stdout) => resolve({ code: (err as { code?: number } | null)?.code ?? 0, stdout }),
      );
    });
    expect(out.stdout).toContain('engineering/alerts');
    expect(out.stdout).toContain('rewritten to helpdesk+escalation@support.example.com');
    expect(out.stdout).toContain('5.7.1');
    expect(out.code).toBe(1);
  }, 40_000);
});
