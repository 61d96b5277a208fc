// The trace header a relay prepends (RFC 5321 §4.4), in Postfix's layout so that downstream filters
// (SPF, DMARC, abuse desks) read it as they read any MTA's:
//
//   Received: from client.example (unknown [192.0.2.7])
//   	(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))
//   	by mx.example.com (Mail-Plus) with ESMTPS id 6f1c0e2a9b3d4c5e
//   	for <alice@example.com>; Thu, 03 Dec 2026 07:55:18 +0000
//
// "unknown": the relay does no reverse DNS lookups. The `for` clause only for a single recipient, as
// Postfix does (several would disclose Bcc recipients to each other). Pure.

import net from 'node:net';

export interface ReceivedFields {
  /** The name the client gave in HELO/EHLO; absent when it gave none. */
  helo?: string;
  clientIp: string;
  /** Our host name. */
  by: string;
  /** SMTP, ESMTP, ESMTPS, ESMTPSA (RFC 3848); UTF8SMTP, UTF8SMTPS… for SMTPUTF8 (RFC 6531). */
  protocol: string;
  tls?: { version?: string; cipher?: string };
  id: string;
  /** Only when the transaction has exactly one recipient. */
  recipient?: string;
  date: Date;
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const two = (n: number) => String(n).padStart(2, '0');

/** RFC 5322 date-time in UTC, fixed width (two-digit day) so the header length does not depend on it. */
export function rfc5322Date(d: Date): string {
  return (
    `${DAYS[d.getUTCDay()]}, ${two(d.getUTCDate())} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ` +
    `${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())} +0000`
  );
}

/**
 * Client-supplied text in a header: printable ASCII, no comment or angle-bracket delimiters, bounded.
 * `utf8` keeps non-ASCII (a recipient can only be UTF-8 in an SMTPUTF8 transaction).
 */
function clean(s: string, max: number, utf8 = false): string {
  const bad = utf8 ? /[^\x21-\x7e\u00a0-\uffff]|[()<>;\\]/g : /[^\x21-\x7e]|[()<>;\\]/g;
  return s.replace(bad, '?').slice(0, max);
}

/** `[192.0.2.7]`, `[IPv6:2001:db8::1]`; an IPv4-mapped IPv6 address is shown as IPv4. */
export function addressLiteral(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return `[${mapped[1]}]`;
  return net.isIPv6(ip) ? `[IPv6:${ip}]` : `[${clean(ip, 64)}]`;
}

/** Secret bits of the cipher, from its name (Node does not report them). */
function cipherBits(cipher: string): number | undefined {
  if (/AES_?256|CHACHA20/i.test(cipher)) return 256;
  if (/AES_?128/i.test(cipher)) return 128;
  return undefined;
}

export function receivedHeader(f: ReceivedFields): Buffer {
  const from = f.helo ? clean(f.helo, 255) : addressLiteral(f.clientIp);
  const lines = [`Received: from ${from} (unknown ${addressLiteral(f.clientIp)})`];
  if (f.tls?.cipher) {
    const bits = cipherBits(f.tls.cipher);
    const version = f.tls.version ? clean(f.tls.version, 32) : 'TLS';
    lines.push(
      `\t(using ${version} with cipher ${clean(f.tls.cipher, 64)}${bits ? ` (${bits}/${bits} bits)` : ''})`,
    );
  }
  lines.push(`\tby ${clean(f.by, 255)} (Mail-Plus) with ${f.protocol} id ${f.id}`);
  const date = rfc5322Date(f.date);
  lines.push(f.recipient !== undefined ? `\tfor <${clean(f.recipient, 320, true)}>; ${date}` : `\t; ${date}`);
  return Buffer.from(`${lines.join('\r\n')}\r\n`, 'utf8');
}

/** Postfix's header_size_limit: past this many bytes the rest is body, not counted. */
export const HEADER_SCAN_LIMIT = 102_400;

/** What the start of a header-section line has shown so far (ordered: the first two are undecided). */
const Line = { Name: 0, SpaceAfterName: 1, Field: 2, Continuation: 3, NotHeader: 4 } as const;
type LineKind = (typeof Line)[keyof typeof Line];

/**
 * Counts `Received:` header fields of a message as it streams by (still dot-stuffed), up to the end of
 * the header section (or HEADER_SCAN_LIMIT bytes); RFC 5321 §6.3: a count over a generous limit means
 * a loop. The header section ends, as Postfix reads it, at an empty line or at the first line that is
 * neither a field (`name:`, the obsolete `name :` too) nor a continuation: trace lines quoted in a body
 * that follows no empty line are not hops.
 */
export class HopCounter {
  count = 0;
  #done = false;
  #scanned = 0;
  #lineLen = 0;
  /** Bytes of the current line looked at (only its start is). */
  #seen = 0;
  #kind: LineKind = Line.Name;
  /** The field name in lower case, while it could still be "received". */
  #name = '';
  /** The line so far is a lone CR. */
  #cr = false;

  /** Feeds content bytes; returns the Received count so far. */
  push(chunk: Buffer): number {
    if (this.#done) return this.count;
    let pos = 0;
    while (pos < chunk.length) {
      const nl = chunk.indexOf(0x0a, pos);
      const end = nl < 0 ? chunk.length : nl;
      // only the start of a line needs a look, until it is known what the line is
      for (let i = pos; i < end && this.#kind <= Line.SpaceAfterName; i++) this.#see(chunk[i]);
      this.#lineLen += end - pos;
      if (nl < 0) break;
      // an empty line (CRLF, or a bare LF) or a line that is no header field ends the section
      if (
        this.#lineLen === 0 ||
        this.#cr ||
        (this.#kind !== Line.Field && this.#kind !== Line.Continuation)
      ) {
        this.#done = true;
        return this.count;
      }
      if (this.#kind === Line.Field && this.#name === 'received') this.count++;
      this.#lineLen = 0;
      this.#seen = 0;
      this.#kind = Line.Name;
      this.#name = '';
      pos = nl + 1;
    }
    this.#scanned += chunk.length;
    if (this.#scanned > HEADER_SCAN_LIMIT) this.#done = true;
    return this.count;
  }

  #see(b: number): void {
    const at = this.#seen++;
    const space = b === 0x20 || b === 0x09;
    if (at === 0 && space) this.#kind = Line.Continuation;
    else if (at === 0 && b === 0x0d) this.#cr = true;
    else if (this.#cr) {
      this.#cr = false;
      this.#kind = Line.NotHeader;
    } else if (b === 0x3a) this.#kind = at > 0 ? Line.Field : Line.NotHeader;
    else if (space) this.#kind = at > 0 ? Line.SpaceAfterName : Line.NotHeader;
    else if (this.#kind === Line.SpaceAfterName || b < 0x21 || b > 0x7e) this.#kind = Line.NotHeader;
    else if (this.#name.length <= 8) this.#name += String.fromCharCode(b).toLowerCase();
  }
}
