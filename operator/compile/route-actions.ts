// A tenant's routes in the relay's form: each admitted MailRoute's action (reject, or forward to
// upstreams with Services resolved to addresses), its status (accepted, shadowed patterns, missing
// Services) and its `sources` entry, plus one for each Service a route uses.
import type { Route, Upstream } from '../../contract/config/types.gen.ts';
import { parseRewriteTemplate } from '../../contract/grammar/rewrite.ts';
import type { MailRouteSpec } from '../api/types.gen.ts';
import {
  accepted,
  type Conflict,
  invalidSpecStatus,
  makeStatus,
  REASONS,
  type Verdict,
} from '../conditions/resource-status.ts';
import type { Service } from '../resources/types.ts';
import {
  bySpecificity,
  errorText,
  listText,
  type NamespaceContext,
  type NamespaceSection,
  priorityOf,
  type RouteEntry,
} from './compile-state.ts';

export const DEFAULT_REJECT_MESSAGE = 'Message rejected by policy';
/** What a forward route whose upstreams all fail to resolve answers, so mail is deferred, not misrouted. */
export const UNRESOLVED_REPLY = {
  code: 451,
  enhancedCode: '4.4.1',
  message: 'Upstream unavailable, try again later',
};

type UpstreamSpec = NonNullable<MailRouteSpec['forward']>['upstreams'][number];

const ALL_RESOLVED: Verdict = {
  status: 'True',
  reason: REASONS.resolvedRefs,
  message: 'all references resolved',
};

/**
 * `given` (the resource's own list, never mutated) when `made` holds the same patterns in the same
 * order, else `made`: a route listed most specific first, as most are (one pattern, or an address
 * before a wildcard), keeps no copy of its list (100k routes: about 5 MB).
 */
function sameOrMade(made: string[], given: readonly string[] | undefined): string[] {
  if (!given || given.length !== made.length) return made;
  for (let i = 0; i < made.length; i++) if (made[i] !== given[i]) return made;
  return given as string[];
}

/** The routes of `entries` (in order), their statuses and sources written to `section`. */
export function compileRoutes(
  c: NamespaceContext,
  section: NamespaceSection,
  entries: RouteEntry[],
  shadowed: Map<RouteEntry, Conflict[]>,
): Route[] {
  const routes: Route[] = [];
  const usedServices = new Set<string>();
  // a tenant's routes mostly forward to the same upstreams: one frozen action object for all of
  // them (100k routes: ~20 MB less of the operator's heap), as for the sender lists
  const shared = new Map<string, unknown>();
  const one = <T extends object>(v: T): T => {
    const key = JSON.stringify(v);
    const hit = shared.get(key) as T | undefined;
    if (hit !== undefined) return hit;
    shared.set(key, deepFreeze(v));
    return v;
  };
  for (const e of entries) {
    const { action, refs } = routeAction(c, e, usedServices);
    routes.push({
      // 'namespace/name' out of the key 'MailRoute/namespace/name' the compile keeps anyway: a
      // slice of it, not a new string per route (100k routes: ~4 MB)
      name: e.meta.key.slice(e.meta.kind.length + 1),
      priority: priorityOf(e),
      recipients: sameOrMade(
        e.recipients
          .map((r) => r.pattern)
          .sort(bySpecificity)
          .map((r) => r.text),
        e.spec?.match.recipients,
      ),
      senders: one(e.senders.map((s) => s.text)),
      action: one(action),
    });
    judgeRoute(section, e, refs, shadowed.get(e));
  }
  for (const svcKey of [...usedServices].sort()) {
    section.sources.set(`Service/${svcKey}`, c.services.get(svcKey)?.metadata.generation ?? 0);
  }
  return routes;
}

function judgeRoute(
  section: NamespaceSection,
  e: RouteEntry,
  refs: Verdict,
  shadowed: Conflict[] | undefined,
): void {
  const { meta } = e;
  if (e.carried) {
    section.sources.set(meta.key, e.carried.generation);
    const consequence = `; generation ${e.carried.generation}, the last valid one, stays in force until the spec is fixed`;
    section.statuses.set(
      meta.key,
      invalidSpecStatus(meta.generation, errorText(e.carried.errors) + consequence, shadowed),
    );
    return;
  }
  section.sources.set(meta.key, meta.generation ?? 0);
  const verdict = shadowed
    ? accepted(
        `accepted, but these patterns never win: an older route with the same priority, pattern and senders takes them: ${listText(shadowed.map((c) => `${c.value} (${c.winner})`))}`,
        REASONS.conflicted,
      )
    : accepted('accepted');
  section.statuses.set(meta.key, makeStatus(meta.generation, verdict, refs, shadowed));
}

