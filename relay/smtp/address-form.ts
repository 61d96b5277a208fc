// The envelope address exactly as the client wrote it. smtp-server turns an A-label domain into
// Unicode (punycode.toUnicode) before the application sees it, so `kunde@xn--bcher-kva.example`
// would be routed, forwarded and recorded as `kunde@bücher.example`: forwarded like that without
// SMTPUTF8 it is an 8-bit address the next hop never agreed to (RFC 6531 §3.2). Pure.

import { domainToASCII, domainToUnicode } from 'node:url';

const SOURCE_ROUTE = /^@[^\s,:@]+(?:,@[^\s,:@]+)*:/;

/**
 * The path of a `MAIL FROM:<…>` / `RCPT TO:<…>` line as received, without angle brackets and
 * without a source route, parsed the way smtp-server parses it; undefined when it has no `<…>`.
 */
export function receivedPath(commandLine: string): string | undefined {
  const colon = commandLine.indexOf(':');
  if (colon < 0) return undefined;
  const [path] = commandLine
    .slice(colon + 1)
    .trim()
    .split(/\s+/);
  if (!/^<[^<>]*>$/.test(path ?? '')) return undefined;
  return path.slice(1, -1).replace(SOURCE_ROUTE, '');
}

/** True when the address needs the SMTPUTF8 extension: any octet outside ASCII. */
export function needsSmtpUtf8(address: string): boolean {
  for (let i = 0; i < address.length; i++) if (address.charCodeAt(i) > 0x7f) return true;
  return false;
}

/**
 * False when a non-ASCII domain is not written as IDNA U-labels (RFC 6531 §3.3): decomposed letters
 * (NFD), full-width forms, ideographic full stops, ignored characters. UTS #46 maps such a string onto
 * a real domain, so it would be routed to that domain's tenant while it is forwarded and recorded as
 * written, a spelling that trace and erasure of the domain never look for.
 */
export function isIdnaDomain(address: string): boolean {
  const domain = address.slice(address.lastIndexOf('@') + 1).toLowerCase();
  if (!needsSmtpUtf8(domain)) return true;
  const ascii = domainToASCII(domain);
  return ascii !== '' && domainToUnicode(ascii) === domain;
}
