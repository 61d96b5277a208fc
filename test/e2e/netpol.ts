// NetworkPolicies against the connections pods really make. The test cluster's bridge CNI does not
// enforce NetworkPolicies (and no enforcing plugin is available there), so this does what can be
// done instead: take the node's connection tracking table (`conntrack -L`: every flow with its
// address after kube-proxy's DNAT, which is what a CNI filters), and decide each flow that starts
// or ends at a pod selected by a NetworkPolicy the way an enforcing CNI would, from the live
// NetworkPolicy, Pod and Namespace objects. A flow such a CNI would drop fails the check: the
// chart's policies (with the values given) would break that traffic on a cluster that enforces them.
//
//   node test/e2e/netpol.ts --conntrack FILE --pods FILE --policies FILE --namespaces FILE [--node-ip IP ...]
//     FILEs: `conntrack -L` output and `kubectl get pods|networkpolicies|namespaces -A -o json`.
//     Flows from a node address (kubelet probes, the test's own sender and Prometheus) are listed but
//     not judged: how a CNI treats the node's own traffic differs between CNIs.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface Selector {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: string; values?: string[] }[];
}
interface Peer {
  podSelector?: Selector;
  namespaceSelector?: Selector;
  ipBlock?: { cidr: string; except?: string[] };
}
interface PolicyPort {
  protocol?: string;
  port?: number | string;
  endPort?: number;
}
interface Rule {
  from?: Peer[];
  to?: Peer[];
  ports?: PolicyPort[];
}
interface Policy {
  metadata: { name: string; namespace: string };
  spec: { podSelector: Selector; policyTypes?: string[]; ingress?: Rule[]; egress?: Rule[] };
}
interface Pod {
  metadata: { name: string; namespace: string; labels?: Record<string, string> };
  spec: {
    hostNetwork?: boolean;
    containers: { ports?: { name?: string; containerPort: number; protocol?: string }[] }[];
  };
  status: { podIP?: string; phase: string };
}
interface Namespace {
  metadata: { name: string; labels?: Record<string, string> };
}
interface Flow {
  proto: string;
  src: string;
  dst: string;
  port: number;
}

function matches(sel: Selector, labels: Record<string, string> = {}): boolean {
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of sel.matchExpressions ?? []) {
    const has = e.key in labels;
    const inValues = has && (e.values ?? []).includes(labels[e.key]);
    if (e.operator === 'In' && !inValues) return false;
    if (e.operator === 'NotIn' && inValues) return false;
    if (e.operator === 'Exists' && !has) return false;
    if (e.operator === 'DoesNotExist' && has) return false;
  }
  return true;
}

const ipNum = (ip: string) => ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
function inCidr(ip: string, cidr: string): boolean {
  if (ip.includes(':') || cidr.includes(':')) return false; // the test cluster is IPv4 only
  const [base, bits] = cidr.split('/');
  const size = 2 ** (32 - Number(bits));
  return Math.floor(ipNum(ip) / size) === Math.floor(ipNum(base) / size);
}

/** `conntrack -L` lines -> flows: original source, destination and port after DNAT (the reply's source). */
export function parseConntrack(text: string): Flow[] {
  const flows: Flow[] = [];
  for (const line of text.split('\n')) {
    const proto = line.split(/\s+/)[0];
    if (proto !== 'tcp' && proto !== 'udp') continue;
    const src = [...line.matchAll(/\bsrc=(\S+)/g)].map((m) => m[1]);
    const sport = [...line.matchAll(/\bsport=(\d+)/g)].map((m) => Number(m[1]));
    if (src.length < 2 || sport.length < 2) continue;
    flows.push({ proto: proto.toUpperCase(), src: src[0], dst: src[1], port: sport[1] });
  }
  return flows;
}

