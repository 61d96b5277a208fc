/**
 * The header work of sender authentication, on the raw (dot-stuffed) message bytes: a header line
 * never starts with a dot (field names are letters, continuations whitespace), so stuffing does
 * not change what is found or removed here. Pure.
 */

const CRLF_CRLF = Buffer.from('\r\n\r\n');

/**
 * Where the body starts (just past the empty line that ends the header section), or -1 when the
 * header section has not ended within `buf`. A message that starts with its empty line has no
 * header fields: 2.
 */
export function headerSectionEnd(buf: Buffer): number {
  if (buf.length >= 2 && buf[0] === 0x0d && buf[1] === 0x0a) return 2;
  const i = buf.indexOf(CRLF_CRLF);
  return i < 0 ? -1 : i + 4;
}

/** The authserv-id an Authentication-Results field value claims (RFC 8601 §2.2), lower-cased. */
export function claimedAuthservId(value: string): string {
  // drop comments (RFC 5322 CFWS), then the id is everything up to the first ';' or whitespace
  const v = value.replace(/\([^()]*\)/g, ' ').trim();
  const m = /^"((?:[^"\\]|\\.)*)"|^([^\s;]+)/.exec(v);
  return (m?.[1] ?? m?.[2] ?? '').toLowerCase();
}

/**
 * Removes the Authentication-Results fields that claim `authservId` from a header section (RFC 8601
 * §5: a border MTA must delete those, or a sender could forge our verdicts). Returns the section
 * unchanged (the same Buffer) when there is nothing to remove, and the number removed.
 */
export function stripOwnAuthResults(
  section: Buffer,
  authservId: string,
): { section: Buffer; removed: number } {
  const id = authservId.toLowerCase();
  const text = section.toString('latin1');
  if (!/^authentication-results[ \t]*:/im.test(text)) return { section, removed: 0 };
  // fields: a line and its continuation lines (starting with space or tab)
  const fields = text.split(/\r\n(?![ \t])/);
  let removed = 0;
  const kept = fields.filter((f) => {
    const m = /^authentication-results[ \t]*:(.*)$/is.exec(f);
    if (!m || claimedAuthservId(m[1].replace(/\r\n/g, '')) !== id) return true;
    removed++;
    return false;
  });
  if (removed === 0) return { section, removed: 0 };
  return { section: Buffer.from(kept.join('\r\n'), 'latin1'), removed };
}

/**
 * `Authentication-Results: ID;\r\n\tRESULT;\r\n\tRESULT\r\n` (RFC 8601 §2.2); `none` without
 * results. A comment goes after the authserv-id (CFWS is allowed there).
 */
export function authResultsHeader(authservId: string, results: string[], comment?: string): Buffer {
  const body = results.length ? results.map((r) => `\t${r}`).join(';\r\n') : '\tnone';
  const note = comment ? ` (${comment.replace(/[()\\]/g, '')})` : '';
  return Buffer.from(`Authentication-Results: ${authservId}${note};\r\n${body}\r\n`, 'utf8');
}
