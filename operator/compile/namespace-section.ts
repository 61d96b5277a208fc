// One namespace's share of the compile output: its MailRoutes (valid, of a tenant, inside the
// tenant's domains), their order and shadowed patterns, and its tenant section. Reads nothing of
// other namespaces but the domain owners, so a CompileCache can reuse it while its inputs stay.
import { type Pattern, parsePattern } from '../../contract/grammar/match.ts';
import type { MailRoute } from '../api/types.gen.ts';
import { invalidSpecStatus, REASONS, routeNotAcceptedStatus } from '../conditions/resource-status.ts';
import { generationInForce, previousRoute } from './carry-over.ts';
import {
  byAge,
  bySpecificity,
  errorText,
  type FieldError,
  listText,
  type Meta,
  type NamespaceContext,
  type NamespaceSection,
  priorityOf,
  type RouteEntry,
} from './compile-state.ts';
import { patternOwner } from './domain-ownership.ts';
import { compileRoutes } from './route-actions.ts';
import { shadowedPatterns } from './shadowing.ts';
import { tenantSection } from './tenant-section.ts';

export function compileNamespace(
  c: NamespaceContext,
  namespace: string,
  raws: Array<[Meta, MailRoute]>,
): NamespaceSection {
  const section: NamespaceSection = { statuses: new Map(), sources: new Map(), reusable: true };
  const entries: RouteEntry[] = [];
  for (const [meta, raw] of raws) {
    const entry = admitRoute(c, section, meta, raw);
    if (entry) entries.push(entry);
  }
  const p = c.tenantByNs.get(namespace);
  if (!p) return section;
  entries.sort((a, b) => priorityOf(a) - priorityOf(b) || byAge(a.meta, b.meta));
  const routes = compileRoutes(c, section, entries, shadowedPatterns(entries));
  section.tenant = tenantSection(p, routes, c.captureByNs.get(namespace));
  return section;
}

/**
 * The route as it takes part in its tenant's section, or undefined with its status set: invalid
 * without a generation in force, no tenant, or recipient patterns outside the tenant's domains.
 */
function admitRoute(
  c: NamespaceContext,
  section: NamespaceSection,
  meta: Meta,
  raw: MailRoute,
): RouteEntry | undefined {
  const { statuses } = section;
  const v = c.validateRoute(raw, meta);
  const found = c.tenantByNs.get(meta.namespace);
  // a policy that only reserves its domains serves no routes
  const tenant = found && (found.spec || found.invalid?.inForce) ? found : undefined;
  let carried: RouteEntry['carried'];
  if (!v.value) {
    section.reusable = false;
    carried = carriedRoute(c, meta, v.errors, tenant !== undefined);
    if (!carried) {
      statuses.set(meta.key, invalidSpecStatus(meta.generation, errorText(v.errors)));
      return undefined;
    }
  }
  const spec = v.value?.spec;
  const match = spec?.match ?? carried?.route;
  if (!tenant || !match) {
    const why =
      c.rejectedPolicyByNs.get(meta.namespace) ??
      `namespace ${meta.namespace} has no TenantPolicy; create one listing the domains of this route`;
    statuses.set(meta.key, routeNotAcceptedStatus(meta.generation, REASONS.noTenantPolicy, why));
    return undefined;
  }
  const { recipients, notOwned } = ownedRecipients(c, meta.namespace, match.recipients);
  if (notOwned.length > 0) {
    statuses.set(
      meta.key,
      carried
        ? invalidSpecStatus(
            meta.generation,
            `${errorText(carried.errors)}; generation ${carried.generation}, the last valid one, is not served either: its recipient patterns are outside the domains of ${tenant.meta.label}: ${listText(notOwned)}`,
          )
        : routeNotAcceptedStatus(
            meta.generation,
            REASONS.domainNotOwned,
            `recipient patterns outside the domains of ${tenant.meta.label}: ${listText(notOwned)}; add the domains to the TenantPolicy or remove the patterns`,
          ),
    );
    return undefined;
  }
  return { meta, spec, carried, recipients, senders: senderPatterns(match.senders) };
}

/** The last valid version of an invalid route that stays in force, if its tenant serves routes. */
function carriedRoute(
  c: NamespaceContext,
  meta: Meta,
  errors: FieldError[],
  hasTenant: boolean,
): RouteEntry['carried'] {
  const { namespace, name } = meta;
  const g = generationInForce(c.previous, 'MailRoute', namespace, name, meta.generation);
  const route = g === undefined || !hasTenant ? undefined : previousRoute(c.previous, namespace, name);
  return g === undefined || !route ? undefined : { errors, generation: g, route };
}

/** The recipient patterns in the namespace's own domains (deduplicated), and the others as text. */
function ownedRecipients(
  c: NamespaceContext,
  namespace: string,
  texts: string[],
): { recipients: RouteEntry['recipients']; notOwned: string[] } {
  const recipients: RouteEntry['recipients'] = [];
  const notOwned: string[] = [];
  texts.forEach((text, index) => {
    const r = parsePattern(text);
    if (!r.ok) return;
    const owner = patternOwner(c, r.value);
    if (owner !== namespace) {
      notOwned.push(owner === undefined ? r.value.text : `${r.value.text} (domain held by tenant ${owner})`);
    } else if (!recipients.some((x) => x.pattern.text === r.value.text)) {
      recipients.push({ pattern: r.value, index });
    }
  });
  return { recipients, notOwned };
}

function senderPatterns(texts: string[] | undefined): Pattern[] {
  const senders: Pattern[] = [];
  for (const s of texts ?? []) {
    const r = parsePattern(s, { allowNull: true });
    if (r.ok && !senders.some((x) => x.text === r.value.text)) senders.push(r.value);
  }
  return senders.sort(bySpecificity);
}
