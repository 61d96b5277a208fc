// Address and pattern grammar shared by the compile step (validation, normalisation) and the relay
// (matching). Local parts and domains compare case-insensitively; a recipient's +tag is ignored by
// 'user@domain' patterns and honoured by 'user+tag@domain' patterns.
import { domainToASCII } from 'node:url';

/**
 * - `tagged`: 'user+tag@domain', that exact address only.
 * - `address`: 'user@domain', also matches 'user+anytag@domain'.
 * - `domain`: '*@domain'.
 * - `subdomains`: '*@*.domain', any subdomain of domain, not domain itself.
 * - `null`: '<>', the null sender (sender patterns only).
 */
export type PatternKind = 'tagged' | 'address' | 'domain' | 'subdomains' | 'null';

export interface Pattern {
  kind: PatternKind;
  /** Normalised text ('user@example.com', '*@*.example.com', '<>'). */
  text: string;
  /** Lower-case local part without tag ('' for wildcards and '<>'). */
  local: string;
  /** Lower-case tag for `tagged` patterns, else ''. */
  tag: string;
  /** Lower-case A-label domain; for `subdomains` the suffix after '*.' ('' for '<>'). */
  domain: string;
  /** Lower is more specific; see specificityRank. */
  rank: number;
}

export interface Address {
  /** True for the null sender ('' or '<>'). */
  isNull: boolean;
  /** Lower-case local part without tag. */
  local: string;
  /** Lower-case tag ('' when none). */
  tag: string;
  /** Lower-case A-label domain; '' when the address has none or it is not a valid domain. */
  domain: string;
  /** The address as given, without surrounding angle brackets. */
  original: string;
}

export type ParseResult<T> = { ok: true; value: T } | { ok: false; error: string };

const LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

/**
 * Lower-cases and converts an (internationalised) domain to A-labels. Returns an error when the
 * result is not a syntactically valid DNS name. A single trailing dot is accepted and dropped.
 */
export function normalizeDomain(input: string): ParseResult<string> {
  let r = domainCache.get(input);
  if (r === undefined) {
    // domainToASCII dominates compile time for large inputs; domains repeat a lot.
    if (domainCache.size >= 16_384) domainCache.clear();
    r = normalizeDomainUncached(input);
    domainCache.set(input, r);
  }
  return r;
}

const domainCache = new Map<string, ParseResult<string>>();

function normalizeDomainUncached(input: string): ParseResult<string> {
  let d = input.trim();
  if (d.endsWith('.')) d = d.slice(0, -1);
  if (d === '') return { ok: false, error: 'empty domain' };
  if (/[\s@*/:[\]]/.test(d)) return { ok: false, error: `invalid domain "${input}"` };
  const ascii = domainToASCII(d.toLowerCase());
  if (ascii === '')
    return { ok: false, error: `invalid domain "${input}" (not a valid internationalised name)` };
  if (ascii.length > 253) return { ok: false, error: `domain "${input}" is longer than 253 characters` };
  const labels = ascii.split('.');
  for (const label of labels) {
    if (!LABEL.test(label)) return { ok: false, error: `invalid domain "${input}": bad label "${label}"` };
  }
  return { ok: true, value: ascii };
}

/** 'example.com' or '*.example.com' (subdomains only) as claimed by a TenantPolicy. */
export function normalizeDomainClaim(input: string): ParseResult<string> {
  const trimmed = input.trim();
  if (trimmed.startsWith('*.')) {
    const rest = normalizeDomain(trimmed.slice(2));
    if (!rest.ok) return rest;
    return { ok: true, value: `*.${rest.value}` };
  }
  if (trimmed.includes('*')) {
    return {
      ok: false,
      error: `invalid domain "${input}": a wildcard must be the whole first label, as in *.example.com`,
    };
  }
  return normalizeDomain(trimmed);
}

export function labelCount(domain: string): number {
  let n = 1;
  for (let i = 0; i < domain.length; i++) if (domain.charCodeAt(i) === 46) n++;
  return n;
}

/**
 * Specificity of a pattern, lower is more specific: tagged 0, address 1, domain 2, subdomains
 * 1000 minus the number of labels of its suffix (a longer suffix is more specific).
 */
export function specificityRank(kind: PatternKind, domain: string): number {
  switch (kind) {
    case 'tagged':
      return 0;
    case 'address':
      return 1;
    case 'domain':
      return 2;
    case 'subdomains':
      return 1000 - labelCount(domain);
    case 'null':
      return 0;
  }
}

function splitTag(local: string): { local: string; tag: string } {
  const plus = local.indexOf('+');
  // A leading '+' is part of the name, not a tag separator.
  if (plus <= 0) return { local, tag: '' };
  return { local: local.slice(0, plus), tag: local.slice(plus + 1) };
}

function makePattern(kind: PatternKind, local: string, tag: string, domain: string): Pattern {
  let text: string;
  switch (kind) {
    case 'null':
      text = '<>';
      break;
    case 'tagged':
      text = `${local}+${tag}@${domain}`;
      break;
    case 'address':
      text = `${local}@${domain}`;
      break;
    case 'domain':
      text = `*@${domain}`;
      break;
    case 'subdomains':
      text = `*@*.${domain}`;
      break;
  }
  return { kind, text, local, tag, domain, rank: specificityRank(kind, domain) };
}

