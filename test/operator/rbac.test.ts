// Least privilege on the real API server (v1.20, RBAC enforced) with the chart's REAL rule files
// bound to the operator's and the relay's ServiceAccounts:
// - the attack: a compromised relay replaces the operator's leader Lease (the operator used to
//   exit "leadership lost" and stop publishing for as long as the forged Lease lasted), forges
//   another relay's report, reads a Secret. All refused now; the operator keeps leading.
// - the matrix: for every verb on every resource either role might want, in the operator
//   namespace, a tenant namespace and cluster-wide, by name where names matter, the API server's
//   answer (SubjectAccessReview, what `kubectl auth can-i --as` asks) equals the policy written out
//   here by hand: what each may do and, above all, what each may not.
// - `kubectl auth can-i --as system:serviceaccount:NS:SA` itself agrees on the lines that matter.
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ControlPlane, kubectl, OPERATOR_USER, RELAY_USER } from '../envtest/control-plane.ts';
import {
  adminClient,
  CONFIGMAP,
  eventually,
  metricsText,
  OPERATOR_NAMESPACE,
  type OperatorProcess,
  sample,
  sleep,
  startCluster,
  startOperatorProcess,
} from './support.ts';

const NS = OPERATOR_NAMESPACE;
const TENANT_NS = 'tenant-a';
const LEADER_LEASE = 'mailplus-operator';
/** The relay config ConfigMaps (one today; a sharded config adds its names here and to the rules). */
const RELAY_CONFIGMAPS = [CONFIGMAP];

const VERBS = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'] as const;
type Verb = (typeof VERBS)[number];

interface Res {
  group: string;
  resource: string;
  subresource?: string;
  /** Names to ask about besides "no name" (list/watch/create of the collection). */
  names?: string[];
  cluster?: boolean;
}

// Everything either component could plausibly touch, plus the classic escalation paths.
const RESOURCES: Res[] = [
  { group: '', resource: 'configmaps', names: [...RELAY_CONFIGMAPS, 'kube-root-ca.crt', 'other'] },
  { group: '', resource: 'secrets', names: ['mailplus-relay-tls', 'other'] },
  { group: '', resource: 'pods', names: ['mailplus-relay-abc'] },
  { group: '', resource: 'pods', subresource: 'status', names: ['mailplus-relay-abc'] },
  { group: '', resource: 'pods', subresource: 'exec', names: ['mailplus-relay-abc'] },
  { group: '', resource: 'pods', subresource: 'log', names: ['mailplus-relay-abc'] },
  { group: '', resource: 'services', names: ['smtp'] },
  { group: '', resource: 'endpoints', names: ['smtp'] },
  { group: '', resource: 'events' },
  { group: '', resource: 'serviceaccounts', names: ['mailplus-relay'] },
  { group: '', resource: 'serviceaccounts', subresource: 'token', names: ['mailplus-operator'] },
  { group: '', resource: 'namespaces', cluster: true, names: [NS] },
  { group: '', resource: 'nodes', cluster: true },
  {
    group: 'coordination.k8s.io',
    resource: 'leases',
    names: [LEADER_LEASE, 'mailplus-relay-other', 'other'],
  },
  { group: 'events.k8s.io', resource: 'events' },
  { group: 'discovery.k8s.io', resource: 'endpointslices' },
  { group: 'apps', resource: 'deployments', names: ['mailplus-operator'] },
  { group: 'mailplus.io', resource: 'mailroutes', names: ['r'] },
  { group: 'mailplus.io', resource: 'mailroutes', subresource: 'status', names: ['r'] },
  { group: 'mailplus.io', resource: 'tenantpolicies', names: ['t'] },
  { group: 'mailplus.io', resource: 'tenantpolicies', subresource: 'status', names: ['t'] },
  { group: 'rbac.authorization.k8s.io', resource: 'roles' },
  { group: 'rbac.authorization.k8s.io', resource: 'rolebindings' },
  { group: 'rbac.authorization.k8s.io', resource: 'clusterroles', cluster: true },
  { group: 'apiextensions.k8s.io', resource: 'customresourcedefinitions', cluster: true },
];

interface Check {
  verb: Verb;
  group: string;
  resource: string;
  subresource?: string;
  /** '' = all namespaces (or a cluster-scoped resource). */
  namespace: string;
  name?: string;
}

