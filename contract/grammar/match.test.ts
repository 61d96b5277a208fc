import { describe, expect, it } from 'vitest';
import {
  claimCoversPattern,
  matchesPattern,
  normalizeDomain,
  normalizeDomainClaim,
  parseAddress,
  parsePattern,
} from './match.ts';

const pat = (s: string, allowNull = false) => {
  const r = parsePattern(s, { allowNull });
  if (!r.ok) throw new Error(r.error);
  return r.value;
};
const m = (p: string, a: string) => matchesPattern(pat(p, true), parseAddress(a));

describe('parsePattern', () => {
  it.each([
    ['User@Example.COM', 'address', 'user@example.com'],
    ['user+Tag@example.com', 'tagged', 'user+tag@example.com'],
    ['*@Example.com', 'domain', '*@example.com'],
    ['*@*.Example.com', 'subdomains', '*@*.example.com'],
    ['info@bücher.de', 'address', 'info@xn--bcher-kva.de'],
    ['*@*.bücher.de', 'subdomains', '*@*.xn--bcher-kva.de'],
    ['+x@example.com', 'address', '+x@example.com'],
    ['a+b+c@example.com', 'tagged', 'a+b+c@example.com'],
    ['x@example.com.', 'address', 'x@example.com'],
  ])('%s is a %s pattern normalised to %s', (input, kind, text) => {
    const p = pat(input);
    expect(p.kind).toBe(kind);
    expect(p.text).toBe(text);
  });

  it.each([
    ['', 'expected user@example.com'],
    ['example.com', 'expected user@example.com'],
    ['@example.com', 'expected'],
    ['user@', 'expected'],
    ['us*er@example.com', '"*" must be the whole local part'],
    ['user@*.example.com', 'subdomain wildcard needs a wildcard local part'],
    ['*@ex*.com', 'domain wildcard must be "*."'],
    ['*@*.*.com', 'invalid domain "*.com"'],
    ['a@b@c.com', 'more than one "@"'],
    ['a b@c.com', 'no spaces'],
    ['<a@c.com>', 'angle brackets'],
    ['<>', 'only allowed in senders'],
    ['a@-bad.com', 'bad label'],
    ['a@exa_mple..com', 'bad label'],
    [`${'x'.repeat(65)}@example.com`, 'over 64'],
  ])('rejects %j', (input, error) => {
    const r = parsePattern(input);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toContain(error);
  });

  it('accepts <> with allowNull', () => {
    expect(pat('<>', true).kind).toBe('null');
  });

  it('ranks specificity: tagged < address < domain < longer suffix < shorter suffix', () => {
    const ranks = ['a+t@x.y.z', 'a@x.y.z', '*@x.y.z', '*@*.x.y.z', '*@*.y.z', '*@*.z'].map(
      (s) => pat(s).rank,
    );
    expect([...ranks].sort((a, b) => a - b)).toEqual(ranks);
    expect(new Set(ranks).size).toBe(ranks.length);
  });
});

describe('parseAddress', () => {
  it('strips brackets, folds case, splits the tag', () => {
    expect(parseAddress('<John+News@Example.COM>')).toEqual({
      isNull: false,
      local: 'john',
      tag: 'news',
      domain: 'example.com',
      original: 'John+News@Example.COM',
    });
  });
  it('treats "" and <> as the null sender', () => {
    expect(parseAddress('').isNull).toBe(true);
    expect(parseAddress('<>').isNull).toBe(true);
  });
  it('gives domain "" for missing or bad domains', () => {
    expect(parseAddress('postmaster').domain).toBe('');
    expect(parseAddress('a@[10.0.0.1]').domain).toBe('');
  });
  it('converts IDN domains', () => {
    expect(parseAddress('a@BÜCHER.de').domain).toBe('xn--bcher-kva.de');
  });
});

describe('matchesPattern', () => {
  it.each([
    ['user@example.com', 'user@example.com', true],
    ['user@example.com', 'USER@EXAMPLE.COM', true],
    ['user@example.com', 'user+tag@example.com', true],
    ['user@example.com', 'user2@example.com', false],
    ['user@example.com', 'user@sub.example.com', false],
    ['user+tag@example.com', 'user+tag@example.com', true],
    ['user+tag@example.com', 'User+TAG@example.com', true],
    ['user+tag@example.com', 'user@example.com', false],
    ['user+tag@example.com', 'user+other@example.com', false],
    ['*@example.com', 'anyone+x@example.com', true],
    ['*@example.com', 'a@sub.example.com', false],
    ['*@*.example.com', 'a@sub.example.com', true],
    ['*@*.example.com', 'a@deep.sub.example.com', true],
    ['*@*.example.com', 'a@example.com', false],
    ['*@*.example.com', 'a@badexample.com', false],
    ['<>', '<>', true],
    ['<>', '', true],
    ['<>', 'a@example.com', false],
    ['*@example.com', '<>', false],
    ['*@example.com', 'postmaster', false],
  ])('%s vs %s -> %s', (p, a, expected) => {
    expect(m(p, a)).toBe(expected);
  });
});

describe('domains', () => {
  it('normalises claims', () => {
    expect(normalizeDomainClaim('*.Example.COM')).toEqual({ ok: true, value: '*.example.com' });
    expect(normalizeDomainClaim('münchen.de')).toEqual({ ok: true, value: 'xn--mnchen-3ya.de' });
    expect(normalizeDomainClaim('a.*.com').ok).toBe(false);
    expect(normalizeDomainClaim('*example.com').ok).toBe(false);
    expect(normalizeDomain('').ok).toBe(false);
    expect(normalizeDomain('a'.repeat(64) + '.com').ok).toBe(false);
  });
  it('knows which claims cover which patterns', () => {
    expect(claimCoversPattern('example.com', pat('a@example.com'))).toBe(true);
    expect(claimCoversPattern('example.com', pat('*@example.com'))).toBe(true);
    expect(claimCoversPattern('example.com', pat('*@*.example.com'))).toBe(false);
    expect(claimCoversPattern('example.com', pat('a@sub.example.com'))).toBe(false);
    expect(claimCoversPattern('*.example.com', pat('a@sub.example.com'))).toBe(true);
    expect(claimCoversPattern('*.example.com', pat('*@*.example.com'))).toBe(true);
    expect(claimCoversPattern('*.example.com', pat('*@*.sub.example.com'))).toBe(true);
    expect(claimCoversPattern('*.example.com', pat('*@example.com'))).toBe(false);
    expect(claimCoversPattern('*.sub.example.com', pat('*@*.example.com'))).toBe(false);
  });
});
