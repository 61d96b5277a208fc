// biome-ignore-all lint/suspicious/noTemplateCurlyInString: ${…} is the template grammar, not JS
// Recipient rewriting per route (MailRoute spec.forward.rewrite.recipient), in the spirit of Postfix's
// virtual/canonical maps and Mailgun's route captures: a small template over the parts of the
// recipient as received. Parsed and normalised by the compile step, parsed again by the relay when
// it loads the config, expanded per recipient. Pure.
//
// Grammar (the variable names follow Postfix's pipe(8) macros `${user}` and `${extension}`):
//   ${local}   the whole local part as received: 'Bob+News' for Bob+News@Example.com
//   ${user}    the local part without its +tag: 'Bob'
//   ${tag}     the +tag without the '+': 'News' ('' when there is none)
//   ${domain}  the domain as received: 'Example.com' (an A-label stays ASCII, a U-label UTF-8)
//   ${NAME?TEXT}  TEXT when NAME is not empty, else nothing: '${user}${tag?+}${tag}@…'
//   ${NAME:TEXT}  TEXT when NAME is empty, else nothing: '${tag:inbox}@…'
//   $$         a literal '$'
// The template has exactly one '@' outside ${…}; ${domain} is the only variable allowed after it.
// Everything else is literal text: local-part characters before the '@', a DNS name after it.
import { normalizeDomain, type ParseResult } from './match.ts';

export type RewriteVariable = 'local' | 'user' | 'tag' | 'domain';

export const REWRITE_VARIABLES: readonly RewriteVariable[] = ['local', 'user', 'tag', 'domain'];

type Part =
  | { kind: 'text'; text: string }
  | { kind: 'var'; name: RewriteVariable }
  | { kind: 'if'; name: RewriteVariable; when: 'set' | 'empty'; text: string };

export interface RewriteTemplate {
  /** Normalised template text (a literal domain in lower-case A-labels). */
  text: string;
  local: Part[];
  domain: Part[];
}

// RFC 5322 atext, the characters of a dot-atom local part besides '.'.
const ATEXT = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]*$/;
const DOMAIN_TEXT = /^[A-Za-z0-9.-]*$/;
const VARIABLES_TEXT = '${local}, ${user}, ${tag} or ${domain}';

function parseParts(input: string): ParseResult<Part[]> {
  const parts: Part[] = [];
  let text = '';
  const flush = () => {
    if (text !== '') parts.push({ kind: 'text', text });
    text = '';
  };
  for (let i = 0; i < input.length; ) {
    const c = input[i];
    if (c !== '$') {
      text += c;
      i++;
      continue;
    }
    if (input[i + 1] === '$') {
      text += '$';
      i += 2;
      continue;
    }
    if (input[i + 1] !== '{') {
      return { ok: false, error: 'a "$" starts a variable such as ${local}; write a literal "$" as "$$"' };
    }
    const close = input.indexOf('}', i + 2);
    if (close < 0) return { ok: false, error: `unterminated "\${" at position ${i + 1}` };
    const body = input.slice(i + 2, close);
    const m = /^([a-z_]+)(?:([?:])(.*))?$/s.exec(body);
    const name = m?.[1] as RewriteVariable | undefined;
    if (!m || name === undefined || !REWRITE_VARIABLES.includes(name)) {
      return { ok: false, error: `unknown variable "\${${body}}": use ${VARIABLES_TEXT}` };
    }
    if (m[3]?.includes('$')) {
      return { ok: false, error: `"\${${body}}": the text of a conditional is literal (no "$")` };
    }
    flush();
    if (m[2] === undefined) parts.push({ kind: 'var', name });
    else parts.push({ kind: 'if', name, when: m[2] === '?' ? 'set' : 'empty', text: m[3] ?? '' });
    i = close + 1;
  }
  flush();
  return { ok: true, value: parts };
}

const partText = (p: Part): string =>
  p.kind === 'text'
    ? p.text.replaceAll('$', () => '$$')
    : p.kind === 'var'
      ? `\${${p.name}}`
      : `\${${p.name}${p.when === 'set' ? '?' : ':'}${p.text}}`;

/**
 * Parses and normalises a recipient template. Errors say what is wrong and what to write instead;
 * the caller adds the resource and field.
 */
