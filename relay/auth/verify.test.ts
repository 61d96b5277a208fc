import { generateKeyPairSync } from 'node:crypto';
import { dkimSign } from 'mailauth';
import { describe, expect, it } from 'vitest';
import { MessageVerifier, type Resolve, type SpfVerdict } from './verify.ts';

// Pure verification paths with a resolver answering from a table (the integration tests use NSD).
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
const records: Record<string, string> = {
  's1._domainkey.a.example': `v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`,
  '_dmarc.a.example': 'v=DMARC1; p=reject',
};
const resolve: Resolve = async (name, type) => {
  const r = type === 'TXT' ? records[name] : undefined;
  if (r) return [[r]];
  throw Object.assign(new Error(`queryTxt ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
};
const spf: Promise<SpfVerdict> = Promise.resolve({ result: 'none', info: 'spf=none' });

async function verify(message: Buffer, chunk: number) {
  const v = new MessageVerifier(spf, resolve, 'x@b.example');
  for (let o = 0; o < message.length; o += chunk) v.write(message.subarray(o, o + chunk));
  return v.finish();
}

describe('MessageVerifier', () => {
  const plain =
    'From: <a@a.example>\r\nTo: <r@example.com>\r\nSubject: hi\r\n\r\n..a stuffed line\r\nbody\r\n';

  it('verifies a signed message fed in small chunks, header section split across them (dot-unstuffed)', async () => {
    const unstuffed = plain.replace('\r\n..', '\r\n.');
    const r = await dkimSign(unstuffed, {
      signatureData: [
        {
          signingDomain: 'a.example',
          selector: 's1',
          privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }),
        },
      ],
    } as never);
    expect(r.signatures).toMatch(/^DKIM-Signature: /);
    const out = await verify(Buffer.from(r.signatures + plain), 7);
    expect(out.outcome).toMatchObject({ dkim: ['pass'], dmarc: 'pass', domain: 'a.example' });
    expect(out.results[1]).toMatch(/^dkim=pass header\.i=@a\.example header\.s=s1 /);
  });

  it('an unsigned message: dkim=none, DMARC still evaluated from the header section alone', async () => {
    const out = await verify(Buffer.from(plain), 5);
    expect(out.outcome).toMatchObject({
      spf: 'none',
      dkim: ['none'],
      arc: 'none',
      dmarc: 'fail',
      policy: 'reject',
    });
  });

  it('a message without an empty line is all header section', async () => {
    const out = await verify(Buffer.from('From: <a@a.example>\r\nSubject: hi\r\n'), 3);
    expect(out.outcome).toMatchObject({ dkim: ['none'], dmarc: 'fail' });
  });
});
