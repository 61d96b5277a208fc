import { describe, expect, it } from 'vitest';
import { domainHolder } from './domain-holder.ts';

describe('domainHolder', () => {
  const exact = new Map([
    ['example.com', 'a'],
    ['mail.example.org', 'b'],
  ]);
  const wildcard = new Map([
    ['example.org', 'c'],
    ['deep.example.org', 'd'],
  ]);

  it('an exact claim first, then the wildcard over the longest proper suffix', () => {
    expect(domainHolder(exact, wildcard, 'example.com')).toBe('a');
    expect(domainHolder(exact, wildcard, 'mail.example.org')).toBe('b');
    expect(domainHolder(exact, wildcard, 'x.deep.example.org')).toBe('d');
    expect(domainHolder(exact, wildcard, 'x.example.org')).toBe('c');
    expect(domainHolder(exact, wildcard, 'sub.example.com')).toBeUndefined();
  });

  it('a wildcard claim covers subdomains, never the domain itself', () => {
    expect(domainHolder(exact, wildcard, 'example.org')).toBeUndefined();
    expect(domainHolder(exact, wildcard, 'example.org', true)).toBe('c');
    expect(domainHolder(exact, wildcard, 'deep.example.org')).toBe('c');
    expect(domainHolder(exact, wildcard, 'deep.example.org', true)).toBe('d');
  });

  it('passes over the excepted holder to the next wider claim', () => {
    expect(domainHolder(exact, wildcard, 'x.deep.example.org', false, 'd')).toBe('c');
    expect(domainHolder(exact, wildcard, 'mail.example.org', false, 'b')).toBe('c');
    expect(domainHolder(exact, wildcard, 'x.example.org', false, 'c')).toBeUndefined();
  });
});
