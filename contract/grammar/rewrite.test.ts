// biome-ignore-all lint/suspicious/noTemplateCurlyInString: ${…} is the recipient template grammar
import { describe, expect, it } from 'vitest';
import { expandRewrite, parseRewriteTemplate, recipientParts } from './rewrite.ts';

const parse = (t: string) => {
  const r = parseRewriteTemplate(t);
  if (!r.ok) throw new Error(r.error);
  return r.value;
};
const expand = (t: string, rcpt: string) => {
  const r = expandRewrite(parse(t), rcpt);
  return r.ok ? r.value : `error: ${r.error}`;
};

describe('recipient template grammar', () => {
  it('splits the recipient as received, case and form kept', () => {
    expect(recipientParts('<Bob+News@Example.COM>')).toEqual({
      local: 'Bob+News',
      user: 'Bob',
      tag: 'News',
      domain: 'Example.COM',
    });
    // a leading '+' is part of the name, as in routing
    expect(recipientParts('+x@a.org')).toEqual({ local: '+x', user: '+x', tag: '', domain: 'a.org' });
  });

  it('expands ${local}, ${user}, ${tag} and ${domain}', () => {
    expect(expand('${local}@mail.internal.example', 'Bob+News@Example.com')).toBe(
      'Bob+News@mail.internal.example',
    );
    expect(expand('${user}@mail.internal.example', 'bob+news@example.com')).toBe('bob@mail.internal.example');
    expect(expand('${user}${tag?.}${tag}@archive.example', 'bob+news@example.com')).toBe(
      'bob.news@archive.example',
    );
    expect(expand('${local}@${domain}.internal', 'bob@sales.example.com')).toBe(
      'bob@sales.example.com.internal',
    );
    expect(expand('archive+$$x@${domain}', 'bob@a.org')).toBe('archive+$x@a.org');
  });

  it('has Postfix conditionals: ${NAME?TEXT} and ${NAME:TEXT}', () => {
    const t = '${user}${tag?+}${tag}@internal.example';
    expect(expand(t, 'bob+news@a.org')).toBe('bob+news@internal.example');
    expect(expand(t, 'bob@a.org')).toBe('bob@internal.example');
    expect(expand('${user}+${tag:inbox}${tag}@x.example', 'bob@a.org')).toBe('bob+inbox@x.example');
    expect(expand('${user}+${tag:inbox}${tag}@x.example', 'bob+b@a.org')).toBe('bob+b@x.example');
  });

  it('keeps internationalised addresses in the form received', () => {
    expect(expand('${local}@${domain}', 'kunde@xn--bcher-kva.example')).toBe('kunde@xn--bcher-kva.example');
    expect(expand('${local}@${domain}', 'jürgen@bücher.example')).toBe('jürgen@bücher.example');
    expect(expand('${local}@mail.internal.example', 'jürgen@bücher.example')).toBe(
      'jürgen@mail.internal.example',
    );
  });

  it('normalises a literal domain to lower-case A-labels', () => {
    expect(parse('${local}@Mail.Bücher.example').text).toBe('${local}@mail.xn--bcher-kva.example');
    expect(parse('${local}@${domain}.Internal').text).toBe('${local}@${domain}.internal');
    expect(parse('a$$b@x.example').text).toBe('a$$b@x.example');
  });

  it.each([
    ['no-at.example', 'exactly one "@"'],
    ['a@b@c.example', 'exactly one "@"'],
    ['${local}@', 'the domain (after "@") is empty'],
    ['@x.example', 'the local part (before "@") is empty'],
    ['${lokal}@x.example', 'unknown variable "${lokal}": use ${local}, ${user}, ${tag} or ${domain}'],
    ['$local@x.example', 'write a literal "$" as "$$"'],
    ['${local@x.example', 'unterminated'],
    ['${local}@${user}.example', 'only ${domain} may appear after "@" (found ${user})'],
    ['${local}@x_y!.example', 'invalid domain'],
    ['${local}@-bad.example', 'invalid domain'],
    ['${local}@${domain}..x', 'is not a DNS name'],
    ['a b@x.example', 'no spaces, control characters'],
    ['jürgen@x.example', 'not allowed in a local part'],
    ['${local}@${domain}.bücher', 'is not part of a DNS name'],
    ['${local}@${domain}.x_y!', 'is not part of a DNS name'],
    ['<a>@x.example', 'no spaces, control characters'],
    ['jürgen@x.example', 'not allowed in a local part'],
    ['${local}@${domain}.bücher', 'is not part of a DNS name'],
    ['${local}@${domain}.x_y!', 'is not part of a DNS name'],
    ['a,b@x.example', 'not allowed in a local part'],
    ['${tag?$x}@x.example', 'literal (no "$")'],
    ['${tag?@}x@x.example', 'exactly one "@"'],
    [
      '${user}.${tag}@x.example',
      'for user@example.com it gives "user.@x.example", which has an invalid local part',
    ],
    ['.${local}@x.example', 'for user+tag@example.com it gives ".user+tag@x.example"'],
    ['${local}..x@x.example', 'has an invalid local part'],
  ])('refuses %s', (template, message) => {
    const r = parseRewriteTemplate(template);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error).toContain(`invalid recipient template "${template}"`);
      expect(r.error).toContain(message);
    }
  });

  it('refuses a result that is not a valid address', () => {
    const long = 'a'.repeat(60);
    expect(expand('${local}.archive@x.example', `${long}@a.org`)).toBe(
      `error: "${long}.archive@x.example" has a local part over 64 octets`,
    );
    expect(expand('${local}.x@x.example', '"john doe"@a.org')).toContain('has an invalid local part');
    // a quoted local part as a whole stays valid
    expect(expand('${local}@x.example', '"john doe"@a.org')).toBe('"john doe"@x.example');
  });
});
