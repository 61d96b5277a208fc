// The fast path for flat records of numbers (the compiled `sources`) must give the very text the
// sorting replacer gives: relays verify the hash over the replacer's output.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  canonicalJson,
  hashConfig,
  rehashLike,
  sameTenant,
  sortedNumberRecordJson,
  stampUnionHash,
  tenantDigest,
  unionHash,
} from './hash.ts';

/** The canonical JSON as the replacer alone computes it (no fast path). */
function replacerJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (typeof v === 'number' && !Number.isFinite(v)) throw new Error('not JSON');
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) out[k] = (v as Record<string, unknown>)[k];
    return out;
  });
}

describe('sortedNumberRecordJson', () => {
  it('serialises a flat record of numbers in key order as the replacer does', () => {
    const sources = { 'MailRoute/a-b/r': 3, 'MailRoute/a/r': 1, 'Service/a/mx': 0, 'TenantPolicy/a/p': 2.5 };
    expect(sortedNumberRecordJson(sources)).toBe(replacerJson(sources));
    expect(canonicalJson(sources)).toBe(replacerJson(sources));
    expect(sortedNumberRecordJson({})).toBe('{}');
  });

  it('declines records that are not in key order, so the replacer sorts them', () => {
    // 'a-b/' sorts before 'a/' ('-' < '/') although namespace 'a' sorts before 'a-b'
    const unsorted = { 'MailRoute/a/r': 1, 'MailRoute/a-b/r': 2 };
    expect(sortedNumberRecordJson(unsorted)).toBeUndefined();
    expect(canonicalJson(unsorted)).toBe('{"MailRoute/a-b/r":2,"MailRoute/a/r":1}');
    expect(sortedNumberRecordJson({ 'a/x': 1, 'a-b/x': 2 })).toBeUndefined();
    expect(sortedNumberRecordJson({ 'a-b/x': 2, 'a/x': 1 })).toBe('{"a-b/x":2,"a/x":1}');
  });

  it('declines values that are not finite numbers', () => {
    expect(sortedNumberRecordJson({ a: 1, b: '2' })).toBeUndefined();
    expect(sortedNumberRecordJson({ a: 1, b: { c: 2 } })).toBeUndefined();
    expect(sortedNumberRecordJson({ a: undefined, b: 1 })).toBeUndefined();
    expect(sortedNumberRecordJson({ a: Number.NaN })).toBeUndefined();
    expect(() => canonicalJson({ a: Number.POSITIVE_INFINITY })).toThrow(/not JSON/);
    expect(sortedNumberRecordJson([1, 2])).toBeUndefined();
    expect(sortedNumberRecordJson(7)).toBeUndefined();
    expect(sortedNumberRecordJson(null)).toBeUndefined();
    const nested = { b: 1, a: { d: 2, c: 1 }, e: 'x' };
    expect(canonicalJson(nested)).toBe(replacerJson(nested));
  });

  it('integer-like keys (listed first, in numeric order, by Object.keys) are declined when out of text order', () => {
    const mixed = { b: 1, 10: 2, 9: 3 };
    expect(sortedNumberRecordJson(mixed)).toBeUndefined();
    expect(canonicalJson(mixed)).toBe(replacerJson(mixed));
    // the replacer's sorted copy lists them numerically again: the fast path must not change that
    expect(canonicalJson(mixed)).toBe('{"9":3,"10":2,"b":1}');
    expect(sortedNumberRecordJson({ 1: 1, 2: 2, a: 3 })).toBe('{"1":1,"2":2,"a":3}');
  });

  it('leaves the config hash as it was', () => {
    const sources: Record<string, number> = {};
    for (let i = 0; i < 1000; i++) sources[`MailRoute/t${String(i).padStart(4, '0')}/r`] = i;
    const config = { apiVersion: 'v', kind: 'RelayConfig', hash: '', sources, tenants: [] };
    const { hash: _h, ...rest } = config;
    const expected = `sha256:${createHash('sha256').update(replacerJson(rest)).digest('hex')}`;
    expect(hashConfig(config)).toBe(expected);
  });
});

