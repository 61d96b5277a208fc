// The per-recipient decision: who owns the domain, may this client send to it, is TLS required,
// which route wins, and what that route does. Reply texts follow docs/architecture.md exactly.
import type { Route, Tenant, Upstream } from '../../contract/config/types.gen.ts';
import { cidrContains, parseIp } from '../../contract/grammar/cidr.ts';
import { type Address, matchesPattern, parseAddress } from '../../contract/grammar/match.ts';
import { expandRewrite } from '../../contract/grammar/rewrite.ts';
import { type Candidate, candidateLists, findOwner, type RouteEntry, type RoutingTable } from './table.ts';

export type RejectReason =
  | 'relay_denied'
  | 'no_route'
  | 'route_reject'
  | 'client_not_allowed'
  | 'tls_required'
  | 'rewrite_invalid';

export type RecipientDecision =
  | {
      action: 'relay';
      tenant: Tenant;
      route: Route;
      upstreams: Upstream[];
      /** Stable id of the upstream list, for the one-upstream-set-per-transaction rule. */
      upstreamKey: string;
      /** The recipient pattern of the route that matched. */
      pattern: string;
      /** The address sent upstream in RCPT TO when the route rewrites recipients. */
      rewrittenTo?: string;
    }
  | {
      action: 'reject';
      code: number;
      enhancedCode: string;
      message: string;
      reason: RejectReason;
      tenant?: Tenant;
      route?: Route;
      pattern?: string;
    };

export interface RecipientQuery {
  /** The RCPT TO address, with or without angle brackets. */
  recipient: string;
  /** The MAIL FROM address; '' or '<>' is the null sender. */
  sender: string;
  /** Client address; when absent the clientCIDRs check is skipped (explain without --client). */
  clientIp?: string;
  /** Whether the session is encrypted; when absent the requireTLS check is skipped. */
  tls?: boolean;
}

export const REPLIES = {
  relayDenied: (domain: string) => ({
    code: 550,
    enhancedCode: '5.7.1',
    message: `Relay access denied: ${domain} is not served here`,
  }),
  noRoute: (recipient: string) => ({
    code: 550,
    enhancedCode: '5.1.1',
    message: `No route for ${recipient}`,
  }),
  clientNotAllowed: (domain: string) => ({
    code: 550,
    enhancedCode: '5.7.1',
    message: `Client address not permitted to send to ${domain}`,
  }),
  tlsRequired: () => ({ code: 530, enhancedCode: '5.7.0', message: 'Must issue a STARTTLS command first' }),
  /** A recipient outside the transaction's scope (transaction-scope.ts): it comes again on its own. */
  split: () => ({
    code: 452,
    enhancedCode: '4.5.3',
    message: 'Recipient routes elsewhere, send it in a separate transaction',
  }),
  // the rewritten address is the tenant's internal business: the reply names only the original
  rewriteInvalid: (recipient: string) => ({
    code: 553,
    enhancedCode: '5.1.3',
    message: `Recipient address ${recipient} cannot be rewritten to a valid address`,
  }),
} as const;

function senderMatches(entry: RouteEntry, sender: Address): boolean {
  if (entry.senders.length === 0) return true;
  for (const p of entry.senders) if (matchesPattern(p, sender)) return true;
  return false;
}

/**
 * Among matching routes the lowest priority wins, then the most specific matching pattern, then
 * the earliest in tenant.routes (oldest, then name). Each candidate list is sorted by
 * (priority, index), so its first sender-matching entry is that list's best.
 */
function bestCandidate(lists: Candidate[][], sender: Address): Candidate | undefined {
  let best: Candidate | undefined;
  for (const list of lists) {
    for (const c of list) {
      if (!senderMatches(c.entry, sender)) continue;
      if (
        best === undefined ||
        c.entry.route.priority < best.entry.route.priority ||
        (c.entry.route.priority === best.entry.route.priority &&
          (c.pattern.rank < best.pattern.rank ||
            (c.pattern.rank === best.pattern.rank && c.entry.index < best.entry.index)))
      ) {
        best = c;
      }
      break;
    }
  }
  return best;
}

