// Which relays count, and what they serve (pure). The operator pulls: it lists the relay pods of
// its namespace (label selector, read-only) and asks each ready one which config it loaded
// (GET http://<pod IP>:<admin port>/config), the way Prometheus scrapes. Relays need no write
// right in the API at all, so a compromised relay cannot forge anyone's report or the leader Lease;
// the worst it can do is lie about itself. See docs/operator.md ("How the operator learns what
// relays serve").
import type { RelayReport } from './conditions/programmed.ts';

/** The relay container's admin port is named `admin` in the chart. */
export const DEFAULT_RELAY_PORT = 'admin';

export interface PodLike {
  metadata?: { name?: string; deletionTimestamp?: unknown };
  spec?: { containers?: Array<{ ports?: Array<{ name?: string; containerPort?: number }> }> };
  status?: { phase?: string; podIP?: string; conditions?: Array<{ type?: string; status?: string }> };
}

export interface RelayTarget {
  /** The pod name. */
  id: string;
  /** http://<pod IP>:<admin port>/config */
  url: string;
}

/** A port given as a number, or the name of a container port of the pod. */
function adminPort(pod: PodLike, port: string | number): number | undefined {
  if (typeof port === 'number') return port;
  for (const c of pod.spec?.containers ?? []) {
    for (const p of c.ports ?? []) if (p.name === port && p.containerPort) return p.containerPort;
  }
  return undefined;
}

/**
 * The pod as a relay whose config matters, or undefined: only Running pods that are Ready (a relay
 * is ready once it loaded a config and until it drains, so only they receive mail through the
 * Service), not being deleted, with an IP and the admin port.
 */
export function relayTarget(pod: PodLike, port: string | number): RelayTarget | undefined {
  const name = pod.metadata?.name;
  const ip = pod.status?.podIP;
  if (!name || !ip || pod.metadata?.deletionTimestamp || pod.status?.phase !== 'Running') return undefined;
  if (!pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')) return undefined;
  const p = adminPort(pod, port);
  if (!p) return undefined;
  const host = ip.includes(':') ? `[${ip}]` : ip;
  return { id: name, url: `http://${host}:${p}/config` };
}

/** The live relays of a pod list, sorted by id. */
export function relayTargets(pods: PodLike[], port: string | number): RelayTarget[] {
  const out: RelayTarget[] = [];
  for (const pod of pods) {
    const t = relayTarget(pod, port);
    if (t) out.push(t);
  }
  return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** 'sha256:<hex>' (contract/config/hash.ts); anything else from a relay is refused. */
const HASH = /^sha256:[0-9a-f]{64}$/;

export type ConfigAnswer = { hash: string | null } | { error: string };

/**
 * A relay's /config answer ({hash, generation, loadedAt}) reduced to the hash it claims, or why it
 * is refused. The relay is untrusted input: only a well-formed hash or null is taken.
 */
export function parseConfigAnswer(status: number, body: string): ConfigAnswer {
  if (status !== 200) return { error: `HTTP ${status}` };
  let doc: unknown;
  try {
    doc = JSON.parse(body);
  } catch {
    return { error: 'answer is not JSON' };
  }
  const hash = (doc as { hash?: unknown } | null)?.hash;
  if (hash === null) return { hash: null };
  if (typeof hash === 'string' && HASH.test(hash)) return { hash };
  return { error: 'answer has no valid config hash' };
}

export interface Scrape {
  /** The URL it came from: a pod that got a new IP is a new target. */
  url: string;
  answer: ConfigAnswer;
  /** ms since the epoch. */
  at: number;
}

/**
 * One report per live relay: what its last answer (if recent enough and from its current address)
 * says it serves. A relay never asked, asked too long ago or not answering has no hash and an
 * error, so it counts as not serving the current generation: Programmed never claims more than
 * the operator saw.
 */
export function relayReports(
  targets: RelayTarget[],
  scrapes: ReadonlyMap<string, Scrape>,
  now: number,
  maxAgeMs: number,
): RelayReport[] {
  return targets.map((t) => {
    const s = scrapes.get(t.id);
    // not asked yet (new pod, new address): lagging, not unreachable; it is asked at once
    if (!s || s.url !== t.url) return { id: t.id };
    if (now - s.at > maxAgeMs)
      return { id: t.id, error: `no answer for ${Math.round((now - s.at) / 1000)} s` };
    if ('error' in s.answer) return { id: t.id, error: s.answer.error };
    return { id: t.id, hash: s.answer.hash ?? undefined };
  });
}
