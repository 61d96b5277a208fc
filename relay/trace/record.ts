// From a finished transaction to its trace entries (one per tenant concerned, each with only that
// tenant's recipients) and to the addresses of the relay's log line, honouring each tenant's
// spec.privacy.pseudonymize. Pure.
import type { Tenant } from '../../contract/config/types.gen.ts';
import type { TraceEntry, TraceRecipient, TraceResult } from './entry.ts';
import { pseudonymWithKey, redactAddress, tenantPseudonymKey } from './pseudonym.ts';

export interface FinishedRecipient extends TraceRecipient {
  tenant: string;
  route: string;
}

export interface FinishedTransaction {
  timeMs: number;
  txid: string;
  clientIp: string;
  tls: boolean;
  sender: string;
  recipients: FinishedRecipient[];
  size: number;
  upstream: string;
  result: TraceResult;
  code: number;
  durationMs: number;
}

export interface AddressPolicy {
  /** The platform master key (--pseudonymize-key-file); undefined when the relay has none. */
  masterKey?: string;
  /** Relay-wide log pseudonymiser (the pre-existing --pseudonymize-key-file behaviour for logs). */
  relayWide: (address: string) => string;
  /** Tenants of the transaction's config snapshot, by name. */
  tenants: Map<string, Tenant>;
}

/** Caches derived tenant keys (one HMAC per tenant, not per address). */
const keyCache = new Map<string, Buffer>();
function tenantKey(masterKey: string, tenant: string): Buffer {
  const k = `${masterKey.length}:${masterKey}\0${tenant}`;
  let key = keyCache.get(k);
  if (!key) {
    if (keyCache.size > 10_000) keyCache.clear();
    key = tenantPseudonymKey(masterKey, tenant);
    keyCache.set(k, key);
  }
  return key;
}

export function pseudonymizes(policy: AddressPolicy, tenant: string): boolean {
  return policy.tenants.get(tenant)?.privacy?.pseudonymize === true;
}

/** The address as stored/logged for a tenant that asked for pseudonyms. */
export function tenantForm(policy: AddressPolicy, tenant: string, address: string): string {
  return policy.masterKey
    ? pseudonymWithKey(tenantKey(policy.masterKey, tenant), address)
    : redactAddress(address);
}

const normSender = (s: string) => (s === '' ? '<>' : s);

/** One entry per tenant concerned ('' for recipients no tenant holds), in order of first appearance. */
export function traceEntries(tx: FinishedTransaction, policy: AddressPolicy): TraceEntry[] {
  const byTenant = new Map<string, FinishedRecipient[]>();
  for (const r of tx.recipients) {
    const list = byTenant.get(r.tenant);
    if (list) list.push(r);
    else byTenant.set(r.tenant, [r]);
  }
  if (byTenant.size === 0) byTenant.set('', []);
  const time = new Date(tx.timeMs).toISOString();
  const out: TraceEntry[] = [];
  for (const [tenant, recipients] of byTenant) {
    const p = pseudonymizes(policy, tenant);
    const form = (a: string) => (p ? tenantForm(policy, tenant, a) : a);
    const accepted = recipients.find((r) => r.result === 'accepted');
    out.push({
      time,
      txid: tx.txid,
      tenant,
      route: (accepted ?? recipients[0])?.route ?? '',
      clientIp: tx.clientIp,
      tls: tx.tls,
      sender: normSender(form(tx.sender)),
      recipients: recipients.map((r) => ({
        address: r.omitted !== undefined ? '' : form(r.address),
        result: r.result,
        code: r.code,
        ...(r.reason !== undefined && r.reason !== '' ? { reason: r.reason } : {}),
        ...(r.omitted !== undefined ? { omitted: r.omitted } : {}),
        ...(r.rewrittenTo !== undefined ? { rewrittenTo: form(r.rewrittenTo) } : {}),
      })),
      size: tx.size,
      upstream: tx.upstream,
      result: tx.result,
      code: tx.code,
      durationMs: tx.durationMs,
    });
  }
  return out;
}

/**
 * Addresses for the log line: a recipient of a pseudonymising tenant gets that tenant's pseudonym;
 * the sender gets the pseudonym of the first pseudonymising tenant of the transaction; everything
 * else goes through the relay-wide pseudonymiser (identity without a key).
 */
export function logAddresses(
  sender: string,
  recipients: Array<{ address: string; tenant: string }>,
  policy: AddressPolicy,
): { sender: string; recipients: string[] } {
  const first = recipients.find((r) => pseudonymizes(policy, r.tenant));
  return {
    sender: first ? tenantForm(policy, first.tenant, sender) : policy.relayWide(sender),
    recipients: recipients.map((r) =>
      pseudonymizes(policy, r.tenant) ? tenantForm(policy, r.tenant, r.address) : policy.relayWide(r.address),
    ),
  };
}

// An address inside free text (an upstream's reply: "<bob@example.com>: Recipient address rejected").
// Domain labels may be U-labels: an SMTPUTF8 upstream echoes `kunde@bücher.example` as received.
const ADDRESS_IN_TEXT =
  /[^\s<>()[\]{},;:"'`]+@[\p{L}\p{N}](?:[\p{L}\p{M}\p{N}-]*[\p{L}\p{M}\p{N}])?(?:\.[\p{L}\p{M}\p{N}-]+)+/gu;

/**
 * Free text for a log line (an upstream's reply or an error quoting it), every address in it shown in
 * the same form as the transaction's addresses: the first pseudonymising tenant's form, else the
 * relay-wide one.
 */
export function logText(text: string, tenants: readonly string[], policy: AddressPolicy): string {
  const tenant = tenants.find((t) => pseudonymizes(policy, t));
  const form =
    tenant !== undefined ? (a: string) => tenantForm(policy, tenant, a) : (a: string) => policy.relayWide(a);
  return replaceAddressesIn(text, form);
}

function replaceAddressesIn(text: string, form: (address: string) => string): string {
  return text.replace(ADDRESS_IN_TEXT, (a) => form(a));
}
