// Indexes over a RelayConfig so that a recipient decision costs O(labels of the domain), not
// O(routes): domain -> tenant (exact map, then a walk over wildcard suffixes, longest first), and
// per tenant the routes by exact address, by tagged address, by domain and by subdomain suffix.

import type { RelayConfig, Route, Tenant } from '../../contract/config/types.gen.ts';
import { type Cidr, parseCidr } from '../../contract/grammar/cidr.ts';
import { dnsblZoneError, matchPatternError } from '../../contract/grammar/dnsbl.ts';
import { domainHolder } from '../../contract/grammar/domain-holder.ts';
import { type Address, type Pattern, parsePattern } from '../../contract/grammar/match.ts';
import { parseRewriteTemplate, type RewriteTemplate } from '../../contract/grammar/rewrite.ts';

export interface RouteEntry {
  route: Route;
  /** Position in tenant.routes (already ordered by priority, age, name). */
  index: number;
  /** Parsed sender patterns; empty = any sender. */
  senders: Pattern[];
  /** Stable identity of the upstream list ('' for reject routes). */
  upstreamKey: string;
  /** The route's recipient rewriting (forward.rewrite.recipient), parsed once per config. */
  rewrite?: RewriteTemplate;
}

/** A route reachable through one of its patterns; lists are sorted by (priority, index). */
export interface Candidate {
  entry: RouteEntry;
  pattern: Pattern;
}

export interface TenantIndex {
  tenant: Tenant;
  cidrs: Cidr[];
  byTagged: Map<string, Candidate[]>;
  byAddress: Map<string, Candidate[]>;
  byDomain: Map<string, Candidate[]>;
  bySuffix: Map<string, Candidate[]>;
}

export interface RoutingTable {
  config: RelayConfig;
  hash: string;
  tenants: TenantIndex[];
  exactDomains: Map<string, TenantIndex>;
  /** Keyed by the suffix after '*.'. */
  wildcardDomains: Map<string, TenantIndex>;
}

/** Stable identity of an upstream list: equal lists (same hosts, ports, TLS, order) share it. */
export function upstreamKeyOf(route: Route): string {
  if (!('forward' in route.action)) return '';
  return route.action.forward.upstreams
    .map((u) => `${u.tls}:${u.verify ? 'v' : 'nv'}:${u.serverName ?? ''}:${u.host}:${u.port}`)
    .join(',');
}

function push(map: Map<string, Candidate[]>, key: string, c: Candidate): void {
  const list = map.get(key);
  if (list) list.push(c);
  else map.set(key, [c]);
}

const byPriorityThenIndex = (a: Candidate, b: Candidate): number =>
  a.entry.route.priority - b.entry.route.priority || a.entry.index - b.entry.index;

function indexTenant(tenant: Tenant): TenantIndex {
  const index: TenantIndex = {
    tenant,
    cidrs: [],
    byTagged: new Map(),
    byAddress: new Map(),
    byDomain: new Map(),
    bySuffix: new Map(),
  };
  for (const text of tenant.clientCIDRs) {
    const c = parseCidr(text);
    if (!c.ok) throw new Error(`relay config: tenant ${tenant.name}: clientCIDRs: ${c.error}`);
    index.cidrs.push(c.value);
  }
  if (tenant.dnsbl) checkTenantDnsbl(tenant.name, tenant.dnsbl);
  tenant.routes.forEach((route, i) => {
    const senders = route.senders.map((s) => {
      const p = parsePattern(s, { allowNull: true });
      if (!p.ok) throw new Error(`relay config: route ${route.name}: senders: ${p.error}`);
      return p.value;
    });
    const entry: RouteEntry = { route, index: i, senders, upstreamKey: upstreamKeyOf(route) };
    const template = 'forward' in route.action ? route.action.forward.rewrite?.recipient : undefined;
    if (template !== undefined) {
      const t = parseRewriteTemplate(template);
      if (!t.ok) throw new Error(`relay config: route ${route.name}: forward.rewrite.recipient: ${t.error}`);
      entry.rewrite = t.value;
    }
    for (const text of route.recipients) {
      const p = parsePattern(text);
      if (!p.ok) throw new Error(`relay config: route ${route.name}: recipients: ${p.error}`);
      const pattern = p.value;
      const c: Candidate = { entry, pattern };
      switch (pattern.kind) {
        case 'tagged':
          push(index.byTagged, `${pattern.local}+${pattern.tag}@${pattern.domain}`, c);
          break;
        case 'address':
          push(index.byAddress, `${pattern.local}@${pattern.domain}`, c);
          break;
        case 'domain':
          push(index.byDomain, pattern.domain, c);
          break;
        case 'subdomains':
          push(index.bySuffix, pattern.domain, c);
          break;
        case 'null':
          throw new Error(`relay config: route ${route.name}: recipients: "<>" is not a recipient pattern`);
      }
    }
  });
  for (const map of [index.byTagged, index.byAddress, index.byDomain, index.bySuffix]) {
    for (const list of map.values()) list.sort(byPriorityThenIndex);
  }
  return index;
}

