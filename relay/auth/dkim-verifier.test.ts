import { generateKeyPairSync } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { dkimSign, dkimVerify } from 'mailauth';
import { RelaxedHash } from 'mailauth/lib/dkim/body/relaxed.js';
import { describe, expect, it } from 'vitest';
import { FastRelaxedHash, KeyRecords, noBareLf, relaxedCanonical, verifyDkim } from './dkim-verifier.ts';

// Pure code: the fast paths must give mailauth's own results byte for byte, whatever the input and
// however it is chunked. Resolvers answer from a table (the integration tests use NSD).

/** Deterministic pseudo-random generator (mulberry32), so a failing case can be replayed. */
function rng(seed: number) {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A body mostly in canonical form, with now and then what relaxed canonicalisation rewrites. */
function body(rand: () => number, size: number): Buffer {
  const pieces = [
    'abc',
    'def ghi',
    'x',
    '\r\n',
    '\r\n',
    '\r\n',
    ' ',
    '  ',
    '\t',
    '\n',
    '\r',
    ' \r\n',
    '\r\n\r\n\r\n',
  ];
  const clean = rand() < 0.5; // half of the bodies take the fast path throughout
  let s = '';
  while (s.length < size) {
    const p = pieces[Math.floor(rand() * pieces.length)];
    s += clean && /[\t ]{2}|\t|\n|\r| \r/.test(p) && p !== '\r\n' ? 'y' : p;
  }
  return Buffer.from(s, 'latin1');
}

function chunks(rand: () => number, buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let o = 0; o < buf.length; ) {
    const n = 1 + Math.floor(rand() * (rand() < 0.3 ? 8 : 200));
    out.push(buf.subarray(o, o + n));
    o += n;
  }
  return out;
}

describe('fast-path scans', () => {
  it('noBareLf: every LF after a CR, the byte before the chunk included', () => {
    expect(noBareLf(Buffer.from('a\r\nb\r\n'), undefined)).toBe(true);
    expect(noBareLf(Buffer.from('a\nb'), undefined)).toBe(false);
    expect(noBareLf(Buffer.from('\nb'), 0x0d)).toBe(true);
    expect(noBareLf(Buffer.from('\nb'), 0x61)).toBe(false);
  });
  it('relaxedCanonical: no tab, no run of spaces, no space before CRLF, no bare LF', () => {
    expect(relaxedCanonical(Buffer.from('a b\r\nc\r\n'))).toBe(true);
    for (const s of ['a\tb\r\n', 'a  b\r\n', 'a \r\n', 'a\nb\r\n', '\n'])
      expect(relaxedCanonical(Buffer.from(s))).toBe(false);
  });
});

describe('FastRelaxedHash', () => {
  it('gives the digest and byte count of mailauth RelaxedHash for any body and chunking, with and without l=', () => {
    const rand = rng(12);
    for (let i = 0; i < 400; i++) {
      const b = body(rand, Math.floor(rand() * 2000));
      const limit = rand() < 0.2 ? Math.floor(rand() * b.length) : undefined;
      const ref = new RelaxedHash('sha256', limit);
      ref.update(b);
      const fast = new FastRelaxedHash('sha256', limit);
      for (const c of chunks(rand, b)) fast.update(c);
      const want = (ref as unknown as { digest(e: string): string }).digest('base64');
      expect((fast as unknown as { digest(e: string): string }).digest('base64'), `case ${i}`).toBe(want);
      expect(fast.byteLength, `case ${i}`).toBe(ref.byteLength);
    }
  });
});

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
const keyRecord = (k: typeof publicKey) =>
  `v=DKIM1; k=rsa; p=${k.export({ type: 'spki', format: 'der' }).toString('base64')}`;

async function sign(msg: Buffer, canonicalization: string, key = privateKey): Promise<Buffer> {
  const pem = key.export({ type: 'pkcs8', format: 'pem' }).toString();
  const r = await dkimSign(msg, {
    canonicalization,
    signatureData: [{ signingDomain: 'a.example', selector: 's1', privateKey: pem }],
  } as never);
  expect(r.signatures).toMatch(/^DKIM-Signature: /);
  return Buffer.concat([Buffer.from(r.signatures), msg]);
}

function feed(
  buf: Buffer[],
  ...rest: Parameters<typeof verifyDkim> extends [unknown, ...infer R] ? R : never
) {
  const input = new PassThrough();
  const p = verifyDkim(input, ...rest);
  for (const c of buf) input.write(c);
  input.end();
  return p;
}

describe('verifyDkim', () => {
  it('gives the results of mailauth dkimVerify, for signed, altered and bare-LF messages in any chunking', async () => {
    const rand = rng(7);
    const records: Record<string, string> = { 's1._domainkey.a.example': keyRecord(publicKey) };
    const resolver = async (name: string) => {
      if (records[name]) return [[records[name]]];
      throw Object.assign(new Error(`queryTxt ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
    };
    const keys = new KeyRecords();
    const seen = new Set<string>();
    for (let i = 0; i < 60; i++) {
      const head = `From: <a@a.example>\r\nTo: <r@example.com>\r\nSubject: case ${i}\r\n\r\n`;
      const msg = Buffer.concat([Buffer.from(head), body(rand, 300 + Math.floor(rand() * 3000))]);
      let signed = await sign(msg, rand() < 0.7 ? 'relaxed/relaxed' : 'simple/simple');
      if (rand() < 0.3) signed = Buffer.from(signed.toString('latin1').replace('abc', 'abd'), 'latin1');
      if (rand() < 0.2) signed = Buffer.from(signed.toString('latin1').replaceAll('\r\n', '\n'), 'latin1');
      const want = await dkimVerify(signed, { resolver, sender: 'x@b.example' } as never);
      const got = await feed(chunks(rand, signed), resolver, 'x@b.example', keys);
      const pick = (r: typeof want) =>
        r.results.map((s) => ({
          status: s.status,
          info: s.info,
          bodyHash: (s as { bodyHash?: string }).bodyHash,
        }));
      expect(pick(got), `case ${i}`).toEqual(pick(want));
      expect(got.headerFrom).toEqual(want.headerFrom);
      for (const r of got.results) seen.add(r.status.result);
    }
    // the cases cover passing and failing signatures
    expect([...seen].sort()).toEqual(expect.arrayContaining(['neutral', 'pass']));
  });

  it('parses a key record once across messages, and takes a changed record at once', async () => {
    const records: Record<string, string> = { 's1._domainkey.a.example': keyRecord(publicKey) };
    let lookups = 0;
    const resolver = async (name: string) => {
      lookups++;
      return [[records[name]]];
    };
    const keys = new KeyRecords();
    const a = await keys
      .forMessage(resolver)
      .get('DKIM', 's1._domainkey.a.example', undefined, { hashAlgo: 'sha256' });
    const b = await keys
      .forMessage(resolver)
      .get('DKIM', 's1._domainkey.a.example', undefined, { hashAlgo: 'sha256' });
    expect(b).toBe(a); // the same parsed key object
    expect(lookups).toBe(2); // but the record was asked for each message

    const msg = Buffer.from('From: <a@a.example>\r\nSubject: rotated\r\n\r\nbody\r\n');
    const rotated = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const signedNew = await sign(msg, 'relaxed/relaxed', rotated.privateKey);
    const before = await feed([signedNew], resolver, 'x@b.example', keys);
    expect(before.results[0].status.result).not.toBe('pass');
    records['s1._domainkey.a.example'] = keyRecord(rotated.publicKey);
    const after = await feed([signedNew], resolver, 'x@b.example', keys);
    expect(after.results[0].status.result).toBe('pass');
  });
});