/**
 * Parses a recipient or sender pattern: 'user@dom', 'user+tag@dom', '*@dom', '*@*.dom', and with
 * allowNull '<>'. The result is normalised (lower case, A-label domain).
 */
export function parsePattern(input: string, options: { allowNull?: boolean } = {}): ParseResult<Pattern> {
  const text = input.trim();
  if (text === '<>') {
    if (options.allowNull) return { ok: true, value: makePattern('null', '', '', '') };
    return { ok: false, error: `"<>" (the null sender) is only allowed in senders` };
  }
  if (/[\s<>]/.test(text)) {
    return {
      ok: false,
      error: `invalid pattern "${input}": no spaces or angle brackets; use user@example.com`,
    };
  }
  const at = text.lastIndexOf('@');
  if (at <= 0 || at === text.length - 1) {
    return {
      ok: false,
      error: `invalid pattern "${input}": expected user@example.com, *@example.com or *@*.example.com`,
    };
  }
  const localPart = text.slice(0, at);
  const domainPart = text.slice(at + 1);
  if (localPart.includes('@')) return { ok: false, error: `invalid pattern "${input}": more than one "@"` };
  const wildLocal = localPart === '*';
  if (!wildLocal && localPart.includes('*')) {
    return {
      ok: false,
      error: `invalid pattern "${input}": "*" must be the whole local part, as in *@example.com`,
    };
  }
  if (localPart.length > 64)
    return { ok: false, error: `invalid pattern "${input}": local part over 64 characters` };
  let kind: PatternKind;
  let domainText = domainPart;
  if (domainPart.startsWith('*.')) {
    if (!wildLocal) {
      return {
        ok: false,
        error: `invalid pattern "${input}": a subdomain wildcard needs a wildcard local part, as in *@*.example.com`,
      };
    }
    kind = 'subdomains';
    domainText = domainPart.slice(2);
  } else if (domainPart.includes('*')) {
    return {
      ok: false,
      error: `invalid pattern "${input}": the domain wildcard must be "*.", as in *@*.example.com`,
    };
  } else {
    kind = wildLocal ? 'domain' : 'address';
  }
  const domain = normalizeDomain(domainText);
  if (!domain.ok) return { ok: false, error: `invalid pattern "${input}": ${domain.error}` };
  if (wildLocal) return { ok: true, value: sharingInput(makePattern(kind, '', '', domain.value), input) };
  const { local, tag } = splitTag(localPart.toLowerCase());
  return {
    ok: true,
    value: sharingInput(makePattern(tag === '' ? 'address' : 'tagged', local, tag, domain.value), input),
  };
}

/**
 * The pattern with the input's own string as its text when the input is already normal, as most
 * are: compiled configs and routing tables keep the text, and with a new string for it 100k routes
 * held a second copy of every pattern beside the informer's (about 10 MB of the operator's heap).
 */
function sharingInput(p: Pattern, input: string): Pattern {
  if (p.text === input) p.text = input;
  return p;
}

/**
 * Parses an envelope address as received ('<a@b>' or 'a@b'); '' and '<>' are the null sender.
 * Never fails: an address without a valid domain gets domain ''.
 */
export function parseAddress(input: string): Address {
  let original = input.trim();
  if (original.startsWith('<') && original.endsWith('>')) original = original.slice(1, -1).trim();
  if (original === '') return { isNull: true, local: '', tag: '', domain: '', original };
  const at = original.lastIndexOf('@');
  const localPart = at < 0 ? original : original.slice(0, at);
  const domainPart = at < 0 ? '' : original.slice(at + 1);
  const { local, tag } = splitTag(localPart.toLowerCase());
  const d = domainPart === '' ? undefined : normalizeDomain(domainPart);
  return { isNull: false, local, tag, domain: d?.ok ? d.value : '', original };
}

/** True when domain is a proper subdomain of suffix. */
export function isSubdomainOf(domain: string, suffix: string): boolean {
  return (
    domain.length > suffix.length + 1 &&
    domain.endsWith(suffix) &&
    domain[domain.length - suffix.length - 1] === '.'
  );
}

export function matchesPattern(pattern: Pattern, address: Address): boolean {
  if (pattern.kind === 'null') return address.isNull;
  if (address.isNull || address.domain === '') return false;
  switch (pattern.kind) {
    case 'tagged':
      return (
        address.domain === pattern.domain && address.local === pattern.local && address.tag === pattern.tag
      );
    case 'address':
      return address.domain === pattern.domain && address.local === pattern.local;
    case 'domain':
      return address.domain === pattern.domain;
    case 'subdomains':
      return isSubdomainOf(address.domain, pattern.domain);
  }
}

/** Does a domain claim ('example.com' / '*.example.com') cover this pattern's domain entirely? */
export function claimCoversPattern(claim: string, pattern: Pattern): boolean {
  if (claim.startsWith('*.')) {
    const suffix = claim.slice(2);
    if (pattern.kind === 'subdomains')
      return pattern.domain === suffix || isSubdomainOf(pattern.domain, suffix);
    return isSubdomainOf(pattern.domain, suffix);
  }
  return pattern.kind !== 'subdomains' && pattern.domain === claim;
}
