// The envelope address exactly as the client wrote it. smtp-server turns an A-label domain into
// Unicode (punycode.toUnicode) before the application sees it, so `kunde@xn--bcher-kva.example`
// would be routed, forwarded and recorded as `kunde@bücher.example`: forwarded like that without
// SMTPUTF8 it is an 8-bit address the next hop never agreed to (RFC 6531 §3.2). Pure.

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

/** Postfix's reply to an unicode address in a transaction that did not declare SMTPUTF8. */
export const UNDECLARED_UTF8_REPLY = '5.6.7 Must declare SMTPUTF8 to send unicode address';