/** The route's action and ResolvedRefs: the generation in force's action, a reject, or a forward. */
function routeAction(
  c: NamespaceContext,
  e: RouteEntry,
  usedServices: Set<string>,
): { action: Route['action']; refs: Verdict } {
  const { spec } = e;
  if (e.carried || !spec) {
    return { action: (e.carried as NonNullable<RouteEntry['carried']>).route.action, refs: ALL_RESOLVED };
  }
  if (spec.reject) {
    // code and tls: validation applied the CRD's defaults (550, opportunistic)
    const code = spec.reject.code as number;
    return {
      action: {
        reject: {
          code,
          enhancedCode: spec.reject.enhancedCode ?? (code >= 500 ? '5.7.1' : '4.7.1'),
          message: spec.reject.message ?? DEFAULT_REJECT_MESSAGE,
        },
      },
      refs: ALL_RESOLVED,
    };
  }
  const resolved = resolveUpstreams(
    e.meta.namespace,
    spec.forward?.upstreams ?? [],
    c.services,
    usedServices,
  );
  const { problems, upstreams } = resolved;
  const refs: Verdict =
    problems.length === 0
      ? ALL_RESOLVED
      : {
          status: 'False',
          reason: problems[0].reason,
          message:
            problems.map((x) => x.message).join('; ') +
            (upstreams.length > 0
              ? '; the other upstreams are used meanwhile'
              : `; meanwhile recipients of this route get ${UNRESOLVED_REPLY.code} ${UNRESOLVED_REPLY.enhancedCode}`),
        };
  // validated already: the template parses; its normalised text is what relays load
  const template = spec.forward?.rewrite && parseRewriteTemplate(spec.forward.rewrite.recipient);
  const rewrite = template?.ok ? { rewrite: { recipient: template.value.text } } : {};
  const action: Route['action'] =
    upstreams.length > 0 ? { forward: { ...rewrite, upstreams } } : { reject: { ...UNRESOLVED_REPLY } };
  return { action, refs };
}

function hostUpstream(host: string, port: number, u: UpstreamSpec): Upstream {
  const out: Upstream = {
    host,
    port,
    tls: u.tls as Upstream['tls'],
    verify: !u.insecureSkipVerify,
  };
  if (u.serverName !== undefined && u.serverName !== '') out.serverName = u.serverName.toLowerCase();
  // only when set, so that configs without it keep their hash
  if (u.xclient) out.xclient = true;
  return out;
}

function resolveUpstreams(
  namespace: string,
  upstreams: UpstreamSpec[],
  services: Map<string, Service>,
  usedServices: Set<string>,
): { upstreams: Upstream[]; problems: Array<{ reason: string; message: string }> } {
  const out: Upstream[] = [];
  const problems: Array<{ reason: string; message: string }> = [];
  upstreams.forEach((u, i) => {
    if (u.host !== undefined) {
      const bare = u.host.startsWith('[') && u.host.endsWith(']') ? u.host.slice(1, -1) : u.host;
      out.push(hostUpstream(bare.toLowerCase(), u.port ?? 25, u));
      return;
    }
    if (!u.service) return;
    const svcKey = `${namespace}/${u.service.name}`;
    const svc = services.get(svcKey);
    const field = `spec.forward.upstreams[${i}].service`;
    if (!svc) {
      problems.push({
        reason: REASONS.serviceNotFound,
        message: `${field}: Service ${svcKey} not found; create it or fix the name`,
      });
      return;
    }
    usedServices.add(svcKey);
    const r = serviceUpstream(namespace, svc, u, field);
    if ('problem' in r) problems.push(r.problem);
    else out.push(r.upstream);
  });
  return { upstreams: out, problems };
}

/** A Service upstream as an address: its ClusterIP (else its DNS name) and the named or numbered port. */
function serviceUpstream(
  namespace: string,
  svc: Service,
  u: UpstreamSpec,
  field: string,
): { upstream: Upstream } | { problem: { reason: string; message: string } } {
  const ref = u.service as NonNullable<UpstreamSpec['service']>;
  const svcKey = `${namespace}/${ref.name}`;
  const ports = svc.spec?.ports ?? [];
  const want = ref.port;
  const port =
    typeof want === 'number'
      ? ports.find((p) => p.port === want)
      : (ports.find((p) => p.name === want) ??
        (/^[0-9]+$/.test(want) ? ports.find((p) => p.port === Number(want)) : undefined));
  if (!port) {
    const have = ports.map((p) => (p.name ? `${p.name} (${p.port})` : String(p.port)));
    return {
      problem: {
        reason: REASONS.servicePortNotFound,
        message: `${field}.port: Service ${svcKey} has no port ${JSON.stringify(want)}; it has ${have.length > 0 ? have.join(', ') : 'no ports'}`,
      },
    };
  }
  const ip = svc.spec?.clusterIP;
  const host = ip && ip !== 'None' ? ip : `${ref.name}.${namespace}.svc`;
  return { upstream: hostUpstream(host, port.port, u) };
}

/** `v`, frozen with everything in it: a shared action is read by every route that has it, never written. */
function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}
