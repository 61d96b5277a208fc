// The pure compile step: TenantPolicies, MailRoutes and Services in; a hashed, deterministic
// RelayConfig and one status per Mail-Plus resource out. Everything the relay must not decide on
// its own is settled here: validity, domain ownership, route order, upstream addresses, defaults.

import { canonicalJson, hashConfig, hashDerivedConfig } from '../../contract/config/hash.ts';
import type {
  Limits,
  RelayConfig,
  Route,
  Tenant,
  TenantDnsbl,
  Upstream,
} from '../../contract/config/types.gen.ts';
import { parseCidr } from '../../contract/grammar/cidr.ts';
import { normalizeDomainClaim, type Pattern, parsePattern } from '../../contract/grammar/match.ts';
import { parseRetention } from '../../contract/grammar/retention.ts';
import { parseRewriteTemplate } from '../../contract/grammar/rewrite.ts';
import type { MailRoute, MailRouteSpec, TenantPolicy } from '../api/types.gen.ts';
import {
  type Conflict,
  makeStatus,
  REASONS,
  type ResourceStatus,
  type StatusCondition,
} from '../conditions/resource-status.ts';
import { resourceKey, resourceLabel, type Service } from '../resources/types.ts';
import { parseByteQuantity, parseDurationSeconds } from '../resources/units.ts';
import { type ValidationResult, validateMailRoute, validateTenantPolicy } from '../resources/validate.ts';
import { compileAuthentication } from './authentication.ts';
import type { CompileCache, SectionInputs } from './cache.ts';
import { generationInForce, previousRoute, previousTenant } from './carry-over.ts';
import { checkConsent, type TroubleshootingSpec } from './consent.ts';

export interface CompileInput {
  tenantPolicies: TenantPolicy[];
  mailRoutes: MailRoute[];
  services: Service[];
}

export interface CompileOptions {
  /**
   * The current time (epoch ms or Date): consents (spec.troubleshooting.expiresAt) are checked
   * against it. The compile step never reads the clock itself; without `now` every consent is
   * refused (ConsentInvalid).
   */
  now?: number | Date;
  /**
   * The relay config published before (what relays serve). A resource whose current generation is
   * invalid keeps the version this config serves in force (see carry-over.ts); without it an
   * invalid resource is simply left out (a TenantPolicy still reserves its domains).
   */
  previous?: RelayConfig;
  /**
   * Files (`mailplus dev`, `validate`, `route -f`, `render`): document order stands in for
   * creation time. A resource without metadata.creationTimestamp counts as created after every
   * timestamped one, in the order of the input lists (the order `kubectl apply -f` creates them),
   * so files give the owner a cluster gives for resources created in that order. Without this
   * option (the operator) input order never matters and untimestamped resources tie.
   */
  documentOrder?: boolean;
  /**
   * Validation results and namespace sections of earlier compiles (the operator): input objects
   * are treated as immutable, a changed resource must be a new object. Output is unchanged.
   */
  cache?: CompileCache;
}

export interface CompileResult {
  config: RelayConfig;
  /** Keyed 'Kind/namespace/name' for every TenantPolicy and MailRoute in the input. */
  statuses: Map<string, ResourceStatus>;
}

export { CompileCache } from './cache.ts';

export const DEFAULT_REJECT_MESSAGE = 'Message rejected by policy';
/** What a forward route whose upstreams all fail to resolve answers, so mail is deferred, not misrouted. */
export const UNRESOLVED_REPLY = {
  code: 451,
  enhancedCode: '4.4.1',
  message: 'Upstream unavailable, try again later',
};

interface Meta {
  kind: 'TenantPolicy' | 'MailRoute';
  namespace: string;
  name: string;
  key: string;
  label: string;
  generation: number | undefined;
  created: number;
  /** Position in the input (documentOrder), else 0. */
  position: number;
}

function metaOf(
  kind: 'TenantPolicy' | 'MailRoute',
  obj: { metadata?: Record<string, unknown> },
  position = 0,
): Meta {
  const md = (obj.metadata ?? {}) as Record<string, unknown>;
  const namespace = typeof md.namespace === 'string' && md.namespace !== '' ? md.namespace : 'default';
  const name = typeof md.name === 'string' ? md.name : '';
  const ts = typeof md.creationTimestamp === 'string' ? Date.parse(md.creationTimestamp) : Number.NaN;
  return {
    kind,
    namespace,
    name,
    key: resourceKey(kind, namespace, name),
    label: resourceLabel(kind, namespace, name),
    generation: typeof md.generation === 'number' ? md.generation : undefined,
    // Missing timestamps (files) count as newest.
    created: Number.isFinite(ts) ? ts : Number.POSITIVE_INFINITY,
    position,
  };
}