function main(): number {
  const { values } = parseArgs({
    options: {
      conntrack: { type: 'string' },
      pods: { type: 'string' },
      policies: { type: 'string' },
      namespaces: { type: 'string' },
      'node-ip': { type: 'string', multiple: true, default: [] },
    },
  });
  const read = <T>(f: string | undefined) =>
    (JSON.parse(readFileSync(f ?? '', 'utf8')) as { items: T[] }).items;
  const pods = read<Pod>(values.pods).filter(
    (p) => p.status.podIP && !p.spec.hostNetwork && p.status.phase === 'Running',
  );
  const policies = read<Policy>(values.policies);
  const nsLabels = new Map(
    read<Namespace>(values.namespaces).map((n) => [n.metadata.name, n.metadata.labels ?? {}]),
  );
  const podByIp = new Map(pods.map((p) => [p.status.podIP as string, p]));
  const nodeIps = new Set(values['node-ip']);

  const types = (p: Policy) => p.spec.policyTypes ?? (p.spec.egress ? ['Ingress', 'Egress'] : ['Ingress']);
  const selecting = (pod: Pod, type: string) =>
    policies.filter(
      (p) =>
        p.metadata.namespace === pod.metadata.namespace &&
        types(p).includes(type) &&
        matches(p.spec.podSelector, pod.metadata.labels),
    );
  const peerMatches = (peer: Peer, ip: string, policyNs: string): boolean => {
    if (peer.ipBlock)
      return inCidr(ip, peer.ipBlock.cidr) && !(peer.ipBlock.except ?? []).some((c) => inCidr(ip, c));
    const pod = podByIp.get(ip);
    if (!pod) return false;
    if (peer.namespaceSelector) {
      if (!matches(peer.namespaceSelector, nsLabels.get(pod.metadata.namespace))) return false;
    } else if (pod.metadata.namespace !== policyNs) return false;
    return !peer.podSelector || matches(peer.podSelector, pod.metadata.labels);
  };
  const portMatches = (ports: PolicyPort[] | undefined, flow: Flow, dstPod: Pod | undefined): boolean =>
    !ports?.length ||
    ports.some((pp) => {
      if ((pp.protocol ?? 'TCP') !== flow.proto) return false;
      if (pp.port === undefined) return true;
      if (typeof pp.port === 'string') {
        // a named port is the destination pod's container port of that name
        const named = dstPod?.spec.containers.flatMap((c) => c.ports ?? []).find((cp) => cp.name === pp.port);
        return named?.containerPort === flow.port;
      }
      return flow.port >= pp.port && flow.port <= (pp.endPort ?? pp.port);
    });
  /** '' when allowed, else why not. */
  const judge = (pod: Pod, flow: Flow, dir: 'Ingress' | 'Egress'): string => {
    const ps = selecting(pod, dir);
    if (!ps.length) return '';
    const peerIp = dir === 'Egress' ? flow.dst : flow.src;
    const dstPod = dir === 'Egress' ? podByIp.get(flow.dst) : pod;
    for (const p of ps) {
      for (const r of (dir === 'Egress' ? p.spec.egress : p.spec.ingress) ?? []) {
        const peers = dir === 'Egress' ? r.to : r.from;
        if (
          (!peers?.length || peers.some((x) => peerMatches(x, peerIp, p.metadata.namespace))) &&
          portMatches(r.ports, flow, dstPod)
        ) {
          return '';
        }
      }
    }
    return `no ${dir.toLowerCase()} rule of ${ps.map((p) => `${p.metadata.namespace}/${p.metadata.name}`).join(', ')} allows it`;
  };

  const name = (ip: string) => {
    const p = podByIp.get(ip);
    return p ? `${p.metadata.namespace}/${p.metadata.name}` : nodeIps.has(ip) ? `node ${ip}` : ip;
  };
  const seen = new Map<string, string>();
  for (const flow of parseConntrack(readFileSync(values.conntrack ?? '', 'utf8'))) {
    const srcPod = podByIp.get(flow.src);
    const dstPod = podByIp.get(flow.dst);
    if (!srcPod && !dstPod) continue; // not pod traffic
    const governed =
      (srcPod && selecting(srcPod, 'Egress').length) || (dstPod && selecting(dstPod, 'Ingress').length);
    if (!governed) continue;
    const key = `${name(flow.src)} -> ${name(flow.dst)}:${flow.port}/${flow.proto}`;
    if (seen.has(key)) continue;
    let verdict: string;
    if (!srcPod) verdict = 'from the node: not judged';
    else {
      const why = [judge(srcPod, flow, 'Egress'), dstPod ? judge(dstPod, flow, 'Ingress') : ''].filter(
        Boolean,
      );
      verdict = why.length ? `DENIED: ${why.join('; ')}` : 'allowed';
    }
    seen.set(key, verdict);
  }
  const keys = [...seen.keys()].sort();
  for (const k of keys) console.log(`netpol: ${k}  ${seen.get(k)}`);
  const denied = keys.filter((k) => seen.get(k)?.startsWith('DENIED'));
  const judged = keys.filter((k) => !seen.get(k)?.startsWith('from the node'));
  console.log(
    `netpol: ${judged.length} pod flows governed by NetworkPolicies, ${denied.length} an enforcing CNI would drop`,
  );
  if (!judged.length) {
    console.log('netpol: FAIL no flow of a pod selected by a NetworkPolicy was observed');
    return 1;
  }
  return denied.length ? 1 : 0;
}

process.exit(main());
