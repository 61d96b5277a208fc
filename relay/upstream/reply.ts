// Incremental SMTP reply parsing (RFC 5321 §4.2, enhanced codes RFC 3463/2034).
// Bounded: an upstream can never make us buffer more than MAX_REPLY_BYTES or MAX_REPLY_LINES.

export interface SmtpReply {
  code: number;
  /** RFC 3463 `class.subject.detail`, when the first line carries one whose class matches the code. */
  enhancedCode?: string;
  /** The text of every line, without code and enhanced code, joined with ' '. */
  text: string;
  /** Every line as received after `NNN-`/`NNN ` (enhanced code kept), without CRLF. */
  lines: string[];
}

export const MAX_REPLY_BYTES = 64 * 1024;
export const MAX_REPLY_LINES = 256;

const LINE = /^([2-5][0-9][0-9])([ -]|$)(.*)$/s;
const ENHANCED = /^([245]\.[0-9]{1,3}\.[0-9]{1,3})(?: +|$)/;

export class ReplyParseError extends Error {
  override name = 'ReplyParseError';
}

/** Splits an enhanced status code off a reply line, if it has one matching the reply class. */
function splitEnhanced(code: number, text: string): { enhanced?: string; rest: string } {
  const m = ENHANCED.exec(text);
  if (m && m[1].charCodeAt(0) - 48 === Math.floor(code / 100)) {
    return { enhanced: m[1], rest: text.slice(m[0].length) };
  }
  return { rest: text };
}

export function buildReply(code: number, lines: string[]): SmtpReply {
  const first = splitEnhanced(code, lines[0] ?? '');
  const texts = lines.map((line, i) => {
    if (i === 0) return first.rest;
    const s = splitEnhanced(code, line);
    return s.enhanced !== undefined && s.enhanced === first.enhanced ? s.rest : line;
  });
  const reply: SmtpReply = { code, text: texts.join(' ').trim(), lines };
  if (first.enhanced !== undefined) reply.enhancedCode = first.enhanced;
  return reply;
}

/**
 * Feed bytes with `push`; complete replies come back in order. Lines end in CRLF (a bare LF is
 * tolerated, as most clients do). Throws ReplyParseError on malformed or oversized replies.
 */
export class ReplyParser {
  #buf = '';
  #code = 0;
  #lines: string[] = [];
  #bytes = 0;

  /** True while bytes of an unfinished reply are buffered. */
  get pending(): boolean {
    return this.#buf.length > 0 || this.#lines.length > 0;
  }

  push(chunk: Buffer): SmtpReply[] {
    // latin1 keeps a 1:1 byte/char mapping; replies are ASCII (or UTF-8 we never interpret).
    this.#buf += chunk.toString('latin1');
    const out: SmtpReply[] = [];
    for (;;) {
      const nl = this.#buf.indexOf('\n');
      if (nl < 0) break;
      let raw = this.#buf.slice(0, nl);
      this.#buf = this.#buf.slice(nl + 1);
      this.#bytes += nl + 1;
      if (raw.endsWith('\r')) raw = raw.slice(0, -1);
      const m = LINE.exec(raw);
      if (!m) throw new ReplyParseError(`malformed reply line: ${JSON.stringify(raw.slice(0, 80))}`);
      const code = Number(m[1]);
      if (this.#lines.length > 0 && code !== this.#code) {
        throw new ReplyParseError(`reply code changed mid-reply (${this.#code} then ${code})`);
      }
      this.#code = code;
      this.#lines.push(Buffer.from(m[3], 'latin1').toString('utf8'));
      if (this.#lines.length > MAX_REPLY_LINES) {
        throw new ReplyParseError(`reply longer than ${MAX_REPLY_LINES} lines`);
      }
      if (this.#bytes > MAX_REPLY_BYTES)
        throw new ReplyParseError(`reply larger than ${MAX_REPLY_BYTES} bytes`);
      if (m[2] !== '-') {
        out.push(buildReply(code, this.#lines));
        this.#lines = [];
        this.#bytes = 0;
      }
    }
    if (this.#bytes + this.#buf.length > MAX_REPLY_BYTES) {
      throw new ReplyParseError(`reply larger than ${MAX_REPLY_BYTES} bytes`);
    }
    return out;
  }
}

/**
 * The positive replies RFC 5321 §4.3.2 allows at each step (STARTTLS: RFC 3207; XCLIENT: Postfix's
 * XCLIENT_README), keyed by the verb the connection waits on. Any 4xx/5xx is a refusal and is passed on as
 * one (real MTAs use more error codes than the RFC lists, and a refusal can never be mistaken for
 * success); a 2xx/3xx outside the list is a broken upstream: `DATA` answered 250 would otherwise become a
 * false success with no content sent, a 354 to the final dot a success that may not be one.
 */
const POSITIVE: Record<string, readonly number[]> = {
  greeting: [220],
  EHLO: [250],
  HELO: [250],
  STARTTLS: [220],
  XCLIENT: [220],
  MAIL: [250],
  RCPT: [250, 251],
  DATA: [354],
  'end of data': [250],
  RSET: [250],
  NOOP: [250],
  QUIT: [221],
};

/** Undefined when `code` is a reply the protocol allows to `step`, else why it is not. */
export function unexpectedReply(step: string, code: number): string | undefined {
  if (code >= 400) return undefined;
  const allowed = POSITIVE[step];
  if (allowed === undefined || allowed.includes(code)) return undefined;
  return `reply ${code} to ${step} is not allowed (expected ${allowed.join(' or ')}, or 4xx/5xx)`;
}