/** The policy, by hand (NOT derived from the rule files, or this test could not fail). */
function expected(who: 'operator' | 'relay', c: Check): boolean {
  const { verb, group, resource, subresource, namespace, name } = c;
  const r = subresource ? `${resource}/${subresource}` : resource;
  const inOwnNs = namespace === NS;
  if (who === 'relay') {
    // read its config, by name, in its namespace; nothing else at all
    return (
      group === '' &&
      r === 'configmaps' &&
      inOwnNs &&
      RELAY_CONFIGMAPS.includes(name ?? '') &&
      ['get', 'list', 'watch'].includes(verb)
    );
  }
  // operator, cluster-wide (ClusterRole): reads tenants' resources, writes their status, Events
  if (group === 'mailplus.io' && (r === 'mailroutes' || r === 'tenantpolicies'))
    return ['get', 'list', 'watch'].includes(verb);
  if (group === 'mailplus.io' && (r === 'mailroutes/status' || r === 'tenantpolicies/status'))
    return verb === 'patch';
  if (group === '' && r === 'services') return ['list', 'watch'].includes(verb);
  if (group === 'events.k8s.io' && r === 'events') return verb === 'create';
  if (!inOwnNs) return false;
  // operator, its namespace (Role)
  if (group === '' && r === 'configmaps')
    return (
      RELAY_CONFIGMAPS.includes(name ?? '') && ['get', 'list', 'watch', 'create', 'patch'].includes(verb)
    );
  if (group === 'coordination.k8s.io' && r === 'leases') {
    if (verb === 'create') return true; // a POST's name is in its body: RBAC cannot limit it
    return name === LEADER_LEASE && ['get', 'update'].includes(verb);
  }
  if (group === '' && r === 'pods') return ['list', 'watch'].includes(verb);
  return false;
}

function checks(): Check[] {
  const out: Check[] = [];
  for (const res of RESOURCES) {
    const namespaces = res.cluster ? [''] : [NS, TENANT_NS, ''];
    for (const namespace of namespaces) {
      // across all namespaces only the collection verbs exist (a get or update needs a namespace)
      const verbs =
        namespace === '' && !res.cluster ? (['list', 'watch', 'deletecollection'] as const) : VERBS;
      for (const verb of verbs) {
        for (const name of [undefined, ...(res.names ?? [])]) {
          // names do not apply to collection verbs, nor to anything across namespaces
          if (name !== undefined && (verb === 'deletecollection' || (namespace === '' && !res.cluster)))
            continue;
          out.push({
            verb,
            group: res.group,
            resource: res.resource,
            subresource: res.subresource,
            namespace,
            name,
          });
        }
      }
    }
  }
  return out;
}

const label = (who: string, c: Check) =>
  `${who} ${c.verb} ${c.group || 'core'}/${c.resource}${c.subresource ? `/${c.subresource}` : ''}${c.name ? `/${c.name}` : ''} in ${c.namespace || '(all namespaces / cluster)'}`;