export function parseRewriteTemplate(input: string): ParseResult<RewriteTemplate> {
  const bad = (why: string): ParseResult<RewriteTemplate> => ({
    ok: false,
    error: `invalid recipient template "${input}": ${why}`,
  });
  // non-ASCII is refused below except in a literal domain (converted to A-labels)
  if (/[\s<>"\\]|\p{Cc}/u.test(input)) {
    return bad('no spaces, control characters, quotes, backslashes or angle brackets');
  }
  const parsed = parseParts(input);
  if (!parsed.ok) return bad(parsed.error);
  const ats: Array<{ part: number; offset: number }> = [];
  parsed.value.forEach((p, i) => {
    if (p.kind === 'text')
      for (let o = p.text.indexOf('@'); o >= 0; o = p.text.indexOf('@', o + 1))
        ats.push({ part: i, offset: o });
    else if (p.kind === 'if' && p.text.includes('@')) ats.push({ part: i, offset: -1 });
  });
  if (ats.length !== 1 || ats[0].offset < 0) {
    return bad('expected exactly one "@" outside ${…}, as in ${local}@mail.internal.example');
  }
  const { part, offset } = ats[0];
  const at = parsed.value[part] as { kind: 'text'; text: string };
  const before = at.text.slice(0, offset);
  const after = at.text.slice(offset + 1);
  const local: Part[] = [
    ...parsed.value.slice(0, part),
    ...(before ? [{ kind: 'text' as const, text: before }] : []),
  ];
  let domain: Part[] = [
    ...(after ? [{ kind: 'text' as const, text: after }] : []),
    ...parsed.value.slice(part + 1),
  ];
  if (local.length === 0) return bad('the local part (before "@") is empty');
  if (domain.length === 0) return bad('the domain (after "@") is empty');
  for (const p of local) {
    const literal = p.kind === 'text' ? p.text : p.kind === 'if' ? p.text : '';
    if (!ATEXT.test(literal)) return bad(`"${literal}" has characters not allowed in a local part`);
  }
  for (const p of domain) {
    if (p.kind === 'if' || (p.kind === 'var' && p.name !== 'domain')) {
      return bad(`only \${domain} may appear after "@" (found ${partText(p)})`);
    }
    if (p.kind === 'text' && domain.length > 1 && !DOMAIN_TEXT.test(p.text)) {
      return bad(`"${p.text}" after "@" is not part of a DNS name (letters, digits, "-", ".")`);
    }
  }
  if (domain.every((p) => p.kind === 'text')) {
    const d = normalizeDomain(domain.map((p) => (p as { text: string }).text).join(''));
    if (!d.ok) return bad(d.error);
    domain = [{ kind: 'text', text: d.value }];
  } else {
    // the literal labels around ${domain} must still form a DNS name with any domain in its place
    const probe = domain.map((p) => (p.kind === 'text' ? p.text.toLowerCase() : 'x.example')).join('');
    const d = normalizeDomain(probe);
    if (!d.ok || probe.endsWith('.'))
      return bad(`the domain "${domain.map(partText).join('')}" is not a DNS name`);
    domain = domain.map((p) => (p.kind === 'text' ? { kind: 'text', text: p.text.toLowerCase() } : p));
  }
  const text = `${local.map(partText).join('')}@${domain.map(partText).join('')}`;
  const template: RewriteTemplate = { text, local, domain };
  // refused here rather than recipient by recipient at RCPT: a template that breaks ordinary
  // addresses, with or without a +tag ('.${local}', '${user}.${tag}' for an untagged one)
  for (const sample of ['user+tag@example.com', 'user@example.com']) {
    const r = expandChecked(template, sample);
    if (r.why !== undefined) return bad(`for ${sample} it gives "${r.address}", which ${r.why}`);
  }
  return { ok: true, value: template };
}

/** The parts of a recipient as received: local part, +tag split (a leading '+' is no tag), domain. */
export function recipientParts(address: string): Record<RewriteVariable, string> {
  let a = address.trim();
  if (a.startsWith('<') && a.endsWith('>')) a = a.slice(1, -1);
  const at = a.lastIndexOf('@');
  const local = at < 0 ? a : a.slice(0, at);
  let domain = at < 0 ? '' : a.slice(at + 1);
  if (domain.endsWith('.')) domain = domain.slice(0, -1);
  const plus = local.indexOf('+');
  return {
    local,
    user: plus > 0 ? local.slice(0, plus) : local,
    tag: plus > 0 ? local.slice(plus + 1) : '',
    domain,
  };
}

function expandParts(parts: Part[], values: Record<RewriteVariable, string>): string {
  let out = '';
  for (const p of parts) {
    if (p.kind === 'text') out += p.text;
    else if (p.kind === 'var') out += values[p.name];
    else if ((values[p.name] !== '') === (p.when === 'set')) out += p.text;
  }
  return out;
}

// RFC 5321 Dot-string, with RFC 6531's UTF-8 in atext; or a Quoted-string.
const DOT_STRING =
  /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\u{10ffff}-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\u{10ffff}-]+)*$/u;
const QUOTED_STRING = /^"([\x20\x21\x23-\x5b\x5d-\x7e\u0080-\u{10ffff}]|\\[\x20-\x7e])*"$/u;

/**
 * The address a recipient is forwarded as, or an error when the result is not a valid address
 * (RFC 5321: a local part of at most 64 octets, a domain, 254 octets in all).
 */
export function expandRewrite(template: RewriteTemplate, recipient: string): ParseResult<string> {
  const r = expandChecked(template, recipient);
  return r.why === undefined
    ? { ok: true, value: r.address }
    : { ok: false, error: `"${r.address}" ${r.why}` };
}

function expandChecked(template: RewriteTemplate, recipient: string): { address: string; why?: string } {
  const values = recipientParts(recipient);
  const local = expandParts(template.local, values);
  const domain = expandParts(template.domain, values);
  const address = `${local}@${domain}`;
  const octets = (s: string) => Buffer.byteLength(s, 'utf8');
  if (!DOT_STRING.test(local) && !QUOTED_STRING.test(local))
    return { address, why: 'has an invalid local part' };
  if (octets(local) > 64) return { address, why: 'has a local part over 64 octets' };
  if (!normalizeDomain(domain).ok) return { address, why: 'has an invalid domain' };
  if (octets(address) > 254) return { address, why: 'is longer than 254 octets' };
  return { address };
}