const cmpStr = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
/** Older first; equal or missing timestamps fall back to input position (files), then namespace/name. */
const byAge = (a: Meta, b: Meta): number =>
  (a.created === b.created ? 0 : a.created < b.created ? -1 : 1) ||
  a.position - b.position ||
  cmpStr(a.namespace, b.namespace) ||
  cmpStr(a.name, b.name);

function listText(items: string[], max = 10): string {
  return items.length <= max
    ? items.join(', ')
    : `${items.slice(0, max).join(', ')} and ${items.length - max} more`;
}

type FieldError = { field: string; message: string };

interface PolicyEntry {
  meta: Meta;
  raw: TenantPolicy;
  /** The valid spec; absent when the current generation is invalid. */
  spec?: TenantPolicy['spec'];
  /**
   * The current generation is invalid: its errors, and the last valid version that stays in force
   * (absent when none was ever served: the policy then only reserves its domains).
   */
  invalid?: { errors: FieldError[]; inForce?: { generation: number; tenant: Tenant } };
  /** Normalised claims with the field they come from. */
  claims: Array<{ claim: string; field: string }>;
  owned: Set<string>;
  lost: Conflict[];
}

interface RouteEntry {
  meta: Meta;
  /** The valid spec; absent when an invalid generation keeps its last valid version (carried). */
  spec?: MailRouteSpec;
  carried?: { errors: FieldError[]; generation: number; route: Route };
  recipients: Array<{ pattern: Pattern; index: number }>;
  senders: Pattern[];
}

const errorText = (errors: FieldError[]): string =>
  listText(
    errors.map((e) => (e.field ? `${e.field}: ${e.message}` : e.message)),
    20,
  );

/** The parseable domain claims of an invalid TenantPolicy: they stay reserved for it. */
function reservedClaims(raw: TenantPolicy): PolicyEntry['claims'] {
  const domains = (raw as { spec?: { domains?: unknown } }).spec?.domains;
  const out: PolicyEntry['claims'] = [];
  if (!Array.isArray(domains)) return out;
  domains.forEach((d, i) => {
    const r = typeof d === 'string' ? normalizeDomainClaim(d) : undefined;
    if (r?.ok && !out.some((c) => c.claim === r.value))
      out.push({ claim: r.value, field: `spec.domains[${i}]` });
  });
  return out;
}

function invalid(
  generation: number | undefined,
  errors: FieldError[],
  consequence = '',
  conflicts?: Conflict[],
): ResourceStatus {
  return makeStatus(
    generation,
    { status: 'False', reason: REASONS.invalidSpec, message: errorText(errors) + consequence },
    { status: 'Unknown', reason: REASONS.notChecked, message: 'not checked: the spec is invalid' },
    conflicts,
  );
}

const byKey = (a: [Meta, unknown], b: [Meta, unknown]): number => cmpStr(a[0].key, b[0].key);

/**
 * Keeps one object per key, independent of input order (largest generation, then canonical text);
 * in no particular order.
 */
function dedupe<T extends { metadata?: unknown }>(
  kind: 'TenantPolicy' | 'MailRoute',
  items: T[],
  documentOrder = false,
  cache?: CompileCache,
): Array<[Meta, T]> {
  const byKey = new Map<string, [Meta, T]>();
  for (const [i, item] of items.entries()) {
    const md = item as { metadata?: Record<string, unknown> };
    const meta = cache
      ? cache.meta(kind, md, () => metaOf(kind, md))
      : metaOf(kind, md, documentOrder ? i : 0);
    const prev = byKey.get(meta.key);
    if (!prev) {
      byKey.set(meta.key, [meta, item]);
      continue;
    }
    const g = meta.generation ?? 0;
    const pg = prev[0].generation ?? 0;
    if (g > pg || (g === pg && canonicalJson(item) < canonicalJson(prev[1])))
      byKey.set(meta.key, [meta, item]);
  }
  return [...byKey.values()];
}

function ownerOfPattern(
  p: Pattern,
  exact: Map<string, string>,
  wildcard: Map<string, string>,
): string | undefined {
  if (p.kind !== 'subdomains') {
    const e = exact.get(p.domain);
    if (e !== undefined) return e;
  } else {
    const w = wildcard.get(p.domain);
    if (w !== undefined) return w;
  }
  const d = p.domain;
  for (let dot = d.indexOf('.'); dot >= 0; dot = d.indexOf('.', dot + 1)) {
    const w = wildcard.get(d.slice(dot + 1));
    if (w !== undefined) return w;
  }
  return undefined;
}

