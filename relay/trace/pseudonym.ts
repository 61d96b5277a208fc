// Per-tenant pseudonyms for trace entries and log lines.
//
// The platform holds ONE master key (a Secret mounted into relays, --pseudonymize-key-file). Each
// tenant's key is derived from it: tenantKey = HMAC-SHA256(masterKey, "mailplus/pseudonym/v1/" +
// tenant). A pseudonym is `h:` + the first 16 hex digits of HMAC-SHA256(tenantKey, lower-cased
// address), then `@domain` (kept, so routing can still be debugged). Different tenants therefore
// get different pseudonyms for the same address: pseudonyms do not link across tenants. Whoever
// holds the master key (the platform operator, `mailplus trace/erase --pseudonymize-key-file`) can
// compute a tenant's pseudonym for a given address and so serve access and erasure requests;
// without it, pseudonyms cannot be reversed by hashing guessed addresses. Pure.
import { createHmac } from 'node:crypto';
import { domainToASCII, domainToUnicode } from 'node:url';

const DERIVATION_LABEL = 'mailplus/pseudonym/v1/';

export function tenantPseudonymKey(masterKey: string | Buffer, tenant: string): Buffer {
  return createHmac('sha256', masterKey).update(`${DERIVATION_LABEL}${tenant}`).digest();
}

/** 'h:<16 hex>@domain'; '<>' stays '<>'; '' is the null sender. */
export function pseudonymWithKey(key: string | Buffer, address: string): string {
  if (address === '' || address === '<>') return '<>';
  const lower = address.toLowerCase();
  const token = `h:${createHmac('sha256', key).update(lower).digest('hex').slice(0, 16)}`;
  const at = lower.lastIndexOf('@');
  return at >= 0 ? `${token}@${lower.slice(at + 1)}` : token;
}

export function tenantPseudonym(masterKey: string | Buffer, tenant: string, address: string): string {
  return pseudonymWithKey(tenantPseudonymKey(masterKey, tenant), address);
}

/**
 * What a pseudonymising tenant's addresses become when the relay has no master key: the local part
 * is dropped (fail closed: better no mailbox than a readable one).
 */
export function redactAddress(address: string): string {
  if (address === '' || address === '<>') return '<>';
  const at = address.lastIndexOf('@');
  return at >= 0 ? `redacted@${address.slice(at + 1).toLowerCase()}` : 'redacted';
}

/** True when the address looks like one of our pseudonyms or redactions (not a real mailbox). */
export function isPseudonym(address: string): boolean {
  return /^h:[0-9a-f]{16}(@|$)/.test(address) || /^redacted(@|$)/.test(address);
}

/**
 * The spellings under which one mailbox can have been received: as given, and with its domain in
 * A-labels (xn--bcher-kva.example) and in U-labels (bücher.example). The relay records addresses
 * as the client sent them, so an internationalised domain may be stored in either form. Lower case.
 */
export function domainSpellings(address: string): string[] {
  const lower = address.trim().toLowerCase();
  const at = lower.lastIndexOf('@');
  if (at < 0) return [lower];
  const local = lower.slice(0, at + 1);
  const domain = lower.slice(at + 1);
  const out = new Set([lower]);
  const ascii = domainToASCII(domain);
  if (ascii !== '') {
    out.add(local + ascii);
    const unicode = domainToUnicode(ascii);
    if (unicode !== '') out.add(local + unicode);
  }
  return [...out];
}

/**
 * Every stored form of `address` per tenant: the address itself in each domain spelling and, with
 * the master key, each tenant's pseudonym of each. Used by `mailplus trace --address` and
 * `mailplus erase`.
 */
export function addressForms(
  address: string,
  tenants: string[],
  masterKey: string | Buffer | undefined,
): Array<{ tenant: string | null; address: string }> {
  const spellings = domainSpellings(address);
  const out: Array<{ tenant: string | null; address: string }> = spellings.map((a) => ({
    tenant: null,
    address: a,
  }));
  if (masterKey && masterKey.length > 0) {
    for (const t of [...new Set(tenants)].sort())
      for (const a of spellings) out.push({ tenant: t, address: tenantPseudonym(masterKey, t, a) });
  }
  return out;
}