export function decideRecipient(table: RoutingTable, query: RecipientQuery): RecipientDecision {
  const rcpt = parseAddress(query.recipient);
  const shownDomain = rcpt.domain !== '' ? rcpt.domain : rcpt.original;
  const owner = rcpt.isNull ? undefined : findOwner(table, rcpt.domain);
  if (!owner) return { action: 'reject', reason: 'relay_denied', ...REPLIES.relayDenied(shownDomain) };
  const tenant = owner.tenant;
  if (query.clientIp !== undefined && owner.cidrs.length > 0) {
    const ip = parseIp(query.clientIp);
    if (!ip || !owner.cidrs.some((c) => cidrContains(c, ip))) {
      return {
        action: 'reject',
        reason: 'client_not_allowed',
        tenant,
        ...REPLIES.clientNotAllowed(rcpt.domain),
      };
    }
  }
  if (tenant.requireTLS && query.tls === false) {
    return { action: 'reject', reason: 'tls_required', tenant, ...REPLIES.tlsRequired() };
  }
  const best = bestCandidate(candidateLists(owner, rcpt), parseAddress(query.sender));
  if (!best) return { action: 'reject', reason: 'no_route', tenant, ...REPLIES.noRoute(rcpt.original) };
  const route = best.entry.route;
  if ('reject' in route.action) {
    const r = route.action.reject;
    return {
      action: 'reject',
      reason: 'route_reject',
      code: r.code,
      enhancedCode: r.enhancedCode,
      message: r.message,
      tenant,
      route,
      pattern: best.pattern.text,
    };
  }
  const relay: RecipientDecision = {
    action: 'relay',
    tenant,
    route,
    upstreams: route.action.forward.upstreams,
    upstreamKey: best.entry.upstreamKey,
    pattern: best.pattern.text,
  };
  if (best.entry.rewrite) {
    const r = expandRewrite(best.entry.rewrite, rcpt.original);
    if (!r.ok) {
      return {
        action: 'reject',
        reason: 'rewrite_invalid',
        tenant,
        route,
        pattern: best.pattern.text,
        ...REPLIES.rewriteInvalid(rcpt.original),
      };
    }
    relay.rewrittenTo = r.value;
  }
  return relay;
}

export interface EnvelopeQuery {
  to: string[];
  from: string;
  clientIp?: string;
  tls?: boolean;
}

export interface RecipientExplanation {
  recipient: string;
  action: 'relay' | 'reject';
  tenant?: string;
  route?: string;
  pattern?: string;
  upstreams?: Upstream[];
  upstreamKey?: string;
  /** The address sent upstream in RCPT TO, when the route rewrites recipients. */
  rewrittenTo?: string;
  /** The route's template (forward.rewrite.recipient) that produced rewrittenTo, or failed to. */
  rewriteTemplate?: string;
  /** The exact SMTP reply for rejected recipients: 'code enhanced text'. */
  reply?: string;
  reason?: RejectReason;
}

export interface EnvelopeExplanation {
  from: string;
  configHash: string;
  recipients: RecipientExplanation[];
}

export function formatReply(d: { code: number; enhancedCode: string; message: string }): string {
  return `${d.code} ${d.enhancedCode} ${d.message}`;
}

/** Per recipient: tenant, route, upstreams in order, or the exact SMTP reply (for `mailplus route`). */
export function explainEnvelope(table: RoutingTable, query: EnvelopeQuery): EnvelopeExplanation {
  const recipients = query.to.map((recipient): RecipientExplanation => {
    const d = decideRecipient(table, {
      recipient,
      sender: query.from,
      clientIp: query.clientIp,
      tls: query.tls,
    });
    const template =
      d.route && 'forward' in d.route.action ? d.route.action.forward.rewrite?.recipient : undefined;
    if (d.action === 'relay') {
      return {
        recipient,
        action: 'relay',
        tenant: d.tenant.name,
        route: d.route.name,
        pattern: d.pattern,
        ...(d.rewrittenTo !== undefined ? { rewrittenTo: d.rewrittenTo, rewriteTemplate: template } : {}),
        upstreams: d.upstreams,
        upstreamKey: d.upstreamKey,
      };
    }
    const out: RecipientExplanation = {
      recipient,
      action: 'reject',
      reply: formatReply(d),
      reason: d.reason,
    };
    if (d.tenant) out.tenant = d.tenant.name;
    if (d.route) out.route = d.route.name;
    if (d.pattern) out.pattern = d.pattern;
    if (d.reason === 'rewrite_invalid') out.rewriteTemplate = template;
    return out;
  });
  return { from: query.from, configHash: table.hash, recipients };
}

function formatUpstream(u: Upstream): string {
  const tls =
    u.tls === 'none' || u.tls === 'opportunistic' ? u.tls : `${u.tls}${u.verify ? '' : ', no verify'}`;
  return `${u.host}:${u.port} (tls ${tls}${u.serverName ? `, name ${u.serverName}` : ''})`;
}

/** Plain-text rendering of explainEnvelope, one block per recipient. */
export function formatExplanation(e: EnvelopeExplanation): string {
  const lines: string[] = [];
  for (const r of e.recipients) {
    if (r.action === 'relay') {
      lines.push(`${r.recipient}: relay via route ${r.route} (tenant ${r.tenant}, pattern ${r.pattern})`);
      if (r.rewrittenTo !== undefined) {
        lines.push(`  rewritten to ${r.rewrittenTo} (template ${r.rewriteTemplate})`);
      }
      r.upstreams?.forEach((u, i) => {
        lines.push(`  ${i + 1}. ${formatUpstream(u)}`);
      });
    } else {
      const where = r.route ? ` (route ${r.route})` : r.tenant ? ` (tenant ${r.tenant})` : '';
      lines.push(`${r.recipient}: reject ${r.reply} [${r.reason}]${where}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