function compileLimits(spec: TenantPolicy['spec']): Limits {
  const limits: Limits = {};
  const l = spec.limits;
  if (!l) return limits;
  if (l.maxMessageSize !== undefined) {
    const r = parseByteQuantity(l.maxMessageSize);
    if (r.ok) limits.maxMessageSize = r.value;
  }
  if (l.maxRecipients !== undefined) limits.maxRecipients = l.maxRecipients;
  if (l.rate) {
    const per = parseDurationSeconds(l.rate.per);
    if (per.ok) limits.rate = { messages: l.rate.messages, perSeconds: per.value };
  }
  return limits;
}

function hostUpstream(host: string, port: number, u: UpstreamSpec): Upstream {
  const out: Upstream = {
    host,
    port,
    tls: u.tls ?? 'opportunistic',
    verify: !(u.insecureSkipVerify ?? false),
  };
  if (u.serverName !== undefined && u.serverName !== '') out.serverName = u.serverName.toLowerCase();
  // only when set, so that configs without it keep their hash
  if (u.xclient) out.xclient = true;
  return out;
}

type UpstreamSpec = NonNullable<MailRouteSpec['forward']>['upstreams'][number];

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
    const field = `spec.forward.upstreams[${i}].service`;
    const svcKey = `${namespace}/${u.service.name}`;
    const svc = services.get(svcKey);
    if (!svc) {
      problems.push({
        reason: REASONS.serviceNotFound,
        message: `${field}: Service ${svcKey} not found; create it or fix the name`,
      });
      return;
    }
    usedServices.add(svcKey);
    const ports = svc.spec?.ports ?? [];
    const want = u.service.port;
    const port =
      typeof want === 'number'
        ? ports.find((p) => p.port === want)
        : (ports.find((p) => p.name === want) ??
          (/^[0-9]+$/.test(want) ? ports.find((p) => p.port === Number(want)) : undefined));
    if (!port) {
      const have = ports.map((p) => (p.name ? `${p.name} (${p.port})` : String(p.port)));
      problems.push({
        reason: REASONS.servicePortNotFound,
        message: `${field}.port: Service ${svcKey} has no port ${JSON.stringify(want)}; it has ${have.length > 0 ? have.join(', ') : 'no ports'}`,
      });
      return;
    }
    const ip = svc.spec?.clusterIP;
    const host = ip && ip !== 'None' ? ip : `${u.service.name}.${namespace}.svc`;
    out.push(hostUpstream(host, port.port, u));
  });
  return { upstreams: out, problems };
}

const bySpecificity = (a: Pattern, b: Pattern): number => a.rank - b.rank || cmpStr(a.text, b.text);

/**
 * Client networks, TLS, limits and privacy: from the valid spec, else from the last valid
 * generation in force; a policy that only reserves its domains has no routes, so none apply.
 */
function tenantSettings(
  p: PolicyEntry,
): Pick<Tenant, 'clientCIDRs' | 'requireTLS' | 'limits' | 'privacy' | 'dnsbl' | 'authentication'> {
  if (!p.spec) {
    const prev = p.invalid?.inForce?.tenant;
    if (!prev) return { clientCIDRs: [], requireTLS: false, limits: {} };
    const { clientCIDRs, requireTLS, limits, privacy, dnsbl, authentication } = prev;
    return {
      clientCIDRs,
      requireTLS,
      limits,
      ...(privacy ? { privacy } : {}),
      ...(dnsbl ? { dnsbl } : {}),
      ...(authentication ? { authentication } : {}),
    };
  }
  const cidrs = (p.spec.clientCIDRs ?? []).map(
    (c) => (parseCidr(c) as { ok: true; value: { text: string } }).value.text,
  );
  const dnsbl = compileDnsbl(p.spec.dnsbl);
  const authentication = compileAuthentication(p.spec.authentication);
  return {
    clientCIDRs: [...new Set(cidrs)].sort(),
    requireTLS: p.spec.requireTLS ?? false,
    limits: compileLimits(p.spec),
    ...(dnsbl ? { dnsbl } : {}),
    ...(authentication ? { authentication } : {}),
  };
}

/** spec.dnsbl (already validated) in the relay's form: defaults filled in, names and CIDRs normalised. */
function compileDnsbl(d: NonNullable<TenantPolicy['spec']['dnsbl']> | undefined): TenantDnsbl | undefined {
  if (!d) return undefined;
  const allow = (d.allow ?? []).map(
    (c) => (parseCidr(c) as { ok: true; value: { text: string } }).value.text,
  );
  return {
    zones: d.zones.map((z) => ({
      zone: z.zone.toLowerCase().replace(/\.$/, ''),
      weight: z.weight ?? 1,
      ...(z.match?.length ? { match: z.match } : {}),
    })),
    threshold: d.threshold ?? 1,
    allow: [...new Set(allow)].sort(),
    failClosed: d.onLookupFailure === 'Defer',
  };
}