describe('least privilege of the operator and the relay (real API server, chart RBAC)', () => {
  let cp: ControlPlane;
  let kc: k8s.KubeConfig;
  let operator: OperatorProcess | undefined;

  beforeAll(async () => {
    cp = await startCluster();
    kc = adminClient(cp);
    await kubectl(cp, ['create', 'namespace', TENANT_NS]);
  }, 120_000);

  afterAll(async () => {
    await operator?.stop(5000);
    await cp?.stop();
  }, 60_000);

  it('a compromised relay cannot take the leader Lease: the write is refused and the operator keeps leading', async () => {
    operator = await startOperatorProcess(cp, 'op-rbac');
    const admin = kc.makeApiClient(k8s.CoordinationV1Api);
    await eventually(
      'op-rbac leads',
      async () =>
        (await admin.readNamespacedLease({ name: LEADER_LEASE, namespace: NS })).spec?.holderIdentity ===
        'op-rbac',
      30_000,
    );

    // The relay's own credentials, as a process on the relay pod would hold them.
    const relayKc = new k8s.KubeConfig();
    relayKc.loadFromFile(cp.kubeconfigFor('relay'));
    const asRelay = relayKc.makeApiClient(k8s.CoordinationV1Api);
    const forged = (name: string): k8s.V1Lease => ({
      metadata: { name, namespace: NS },
      spec: { holderIdentity: 'intruder', leaseDurationSeconds: 3600, renewTime: new k8s.V1MicroTime() },
    });
    const refused = async (what: string, call: () => Promise<unknown>) => {
      const err = await call().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, `${what} must be refused`).toBeInstanceOf(k8s.ApiException);
      expect((err as k8s.ApiException<unknown>).code, what).toBe(403);
    };
    // the attack of the report: read the Lease, replace it with a forged holder
    const current = await admin.readNamespacedLease({ name: LEADER_LEASE, namespace: NS });
    await refused('replace the leader Lease', () =>
      asRelay.replaceNamespacedLease({
        name: LEADER_LEASE,
        namespace: NS,
        body: {
          ...current,
          spec: { ...current.spec, holderIdentity: 'intruder', leaseDurationSeconds: 3600 },
        },
      }),
    );
    await refused('get the leader Lease', () =>
      asRelay.readNamespacedLease({ name: LEADER_LEASE, namespace: NS }),
    );
    await refused('delete the leader Lease', () =>
      asRelay.deleteNamespacedLease({ name: LEADER_LEASE, namespace: NS }),
    );
    // ...nor plant Leases (another relay's old report, or one the operator would trip over)
    await refused('create a Lease', () =>
      asRelay.createNamespacedLease({ namespace: NS, body: forged('mailplus-relay-x') }),
    );
    await refused('list Leases', () => asRelay.listNamespacedLease({ namespace: NS }));
    await refused('read a Secret', () =>
      relayKc.makeApiClient(k8s.CoreV1Api).listNamespacedSecret({ namespace: NS }),
    );
    await refused('rewrite the relay config', () =>
      relayKc
        .makeApiClient(k8s.CoreV1Api)
        .patchNamespacedConfigMap(
          { name: CONFIGMAP, namespace: NS, body: { data: { 'relay-config.json': '{}' } } },
          k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
        ),
    );

    // the operator noticed nothing: same holder, still leading, still running
    await sleep(3000);
    expect(
      (await admin.readNamespacedLease({ name: LEADER_LEASE, namespace: NS })).spec?.holderIdentity,
    ).toBe('op-rbac');
    expect(operator.child.exitCode).toBeNull();
    expect(operator.lines.some((l) => l.json?.msg === 'leadership lost')).toBe(false);
    expect(
      sample(await metricsText(operator.metricsPort), 'leader_election_master_status', {
        name: LEADER_LEASE,
      }),
    ).toBe(1);
  }, 90_000);

  it('kubectl auth can-i --as the ServiceAccounts answers as the policy says', async () => {
    const can = async (user: string, args: string[]): Promise<boolean> => {
      try {
        return (await kubectl(cp, ['auth', 'can-i', ...args, '--as', user])).trim() === 'yes';
      } catch (err) {
        const msg = (err as Error).message;
        if (/failed \(exit 1\)/.test(msg) && !/\berror:/i.test(msg)) return false;
        throw err;
      }
    };
    const lines: Array<[string, string[], boolean]> = [
      // the report's exact command, and its neighbours
      [RELAY_USER, ['update', `leases/${LEADER_LEASE}`, '-n', NS], false],
      [RELAY_USER, ['create', 'leases', '-n', NS], false],
      [RELAY_USER, ['update', 'leases/mailplus-relay-other', '-n', NS], false],
      [RELAY_USER, ['get', 'secrets', '-n', NS], false],
      [RELAY_USER, ['watch', `configmaps/${CONFIGMAP}`, '-n', NS], true],
      [RELAY_USER, ['patch', `configmaps/${CONFIGMAP}`, '-n', NS], false],
      [OPERATOR_USER, ['update', `leases/${LEADER_LEASE}`, '-n', NS], true],
      [OPERATOR_USER, ['update', 'leases/mailplus-relay-other', '-n', NS], false],
      [OPERATOR_USER, ['list', 'pods', '-n', NS], true],
      [OPERATOR_USER, ['list', 'pods', '-n', TENANT_NS], false],
      [OPERATOR_USER, ['create', 'pods/exec', '-n', NS], false],
      [OPERATOR_USER, ['get', 'secrets', '-n', NS], false],
    ];
    for (const [user, args, want] of lines)
      expect(await can(user, args), `${user} ${args.join(' ')}`).toBe(want);
  }, 90_000);

  it('every verb on every resource: the API server grants exactly the written policy, both roles', async () => {
    const authz = kc.makeApiClient(k8s.AuthorizationV1Api);
    const all = checks();
    const mismatches: string[] = [];
    let granted = 0;
    for (const who of ['operator', 'relay'] as const) {
      const user = who === 'operator' ? OPERATOR_USER : RELAY_USER;
      for (let i = 0; i < all.length; i += 24) {
        await Promise.all(
          all.slice(i, i + 24).map(async (c) => {
            const review = await authz.createSubjectAccessReview({
              body: {
                spec: {
                  user,
                  groups: ['system:serviceaccounts', `system:serviceaccounts:${NS}`, 'system:authenticated'],
                  resourceAttributes: {
                    verb: c.verb,
                    group: c.group,
                    resource: c.resource,
                    subresource: c.subresource,
                    namespace: c.namespace || undefined,
                    name: c.name,
                  },
                },
              },
            });
            const got = review.status?.allowed === true;
            if (got) granted++;
            if (got !== expected(who, c))
              mismatches.push(`${label(who, c)}: API server says ${got}, policy ${!got}`);
          }),
        );
      }
    }
    expect(mismatches).toEqual([]);
    // the matrix is not vacuous: it covers the grants as well as the refusals
    expect(all.length, 'checks per role').toBeGreaterThan(600);
    expect(granted).toBeGreaterThan(30);
  }, 180_000);
});