/**
 * The index of each tenant section by identity: a config is never mutated once loaded, and a new
 * config that keeps a tenant's section object (unchanged shards, and unchanged tenants of a changed
 * shard: relay/config/configmap-set.ts) does not index its routes again.
 */
const indexes = new WeakMap<Tenant, TenantIndex>();

export function buildRoutingTable(config: RelayConfig): RoutingTable {
  const table: RoutingTable = {
    config,
    hash: config.hash,
    tenants: [],
    exactDomains: new Map(),
    wildcardDomains: new Map(),
  };
  for (const tenant of config.tenants) {
    let index = indexes.get(tenant);
    if (!index) {
      index = indexTenant(tenant);
      indexes.set(tenant, index);
    }
    table.tenants.push(index);
    for (const d of tenant.domains) {
      const wildcard = d.startsWith('*.');
      const map = wildcard ? table.wildcardDomains : table.exactDomains;
      const key = wildcard ? d.slice(2) : d;
      const holder = map.get(key);
      if (holder) {
        throw new Error(
          `relay config: domain ${d} is held by tenants ${holder.tenant.name} and ${tenant.name}`,
        );
      }
      map.set(key, index);
    }
  }
  return table;
}

/** The tenant owning a (normalised) domain: an exact claim first, then the longest wildcard suffix. */
export function findOwner(table: RoutingTable, domain: string): TenantIndex | undefined {
  if (domain === '') return undefined;
  return domainHolder(table.exactDomains, table.wildcardDomains, domain);
}

/**
 * The candidate lists that can match a recipient, most specific first: tagged address, address,
 * domain, then subdomain suffixes from the longest to the shortest.
 */
export function candidateLists(index: TenantIndex, rcpt: Address): Candidate[][] {
  const lists: Candidate[][] = [];
  const add = (l: Candidate[] | undefined) => {
    if (l) lists.push(l);
  };
  if (rcpt.tag !== '') add(index.byTagged.get(`${rcpt.local}+${rcpt.tag}@${rcpt.domain}`));
  add(index.byAddress.get(`${rcpt.local}@${rcpt.domain}`));
  add(index.byDomain.get(rcpt.domain));
  for (let dot = rcpt.domain.indexOf('.'); dot >= 0; dot = rcpt.domain.indexOf('.', dot + 1)) {
    add(index.bySuffix.get(rcpt.domain.slice(dot + 1)));
  }
  return lists;
}

/** A hand-written config with a bad blocklist entry is refused at load, not at the first RCPT. */
function checkTenantDnsbl(tenant: string, d: NonNullable<Tenant['dnsbl']>): void {
  const where = `relay config: tenant ${tenant}: dnsbl`;
  for (const z of d.zones) {
    const err = dnsblZoneError(z.zone);
    if (err) throw new Error(`${where}: ${err}`);
    for (const m of z.match ?? []) {
      const e = matchPatternError(m);
      if (e) throw new Error(`${where}: ${z.zone}: ${e}`);
    }
  }
  for (const text of d.allow) {
    const c = parseCidr(text);
    if (!c.ok) throw new Error(`${where}: allow: ${c.error}`);
  }
}