/** What compile() derives from the policies, shared by every namespace section. */
interface NamespaceContext {
  tenantByNs: Map<string, PolicyEntry>;
  rejectedPolicyByNs: Map<string, string>;
  captureByNs: Map<string, NonNullable<Tenant['capture']>>;
  exactOwner: Map<string, string>;
  wildcardOwner: Map<string, string>;
  services: Map<string, Service>;
  previous: RelayConfig | undefined;
  validateRoute(raw: MailRoute): ValidationResult<MailRoute>;
}

/** One namespace's share of the compile output. */
interface NamespaceSection {
  tenant?: Tenant;
  statuses: Map<string, ResourceStatus>;
  sources: Map<string, number>;
  /** False when it depends on the previous config (an invalid route): never reused. */
  reusable: boolean;
}

/**
 * The MailRoutes of one namespace (validity, tenant, domain ownership) and its tenant section with
 * the routes in order. Reads nothing of other namespaces but the domain owners.
 */
function compileNamespace(
  c: NamespaceContext,
  namespace: string,
  raws: Array<[Meta, MailRoute]>,
): NamespaceSection {
  const { tenantByNs, rejectedPolicyByNs, captureByNs, exactOwner, wildcardOwner, services } = c;
  const statuses = new Map<string, ResourceStatus>();
  const sources = new Map<string, number>();
  let reusable = true;
  const entries: RouteEntry[] = [];
  for (const [meta, raw] of raws) {
    const v = c.validateRoute(raw);
    if (!v.value) reusable = false;
    const found = tenantByNs.get(meta.namespace);
    // a policy that only reserves its domains serves no routes
    const tenant = found && (found.spec || found.invalid?.inForce) ? found : undefined;
    let carried: RouteEntry['carried'];
    if (!v.value) {
      const { namespace, name } = meta;
      const g = generationInForce(c.previous, 'MailRoute', namespace, name, meta.generation);
      const route = g === undefined || !tenant ? undefined : previousRoute(c.previous, namespace, name);
      if (g === undefined || !route) {
        statuses.set(meta.key, invalid(meta.generation, v.errors));
        continue;
      }
      carried = { errors: v.errors, generation: g, route };
    }
    const spec = v.value?.spec;
    const match = spec?.match ?? carried?.route;
    if (!tenant || !match) {
      const why =
        rejectedPolicyByNs.get(meta.namespace) ??
        `namespace ${meta.namespace} has no TenantPolicy; create one listing the domains of this route`;
      statuses.set(
        meta.key,
        makeStatus(
          meta.generation,
          { status: 'False', reason: REASONS.noTenantPolicy, message: why },
          {
            status: 'Unknown',
            reason: REASONS.noTenantPolicy,
            message: 'not checked: the route is not accepted',
          },
        ),
      );
      continue;
    }
    const recipients: RouteEntry['recipients'] = [];
    const notOwned: string[] = [];
    match.recipients.forEach((text, index) => {
      const r = parsePattern(text);
      if (!r.ok) return;
      const owner = ownerOfPattern(r.value, exactOwner, wildcardOwner);
      if (owner !== meta.namespace) {
        notOwned.push(
          owner === undefined ? r.value.text : `${r.value.text} (domain held by tenant ${owner})`,
        );
      } else if (!recipients.some((x) => x.pattern.text === r.value.text)) {
        recipients.push({ pattern: r.value, index });
      }
    });
    if (notOwned.length > 0 && carried) {
      const consequence = `; generation ${carried.generation}, the last valid one, is not served either: its recipient patterns are outside the domains of ${tenant.meta.label}: ${listText(notOwned)}`;
      statuses.set(meta.key, invalid(meta.generation, carried.errors, consequence));
      continue;
    }
    if (notOwned.length > 0) {
      statuses.set(
        meta.key,
        makeStatus(
          meta.generation,
          {
            status: 'False',
            reason: REASONS.domainNotOwned,
            message: `recipient patterns outside the domains of ${tenant.meta.label}: ${listText(notOwned)}; add the domains to the TenantPolicy or remove the patterns`,
          },
          {
            status: 'Unknown',
            reason: REASONS.domainNotOwned,
            message: 'not checked: the route is not accepted',
          },
        ),
      );
      continue;
    }
    const senders: Pattern[] = [];
    for (const s of match.senders ?? []) {
      const r = parsePattern(s, { allowNull: true });
      if (r.ok && !senders.some((x) => x.text === r.value.text)) senders.push(r.value);
    }
    senders.sort(bySpecificity);
    const entry: RouteEntry = { meta, spec, carried, recipients, senders };
    entries.push(entry);
  }

  const section: NamespaceSection = { statuses, sources, reusable };
  // The tenant section and its routes.
  const p = tenantByNs.get(namespace);
  if (p) {
    const priority = (e: RouteEntry) => e.spec?.priority ?? e.carried?.route.priority ?? 100;
    entries.sort((a, b) => priority(a) - priority(b) || byAge(a.meta, b.meta));

    // Shadowing: a later route with the same priority and pattern never wins that pattern when an
    // earlier one accepts every sender it accepts (no sender filter, or the same filter).
    const conflicts = new Map<RouteEntry, Conflict[]>();
    const firstAny = new Map<string, RouteEntry>();
    const firstSame = new Map<string, RouteEntry>();
    for (const e of entries) {
      const senderKey = e.senders.map((s) => s.text).join(',');
      for (const { pattern, index } of e.recipients) {
        const k = `${priority(e)}|${pattern.text}`;
        const winner = firstAny.get(k) ?? (senderKey !== '' ? firstSame.get(`${k}|${senderKey}`) : undefined);
        if (winner) {
          const list = conflicts.get(e) ?? [];
          list.push({
            field: `spec.match.recipients[${index}]`,
            value: pattern.text,
            winner: winner.meta.label,
          });
          conflicts.set(e, list);
        }
        if (senderKey === '') {
          if (!firstAny.has(k)) firstAny.set(k, e);
        } else if (!firstSame.has(`${k}|${senderKey}`)) firstSame.set(`${k}|${senderKey}`, e);
      }
    }

    const routes: Route[] = [];
    const usedServices = new Set<string>();
    for (const e of entries) {
      let action: Route['action'];
      let refs: Omit<StatusCondition, 'type'> = {
        status: 'True',
        reason: REASONS.resolvedRefs,
        message: 'all references resolved',
      };
      let refsFalse: { reason: string; message: string } | undefined;
      if (e.carried || !e.spec) {
        action = (e.carried as NonNullable<RouteEntry['carried']>).route.action;
      } else if (e.spec.reject) {
        const code = e.spec.reject.code ?? 550;
        action = {
          reject: {
            code,
            enhancedCode: e.spec.reject.enhancedCode ?? (code >= 500 ? '5.7.1' : '4.7.1'),
            message: e.spec.reject.message ?? DEFAULT_REJECT_MESSAGE,
          },
        };
      } else {
        const resolved = resolveUpstreams(
          e.meta.namespace,
          e.spec.forward?.upstreams ?? [],
          services,
          usedServices,
        );
        if (resolved.problems.length > 0) {
          refsFalse = {
            reason: resolved.problems[0].reason,
            message:
              resolved.problems.map((x) => x.message).join('; ') +
              (resolved.upstreams.length > 0
                ? '; the other upstreams are used meanwhile'
                : `; meanwhile recipients of this route get ${UNRESOLVED_REPLY.code} ${UNRESOLVED_REPLY.enhancedCode}`),
          };
        }
        // validated already: the template parses; its normalised text is what relays load
        const template = e.spec.forward?.rewrite && parseRewriteTemplate(e.spec.forward.rewrite.recipient);
        const rewrite = template?.ok ? { rewrite: { recipient: template.value.text } } : {};
        action =
          resolved.upstreams.length > 0
            ? { forward: { ...rewrite, upstreams: resolved.upstreams } }
            : { reject: { ...UNRESOLVED_REPLY } };
      }
      const recipients = e.recipients.map((r) => r.pattern).sort(bySpecificity);
      routes.push({
        name: `${e.meta.namespace}/${e.meta.name}`,
        priority: priority(e),
        recipients: recipients.map((r) => r.text),
        senders: e.senders.map((s) => s.text),
        action,
      });
      const shadowed = conflicts.get(e);
      if (e.carried) {
        sources.set(e.meta.key, e.carried.generation);
        const consequence = `; generation ${e.carried.generation}, the last valid one, stays in force until the spec is fixed`;
        statuses.set(e.meta.key, invalid(e.meta.generation, e.carried.errors, consequence, shadowed));
        continue;
      }
      sources.set(e.meta.key, e.meta.generation ?? 0);
      const accepted = shadowed
        ? {
            status: 'True' as const,
            reason: REASONS.conflicted,
            message: `accepted, but these patterns never win: an older route with the same priority, pattern and senders takes them: ${listText(shadowed.map((c) => `${c.value} (${c.winner})`))}`,
          }
        : { status: 'True' as const, reason: REASONS.accepted, message: 'accepted' };
      if (refsFalse) refs = { status: 'False', reason: refsFalse.reason, message: refsFalse.message };
      statuses.set(e.meta.key, makeStatus(e.meta.generation, accepted, refs, shadowed));
    }
    for (const svcKey of [...usedServices].sort()) {
      const svc = services.get(svcKey);
      sources.set(`Service/${svcKey}`, svc?.metadata.generation ?? 0);
    }

    const tenant: Tenant = {
      name: p.meta.namespace,
      policy: `${p.meta.namespace}/${p.meta.name}`,
      domains: [...p.owned].sort(),
      ...tenantSettings(p),
      routes,
    };
    const privacy = p.spec?.privacy;
    if (privacy !== undefined) {
      const r = privacy.retention === undefined ? undefined : parseRetention(privacy.retention);
      tenant.privacy = {
        ...(r?.ok ? { retentionSeconds: r.seconds } : {}),
        ...(privacy.pseudonymize !== undefined ? { pseudonymize: privacy.pseudonymize } : {}),
      };
    }
    const capture = captureByNs.get(p.meta.namespace);
    if (capture) tenant.capture = capture;
    section.tenant = tenant;
  }

  section.reusable = reusable;
  return section;
}

