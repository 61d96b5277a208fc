// Invalid-edit drill on a real kube-apiserver (v1.20, RBAC with the chart's rules) with a real
// relay and real SMTP: an edit of a TenantPolicy that the API server accepts but the operator
// refuses must not change who owns what. The tenant's last valid generation stays in force (its
// upstream, its client networks), a newer tenant's claim on the same domain stays lost, the
// status says why the edit is not programmed, and all of this survives an operator restart.
import type * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ControlPlane, kubectl } from '../envtest/control-plane.ts';
import { type CaptureSink, startCaptureSink } from '../support/capture-sink.ts';
import { runSwaks } from '../support/swaks.ts';
import {
  adminClient,
  cond,
  eventually,
  type OperatorProcess,
  type RelayProcess,
  relayConfigInfo,
  startCluster,
  startOperatorProcess,
  startRelayProcess,
  waitForStatus,
} from './support.ts';

const DOMAIN = 'keep.example';

describe('an invalid TenantPolicy edit keeps the last valid version in force (real API server, real SMTP)', () => {
  let cp: ControlPlane;
  let kc: k8s.KubeConfig;
  let own: CaptureSink;
  let other: CaptureSink;
  let operator: OperatorProcess;
  let relay: RelayProcess;

  const apply = (yaml: string) => kubectl(cp, ['apply', '-f', '-'], { input: yaml });
  const policy = (extra: string) => `apiVersion: mailplus.io/v1alpha1
kind: TenantPolicy
metadata: { name: owner, namespace: owner }
spec:
  domains: [${DOMAIN}]
${extra}`;
  /** Sends one message from a loopback source address; returns the RCPT reply code. */
  const send = async (from: '127.0.0.1' | '127.0.0.2') => {
    const r = await runSwaks({
      port: relay.smtpPort,
      to: `someone@${DOMAIN}`,
      from: 'ci@example.org',
      extraArgs: ['--local-interface', from],
    });
    return { code: r.last.RCPT?.code, text: r.last.RCPT?.text, transcript: r.transcript };
  };
  /** The relay serves what the operator compiled last (same hash as the ConfigMap). */
  const relayCaughtUp = () =>
    eventually('the relay serves the current config', async () => {
      const cm = JSON.parse(
        await kubectl(cp, [
          'get',
          'configmap',
          'mailplus-relay-config',
          '-n',
          'mailplus-system',
          '-o',
          'json',
        ]),
      ) as { metadata: { annotations: Record<string, string> } };
      const info = await relayConfigInfo(relay.adminPort);
      return info.hash === cm.metadata.annotations['mailplus.io/config-hash'];
    });

  beforeAll(async () => {
    cp = await startCluster();
    kc = adminClient(cp);
    own = await startCaptureSink({ host: '127.0.0.1' });
    other = await startCaptureSink({ host: '127.0.0.1' });
    await kubectl(cp, ['create', 'namespace', 'owner']);
    await kubectl(cp, ['create', 'namespace', 'newcomer']);
    operator = await startOperatorProcess(cp, 'op-invalid-edit');
    relay = await startRelayProcess(cp, 'relay-invalid-edit');
  }, 180_000);

  afterAll(async () => {
    await relay?.stop(5000);
    await operator?.stop(5000);
    await own?.close();
    await other?.close();
    await cp?.stop();
  }, 60_000);

  it('serves the owner (only from its client network); a newer claim on its domain is not served', async () => {
    await apply(`${policy('  clientCIDRs: [127.0.0.2/32]')}
---
apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: { name: inbox, namespace: owner }
spec:
  match: { recipients: ["*@${DOMAIN}"] }
  forward: { upstreams: [{ host: 127.0.0.1, port: ${own.port}, tls: none }] }
`);
    await waitForStatus(kc, 'mailroutes', 'owner', 'inbox', (o) => cond(o, 'Ready')?.status === 'True');
    // creation timestamps have second precision: make the newcomer's claim strictly newer
    await new Promise((r) => setTimeout(r, 1100));
    await apply(`apiVersion: mailplus.io/v1alpha1
kind: TenantPolicy
metadata: { name: newcomer, namespace: newcomer }
spec:
  domains: [${DOMAIN}]
---
apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: { name: grab, namespace: newcomer }
spec:
  match: { recipients: ["*@${DOMAIN}"] }
  forward: { upstreams: [{ host: 127.0.0.1, port: ${other.port}, tls: none }] }
`);
    const lost = await waitForStatus(kc, 'tenantpolicies', 'newcomer', 'newcomer', (o) => !!cond(o, 'Ready'));
    expect(cond(lost, 'Accepted')).toMatchObject({ status: 'False', reason: 'DomainClaimedByOtherTenant' });
    await relayCaughtUp();

    const ok = await send('127.0.0.2');
    expect(ok.code, ok.transcript).toBe(250);
    await own.waitForMessages(1, 10_000);
    const refused = await send('127.0.0.1');
    expect(refused.code, refused.transcript).toBe(550);
    expect(refused.text).toMatch(/5\.7\.1 Client address not permitted/);
  }, 120_000);

  it('the API server itself refuses a malformed CIDR (format: cidr in the CRD schema)', async () => {
    await expect(apply(policy('  clientCIDRs: [127.0.0.2/32, 10.0.0.0/33]'))).rejects.toThrow(
      /clientCIDRs.*(cidr|10\.0\.0\.0\/33)/s,
    );
  }, 30_000);

  it('an edit only the operator refuses leaves the owner in force, under its own restrictions', async () => {
    // accepted by the API server (the retention pattern matches), refused by the operator (< 1h);
    // the edit also widens clientCIDRs: that must NOT take effect while the spec is invalid
    await apply(policy('  clientCIDRs: [127.0.0.0/8]\n  privacy: { retention: 1m }'));
    const generation = Number(
      await kubectl(cp, [
        'get',
        'tenantpolicy',
        'owner',
        '-n',
        'owner',
        '-o',
        'jsonpath={.metadata.generation}',
      ]),
    );
    const tp = await waitForStatus(kc, 'tenantpolicies', 'owner', 'owner', (o) => !!cond(o, 'Programmed'));
    expect(tp.metadata.generation).toBe(generation);
    await relayCaughtUp();

    // mail keeps flowing to the owner's upstream, under the owner's last valid client networks
    own.reset();
    const ok = await send('127.0.0.2');
    expect(ok.code, ok.transcript).toBe(250);
    await own.waitForMessages(1, 10_000);
    const refused = await send('127.0.0.1');
    expect(refused.code, refused.transcript).toBe(550);
    expect(other.messages).toEqual([]);

    // the status says why the edit is not programmed, and what is served instead
    expect(cond(tp, 'Accepted')).toMatchObject({ status: 'False', reason: 'InvalidSpec' });
    expect(cond(tp, 'Accepted')?.message).toMatch(/spec\.privacy\.retention/);
    expect(cond(tp, 'Accepted')?.message).toMatch(
      /generation 1, the last valid one, stays in force for keep\.example/,
    );
    expect(cond(tp, 'Programmed')).toMatchObject({ status: 'False', reason: 'Invalid' });
    expect(cond(tp, 'Programmed')?.message).toMatch(/relays keep serving generation 1/);
    expect(cond(tp, 'Ready')).toMatchObject({ status: 'False', reason: 'InvalidSpec' });
    // kstatus, as Argo CD, Flux and kubectl wait read it
    expect(cond(tp, 'Stalled')).toMatchObject({ status: 'True', reason: 'InvalidSpec' });
    expect(cond(tp, 'Reconciling')).toMatchObject({ status: 'False' });
    await kubectl(cp, [
      'wait',
      '--for=condition=Stalled',
      '--timeout=30s',
      'tenantpolicy/owner',
      '-n',
      'owner',
    ]);
    // the newcomer still does not get the domain
    const lost = await waitForStatus(kc, 'tenantpolicies', 'newcomer', 'newcomer', (o) => !!cond(o, 'Ready'));
    expect(cond(lost, 'Accepted')).toMatchObject({ status: 'False', reason: 'DomainClaimedByOtherTenant' });
  }, 120_000);

  it('survives an operator restart: the version in force is read back from the published ConfigMap', async () => {
    await operator.stop(5000);
    operator = await startOperatorProcess(cp, 'op-invalid-edit-2');
    // a later change of the tenant's routes recompiles everything on the new operator
    await apply(`apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: { name: inbox, namespace: owner }
spec:
  priority: 50
  match: { recipients: ["*@${DOMAIN}"] }
  forward: { upstreams: [{ host: 127.0.0.1, port: ${own.port}, tls: none }] }
`);
    await waitForStatus(
      kc,
      'mailroutes',
      'owner',
      'inbox',
      (o) => o.metadata.generation === 2 && cond(o, 'Ready')?.status === 'True',
    );
    const tp = await waitForStatus(kc, 'tenantpolicies', 'owner', 'owner', (o) => !!cond(o, 'Programmed'));
    expect(cond(tp, 'Programmed')?.message).toMatch(/relays keep serving generation 1/);
    await relayCaughtUp();

    own.reset();
    const ok = await send('127.0.0.2');
    expect(ok.code, ok.transcript).toBe(250);
    await own.waitForMessages(1, 10_000);
    expect((await send('127.0.0.1')).code).toBe(550);
    expect(other.messages).toEqual([]);

    // fixing the spec applies the new generation (now 127.0.0.1 may send too)
    await apply(policy('  clientCIDRs: [127.0.0.0/8]\n  privacy: { retention: 2h }'));
    const fixed = await waitForStatus(
      kc,
      'tenantpolicies',
      'owner',
      'owner',
      (o) => cond(o, 'Ready')?.status === 'True',
    );
    expect(cond(fixed, 'Stalled')?.status).toBe('False');
    expect(cond(fixed, 'Reconciling')?.status).toBe('False');
    await kubectl(cp, [
      'wait',
      '--for=condition=Stalled=False',
      '--timeout=30s',
      'tenantpolicy/owner',
      '-n',
      'owner',
    ]);
    await relayCaughtUp();
    const now = await send('127.0.0.1');
    expect(now.code, now.transcript).toBe(250);
  }, 120_000);
});
