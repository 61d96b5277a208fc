import { pseudonymWithKey } from '../trace/pseudonym.ts';

/**
 * Address pseudonymisation for logs. With a key, the local part is replaced by
 * `h:` + the first 16 hex digits of HMAC-SHA256(key, lower-cased full address), and the domain is
 * kept: operators still see which tenant/domain a transaction concerned (needed to debug routing),
 * while mailboxes are not readable and the same address maps to the same token (correlation across
 * lines), and without the key tokens cannot be reversed by hashing guessed addresses.
 * The null sender stays '<>'. Without a key addresses are logged as given.
 */
export function createPseudonymizer(key?: string | Buffer): (address: string) => string {
  if (!key || key.length === 0) return (a) => a;
  return (address) => pseudonymWithKey(key, address);
}