describe('hashConfig', () => {
  it('takes the canonical JSON of the fields it is given, and only those', () => {
    const sources = { 'MailRoute/a/r': 1 };
    const config = { kind: 'RelayConfig', hash: '', sources, tenants: [] };
    const truth = hashConfig(config);
    expect(hashConfig(config)).toBe(truth);
    expect(hashConfig(config, { sources: canonicalJson(sources) })).toBe(truth);
    expect(hashConfig(config, { sources: undefined })).toBe(truth);
    expect(hashConfig(config, { sources: '{"MailRoute/a/r":2}' })).not.toBe(truth);
    expect(hashConfig(config, { hash: 'x', toString: 'x' })).toBe(truth);
    // the JSON in parts, hashed one by one: the same
    expect(hashConfig(config, { sources: ['{', '"MailRoute/a/r":1', '}'] })).toBe(truth);
    expect(unionHash(config, { sources: ['{"MailRoute/', 'a/r":1}'] })).toBe(unionHash(config));
    expect(hashConfig(config, { sources: ['{', '"MailRoute/a/r":2', '}'] })).not.toBe(truth);
  });

  it('does not read a field whose JSON it is given (a compiled config makes `sources` when read)', () => {
    const sources = { 'MailRoute/a/r': 1 };
    const config = { kind: 'RelayConfig', hash: '', sources, tenants: [] };
    const truth = hashConfig(config);
    const lazy = { kind: 'RelayConfig', hash: '', sources: {}, tenants: [] };
    Object.defineProperty(lazy, 'sources', {
      enumerable: true,
      get: () => {
        throw new Error('sources read');
      },
    });
    expect(hashConfig(lazy, { sources: canonicalJson(sources) })).toBe(truth);
  });
});

const sha = (text: string): string => createHash('sha256').update(text).digest('hex');

describe('tenant digests', () => {
  it('are the sha256 and UTF-8 length of the canonical JSON', () => {
    const t = { name: 'ä', routes: [{ b: 1, a: 2 }] };
    const json = canonicalJson(t);
    expect(tenantDigest(t)).toEqual({ sha256: sha(json), bytes: Buffer.byteLength(json) });
    expect(tenantDigest(t).bytes).toBe(json.length + 1);
  });

  it('compare content, not identity nor key order', () => {
    expect(sameTenant({ name: 'a', domains: ['x'] }, { domains: ['x'], name: 'a' })).toBe(true);
    expect(sameTenant({ name: 'a', domains: ['x'] }, { name: 'a', domains: ['y'] })).toBe(false);
  });

  it('are recorded by a document hash, without serialising the section again', () => {
    const t = { name: 'a', routes: [] as unknown[] };
    const doc = { kind: 'RelayConfig', hash: '', tenants: [t] };
    hashConfig(doc);
    // a section is never mutated once hashed: a digest taken later is the one recorded then
    t.routes.push({ name: 'added' });
    expect(tenantDigest(t).sha256).toBe(sha('{"name":"a","routes":[]}'));
  });
});

describe('unionHash', () => {
  const tenant = (name: string, domain: string) => ({ name, domains: [domain], routes: [] });
  const config = (...tenants: object[]) => ({
    apiVersion: 'relay.mailplus.io/v1alpha1',
    kind: 'RelayConfig',
    hash: '',
    sources: { 'TenantPolicy/a/p': 1 },
    tenants,
  });

  it('is sha256 over the canonical JSON with each tenant replaced by its digest, after a preamble', () => {
    const a = tenant('a', 'a.example');
    const c = config(a);
    const expected = sha(
      `mailplus.io/relay-config-union/v1\n{"apiVersion":"relay.mailplus.io/v1alpha1","kind":"RelayConfig","sources":{"TenantPolicy/a/p":1},"tenants":["${sha(canonicalJson(a))}"]}`,
    );
    expect(unionHash(c)).toBe(`sha256:${expected}`);
    expect(unionHash(c)).not.toBe(hashConfig(c));
  });

  it('depends on the content only: equal for copies, different when a tenant changes', () => {
    const one = config(tenant('a', 'a.example'), tenant('b', 'b.example'));
    const copy = structuredClone(one);
    expect(unionHash(copy)).toBe(unionHash(one));
    expect(unionHash(config(tenant('a', 'a.example'), tenant('b', 'c.example')))).not.toBe(unionHash(one));
    expect(unionHash(config(tenant('b', 'b.example'), tenant('a', 'a.example')))).not.toBe(unionHash(one));
    const otherSources = { ...one, sources: { 'TenantPolicy/a/p': 2 } };
    expect(unionHash(otherSources)).not.toBe(unionHash(one));
  });

  it('takes the JSON of known fields as hashConfig does', () => {
    const c = config(tenant('a', 'a.example'));
    expect(unionHash(c, { sources: canonicalJson(c.sources) })).toBe(unionHash(c));
  });

  it('is passed on by rehashLike; a document hash stays a document hash', () => {
    const union = stampUnionHash(config(tenant('a', 'a.example')));
    expect(union.hash).toBe(unionHash(union));
    const derived = rehashLike({ ...union, hash: '', tenants: [tenant('a', 'b.example')] }, union);
    expect(derived.hash).toBe(unionHash(derived));
    const doc = config(tenant('a', 'a.example'));
    doc.hash = hashConfig(doc);
    const derivedDoc = rehashLike({ ...doc, hash: '', tenants: [tenant('a', 'b.example')] }, doc);
    expect(derivedDoc.hash).toBe(hashConfig(derivedDoc));
  });
});