export function compile(input: CompileInput, options: CompileOptions = {}): CompileResult {
  const nowMs = options.now === undefined ? undefined : new Date(options.now).getTime();
  // file order is an input of route order there (documentOrder): never cached
  const cache = options.documentOrder ? undefined : options.cache;
  const statuses = new Map<string, ResourceStatus>();
  const sources = new Map<string, number>();

  // Services by namespace/name.
  const services = new Map<string, Service>();
  for (const svc of [...input.services].sort((a, b) =>
    cmpStr(`${a.metadata.namespace}/${a.metadata.name}`, `${b.metadata.namespace}/${b.metadata.name}`),
  )) {
    services.set(`${svc.metadata.namespace ?? 'default'}/${svc.metadata.name}`, svc);
  }

  // 1. Validate TenantPolicies, one per namespace (the oldest).
  const policiesByNs = new Map<string, PolicyEntry[]>();
  for (const [meta, raw] of dedupe('TenantPolicy', input.tenantPolicies, options.documentOrder, cache).sort(
    byKey,
  )) {
    const v = cache ? cache.validated(raw, validateTenantPolicy) : validateTenantPolicy(raw);
    let errors: FieldError[] = v.errors;
    const retention = v.value?.spec.privacy?.retention;
    const r = retention === undefined ? undefined : parseRetention(retention);
    if (r && !r.ok) errors = [{ field: 'spec.privacy.retention', message: r.error }];
    let entry: PolicyEntry;
    if (v.value && errors.length === 0) {
      entry = {
        meta,
        raw,
        spec: v.value.spec,
        claims: reservedClaims(v.value),
        owned: new Set(),
        lost: [],
      };
    } else {
      // Faults never change who owns what: the last valid version stays in force, and a policy
      // that never had one still reserves its domains against newer claims.
      const { namespace, name } = meta;
      const g = generationInForce(options.previous, 'TenantPolicy', namespace, name, meta.generation);
      const tenant = g === undefined ? undefined : previousTenant(options.previous, namespace, name);
      const inForce = g !== undefined && tenant ? { generation: g, tenant } : undefined;
      const claims = inForce
        ? inForce.tenant.domains.map((claim) => ({ claim, field: `generation ${g} (in force)` }))
        : reservedClaims(raw);
      if (claims.length === 0) {
        statuses.set(meta.key, invalid(meta.generation, errors));
        continue;
      }
      entry = { meta, raw, invalid: { errors, inForce }, claims, owned: new Set(), lost: [] };
    }
    const list = policiesByNs.get(meta.namespace);
    if (list) list.push(entry);
    else policiesByNs.set(meta.namespace, [entry]);
  }
  const policies: PolicyEntry[] = [];
  for (const list of policiesByNs.values()) {
    list.sort((a, b) => byAge(a.meta, b.meta));
    policies.push(list[0]);
    for (const loser of list.slice(1)) {
      if (loser.invalid) {
        statuses.set(loser.meta.key, invalid(loser.meta.generation, loser.invalid.errors));
        continue;
      }
      statuses.set(
        loser.meta.key,
        makeStatus(
          loser.meta.generation,
          {
            status: 'False',
            reason: REASONS.conflicted,
            message: `namespace ${loser.meta.namespace} already has the older ${list[0].meta.label}; only one TenantPolicy per namespace is honoured: merge this one into it and delete it`,
          },
          { status: 'True', reason: REASONS.resolvedRefs, message: 'no references' },
        ),
      );
    }
  }
  policies.sort((a, b) => byAge(a.meta, b.meta));

  // 2. Domain ownership: a domain claimed by two tenants belongs to the older claim (then
  // namespace/name). Policies are visited oldest first, and a claim that an older tenant's claim
  // already covers (the same claim, or a wildcard over a parent domain) is lost. A newer wildcard
  // over an older exact or narrower claim stays, minus that carve-out: at run time the more specific
  // claim wins, and by construction it is always the older one.
  const claimOwner = new Map<string, PolicyEntry>();
  const coveringHolder = (claim: string, self: PolicyEntry): PolicyEntry | undefined => {
    const same = claimOwner.get(claim);
    if (same && same !== self) return same;
    let rest = claim.startsWith('*.') ? claim.slice(2) : claim;
    for (let dot = rest.indexOf('.'); dot >= 0; dot = rest.indexOf('.')) {
      rest = rest.slice(dot + 1);
      const wider = claimOwner.get(`*.${rest}`);
      if (wider && wider !== self) return wider;
    }
    return undefined;
  };
  for (const p of policies) {
    for (const { claim, field } of p.claims) {
      const holder = coveringHolder(claim, p);
      if (holder) {
        p.lost.push({ field, value: claim, winner: holder.meta.label });
      } else {
        claimOwner.set(claim, p);
        p.owned.add(claim);
      }
    }
  }
  const exactOwner = new Map<string, string>();
  const wildcardOwner = new Map<string, string>();
  for (const [claim, p] of claimOwner) {
    if (claim.startsWith('*.')) wildcardOwner.set(claim.slice(2), p.meta.namespace);
    else exactOwner.set(claim, p.meta.namespace);
  }

  const tenantByNs = new Map<string, PolicyEntry>();
  const rejectedPolicyByNs = new Map<string, string>();
  const captureByNs = new Map<string, NonNullable<Tenant['capture']>>();
  for (const p of policies) {
    const lostText = p.lost.map((c) => `${c.value} (held by ${c.winner})`);
    if (p.invalid) {
      const owned = listText([...p.owned].sort());
      const lost = p.lost.length > 0 ? `; claimed by an older TenantPolicy: ${listText(lostText)}` : '';
      const inForce = p.invalid.inForce;
      const consequence =
        p.owned.size === 0
          ? `; ${inForce ? `generation ${inForce.generation}, the last valid one,` : 'it'} serves nothing${lost}`
          : inForce
            ? `; generation ${inForce.generation}, the last valid one, stays in force for ${owned} until the spec is fixed${lost}`
            : `; no valid generation was ever served: ${owned} stay reserved for this tenant (their mail is refused) until the spec is fixed${lost}`;
      statuses.set(p.meta.key, invalid(p.meta.generation, p.invalid.errors, consequence, p.lost));
      if (p.owned.size === 0 || !inForce) {
        rejectedPolicyByNs.set(
          p.meta.namespace,
          `${p.meta.label} is invalid and no valid generation of it is in force; fix the TenantPolicy`,
        );
      }
      if (p.owned.size === 0) continue;
      tenantByNs.set(p.meta.namespace, p);
      if (inForce) sources.set(p.meta.key, inForce.generation);
      continue;
    }
    if (p.owned.size === 0) {
      statuses.set(
        p.meta.key,
        makeStatus(
          p.meta.generation,
          {
            status: 'False',
            reason: REASONS.domainClaimedByOtherTenant,
            message: `every domain is claimed by an older TenantPolicy: ${listText(lostText)}; use other domains or ask the holder to release them`,
          },
          { status: 'True', reason: REASONS.resolvedRefs, message: 'no references' },
          p.lost,
        ),
      );
      rejectedPolicyByNs.set(
        p.meta.namespace,
        `${p.meta.label} is not accepted: every domain is claimed by another tenant`,
      );
      continue;
    }
    tenantByNs.set(p.meta.namespace, p);
    sources.set(p.meta.key, p.meta.generation ?? 0);
    statuses.set(
      p.meta.key,
      makeStatus(
        p.meta.generation,
        p.lost.length > 0
          ? {
              status: 'True',
              reason: REASONS.domainClaimedByOtherTenant,
              message: `accepted for ${listText([...p.owned].sort())}; these domains are claimed by an older TenantPolicy and not served for this tenant: ${listText(lostText)}`,
            }
          : {
              status: 'True',
              reason: REASONS.accepted,
              message: `accepted for ${listText([...p.owned].sort())}`,
            },
        { status: 'True', reason: REASONS.resolvedRefs, message: 'no references' },
        p.lost,
      ),
    );
    // A troubleshooting capture needs a valid, current consent. Without one nothing is captured
    // and the policy says why, but its mail keeps flowing (routes are still served).
    if (p.spec?.troubleshooting !== undefined) {
      const consent = checkConsent(
        p.meta.namespace,
        p.spec.troubleshooting as TroubleshootingSpec,
        [...p.owned].sort(),
        nowMs,
      );
      if (consent.ok) {
        captureByNs.set(p.meta.namespace, consent.capture);
      } else {
        statuses.set(
          p.meta.key,
          makeStatus(
            p.meta.generation,
            {
              status: 'False',
              reason: REASONS.consentInvalid,
              message: `${listText(
                consent.errors.map((e) => `${e.field}: ${e.message}`),
                20,
              )}; nothing is captured (routing is still served)`,
            },
            { status: 'True', reason: REASONS.resolvedRefs, message: 'no references' },
            p.lost,
          ),
        );
      }
    }
  }
  // 3. MailRoutes and tenant sections, namespace by namespace (see compileNamespace); with a cache,
  // a namespace whose inputs are the same objects as before reuses its section.
  const routesByNs = new Map<string, Array<[Meta, MailRoute]>>();
  for (const item of dedupe('MailRoute', input.mailRoutes, options.documentOrder, cache)) {
    const list = routesByNs.get(item[0].namespace);
    if (list) list.push(item);
    else routesByNs.set(item[0].namespace, [item]);
  }
  for (const list of routesByNs.values()) list.sort(byKey);
  const ctx: NamespaceContext = {
    tenantByNs,
    rejectedPolicyByNs,
    captureByNs,
    exactOwner,
    wildcardOwner,
    services,
    previous: options.previous,
    validateRoute: cache ? (raw) => cache.validated(raw, validateMailRoute) : validateMailRoute,
  };
  const tenants: Tenant[] = [];
  const namespaces = new Set([...routesByNs.keys(), ...tenantByNs.keys()]);
  let servicesText: Map<string, string> | undefined;
  if (cache) {
    cache.begin([...claimOwner].map(([claim, p]) => `${claim}=${p.meta.namespace}`).join('\n'));
    servicesText = new Map();
    for (const [key, svc] of services) {
      const ns = key.slice(0, key.indexOf('/'));
      servicesText.set(ns, `${servicesText.get(ns) ?? ''}${JSON.stringify(svc)}\n`);
    }
  }
  // A policy that is invalid (carry-over reads the previous config) or has a troubleshooting
  // consent (checked against the clock) makes its namespace's section depend on more than this.
  const sectionInputs = (ns: string): SectionInputs | undefined => {
    const p = tenantByNs.get(ns);
    if (p && (p.invalid || p.spec?.troubleshooting !== undefined)) return undefined;
    return {
      objects: [p?.raw, ...(routesByNs.get(ns) ?? []).map(([, raw]) => raw)],
      text: [
        p ? [...p.owned].join(',') : '',
        p ? JSON.stringify(p.lost) : '',
        rejectedPolicyByNs.get(ns) ?? '',
        servicesText?.get(ns) ?? '',
      ].join('\n'),
    };
  };
  for (const ns of [...namespaces].sort(cmpStr)) {
    const raws = routesByNs.get(ns) ?? [];
    const compute = () => compileNamespace(ctx, ns, raws);
    const section = cache ? cache.section(ns, sectionInputs(ns), compute) : compute();
    for (const [k, s] of section.statuses) statuses.set(k, s);
    for (const [k, g] of section.sources) sources.set(k, g);
    if (section.tenant) tenants.push(section.tenant);
  }
  cache?.end(namespaces);
  const sortedSources: Record<string, number> = {};
  for (const k of [...sources.keys()].sort()) sortedSources[k] = sources.get(k) ?? 0;
  const config: RelayConfig = {
    apiVersion: 'relay.mailplus.io/v1alpha1',
    kind: 'RelayConfig',
    hash: '',
    sources: sortedSources,
    tenants,
  };
  // with a cache, reused tenant sections were hashed (and serialised) by an earlier compile
  config.hash = cache ? hashDerivedConfig(config) : hashConfig(config);
  return { config, statuses: new Map([...statuses].sort((a, b) => cmpStr(a[0], b[0]))) };
}

/** The RelayConfig as written to files and ConfigMaps: stable key order, 2-space indent, final newline. */
export function renderRelayConfig(config: RelayConfig): string {
  return `${JSON.stringify(config, null, 2)}\n`;
}
