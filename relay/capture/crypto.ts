// Capture encryption: hybrid public-key encryption to the TENANT's key, so that whoever runs the
// platform cannot read captured messages. node:crypto only.
//
// Key agreement: X25519 (ephemeral key + HKDF-SHA256) or RSA-OAEP-SHA256 key wrap (RSA ≥ 2048).
// Content: AES-256-GCM over fixed-size chunks (a STREAM-like construction): nonce = 7-byte random
// prefix ‖ 32-bit chunk counter ‖ 1-byte "last chunk" flag, AAD = SHA-256 of the header. Chunks
// cannot be reordered, dropped, truncated at the end or moved to another capture; memory stays at
// one chunk on both sides, whatever the message size.
//
// File layout:  "MPCAPv1\n" | u32 header length | header (JSON) | chunks
//   chunk:      u32 ciphertext length | ciphertext | 16-byte GCM tag
import {
  constants,
  createCipheriv,
  createDecipheriv,
  createHash,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
  privateDecrypt,
  publicEncrypt,
  randomBytes,
} from 'node:crypto';
import { parseRecipientKey } from '../../contract/capture/key.ts';

export const MAGIC = Buffer.from('MPCAPv1\n');
export const DEFAULT_CHUNK_SIZE = 64 * 1024;
const MAX_CHUNK_SIZE = 1024 * 1024;
const MAX_HEADER = 64 * 1024;
const TAG = 16;
const INFO = 'mailplus-capture-v1';

export type CaptureAlg = 'X25519-HKDF-SHA256/A256GCM-STREAM' | 'RSA-OAEP-256/A256GCM-STREAM';

export interface CaptureHeader {
  v: 1;
  alg: CaptureAlg;
  /** X25519: the ephemeral public key (SPKI DER, base64). */
  epk?: string;
  /** RSA: the wrapped content key (base64). */
  wrappedKey?: string;
  salt: string;
  noncePrefix: string;
  chunkSize: number;
  /** Public metadata, authenticated: which tenant/transaction this belongs to. */
  tenant: string;
  txid: string;
  createdAt: string;
  /** sha256 of the recipient public key (SPKI DER), hex: which key decrypts it. */
  recipientKey: string;
}

export function keyFingerprint(key: KeyObject): string {
  return createHash('sha256')
    .update(key.export({ type: 'spki', format: 'der' }))
    .digest('hex');
}

/** The tenant side: a new key pair, PEM. */
export function generateCaptureKeyPair(type: 'x25519' | 'rsa' = 'x25519'): {
  publicKey: string;
  privateKey: string;
} {
  const pair =
    type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 3072 }) : generateKeyPairSync('x25519');
  return {
    publicKey: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    privateKey: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  };
}

function nonce(prefix: Buffer, counter: number, last: boolean): Buffer {
  const n = Buffer.alloc(12);
  prefix.copy(n, 0, 0, 7);
  n.writeUInt32BE(counter, 7);
  n[11] = last ? 1 : 0;
  return n;
}

function x25519Key(shared: Buffer, salt: Buffer, epkDer: Buffer, recipientDer: Buffer): Buffer {
  const info = Buffer.concat([Buffer.from(INFO), epkDer, recipientDer]);
  return Buffer.from(hkdfSync('sha256', shared, salt, info, 32));
}

/**
 * Streaming encryptor. push() returns the bytes to store so far (the header first), final() the
 * rest. At most one chunk of plaintext is held.
 */
export class CaptureEncryptor {
  private readonly key: Buffer;
  private readonly prefix: Buffer;
  private readonly aad: Buffer;
  private readonly chunkSize: number;
  private headerBytes: Buffer | undefined;
  private pending: Buffer[] = [];
  private pendingLen = 0;
  private counter = 0;
  private done = false;

  constructor(
    recipientPem: string,
    meta: { tenant: string; txid: string; createdAt: string },
    chunkSize = DEFAULT_CHUNK_SIZE,
  ) {
    const parsed = parseRecipientKey(recipientPem);
    if (!parsed.ok) throw new Error(`capture public key ${parsed.error}`);
    const recipient = parsed.key;
    const recipientDer = recipient.export({ type: 'spki', format: 'der' });
    const salt = randomBytes(32);
    this.prefix = randomBytes(7);
    this.chunkSize = chunkSize;
    const header: CaptureHeader = {
      v: 1,
      alg: 'X25519-HKDF-SHA256/A256GCM-STREAM',
      salt: salt.toString('base64'),
      noncePrefix: this.prefix.toString('base64'),
      chunkSize,
      tenant: meta.tenant,
      txid: meta.txid,
      createdAt: meta.createdAt,
      recipientKey: keyFingerprint(recipient),
    };
    if (recipient.asymmetricKeyType === 'x25519') {
      const eph = generateKeyPairSync('x25519');
      const epkDer = eph.publicKey.export({ type: 'spki', format: 'der' });
      const shared = diffieHellman({ privateKey: eph.privateKey, publicKey: recipient });
      this.key = x25519Key(shared, salt, epkDer, recipientDer);
      header.epk = epkDer.toString('base64');
    } else {
      this.key = randomBytes(32);
      header.alg = 'RSA-OAEP-256/A256GCM-STREAM';
      header.wrappedKey = publicEncrypt(
        { key: recipient, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
        this.key,
      ).toString('base64');
    }
    const json = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(4);
    len.writeUInt32BE(json.length);
    this.headerBytes = Buffer.concat([MAGIC, len, json]);
    this.aad = createHash('sha256').update(json).digest();
  }

  private seal(plain: Buffer, last: boolean): Buffer {
    const c = createCipheriv('aes-256-gcm', this.key, nonce(this.prefix, this.counter++, last));
    c.setAAD(this.aad);
    const body = Buffer.concat([c.update(plain), c.final()]);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length);
    return Buffer.concat([len, body, c.getAuthTag()]);
  }

  private takeHeader(out: Buffer[]): void {
    if (this.headerBytes) {
      out.push(this.headerBytes);
      this.headerBytes = undefined;
    }
  }

  push(plain: Buffer): Buffer[] {
    if (this.done) throw new Error('capture encryptor: push after final');
    const out: Buffer[] = [];
    this.takeHeader(out);
    let data = plain;
    while (data.length > 0) {
      // a full chunk is sealed only once more data follows: the last chunk carries the flag
      if (this.pendingLen === this.chunkSize) {
        out.push(this.seal(Buffer.concat(this.pending), false));
        this.pending = [];
        this.pendingLen = 0;
      }
      const take = Math.min(this.chunkSize - this.pendingLen, data.length);
      this.pending.push(data.subarray(0, take));
      this.pendingLen += take;
      data = data.subarray(take);
    }
    return out;
  }

  final(): Buffer[] {
    if (this.done) throw new Error('capture encryptor: final twice');
    this.done = true;
    const out: Buffer[] = [];
    this.takeHeader(out);
    out.push(this.seal(Buffer.concat(this.pending), true));
    this.pending = [];
    this.key.fill(0);
    return out;
  }
}

/** Streaming decryptor (tenant side). push() returns plaintext; end() throws if the capture is truncated. */
export class CaptureDecryptor {
  private readonly privateKey: KeyObject;
  private buf: Buffer = Buffer.alloc(0);
  private header: CaptureHeader | undefined;
  private key: Buffer | undefined;
  private prefix: Buffer | undefined;
  private aad: Buffer | undefined;
  private counter = 0;
  private finished = false;

  constructor(privatePem: string) {
    try {
      this.privateKey = createPrivateKey({ key: privatePem, format: 'pem' });
    } catch (err) {
      throw new Error(`the private key cannot be parsed: ${(err as Error).message}`);
    }
  }

  get metadata(): CaptureHeader | undefined {
    return this.header;
  }

  private readHeader(): boolean {
    if (this.buf.length < MAGIC.length + 4) return false;
    if (!this.buf.subarray(0, MAGIC.length).equals(MAGIC))
      throw new Error('not a Mail-Plus capture (bad magic)');
    const n = this.buf.readUInt32BE(MAGIC.length);
    if (n > MAX_HEADER) throw new Error('capture header too large');
    if (this.buf.length < MAGIC.length + 4 + n) return false;
    const json = this.buf.subarray(MAGIC.length + 4, MAGIC.length + 4 + n);
    const h = JSON.parse(json.toString('utf8')) as CaptureHeader;
    if (h.v !== 1) throw new Error(`unsupported capture version ${String(h.v)}`);
    if (!Number.isInteger(h.chunkSize) || h.chunkSize < 1 || h.chunkSize > MAX_CHUNK_SIZE)
      throw new Error('bad chunk size in capture header');
    const pub = createPublicKey(this.privateKey);
    if (keyFingerprint(pub) !== h.recipientKey)
      throw new Error(
        'this capture was encrypted to another key (recipientKey does not match the private key)',
      );
    const salt = Buffer.from(h.salt, 'base64');
    if (h.alg === 'X25519-HKDF-SHA256/A256GCM-STREAM' && h.epk) {
      const epkDer = Buffer.from(h.epk, 'base64');
      const epk = createPublicKey({ key: epkDer, format: 'der', type: 'spki' });
      const shared = diffieHellman({ privateKey: this.privateKey, publicKey: epk });
      this.key = x25519Key(shared, salt, epkDer, pub.export({ type: 'spki', format: 'der' }));
    } else if (h.alg === 'RSA-OAEP-256/A256GCM-STREAM' && h.wrappedKey) {
      this.key = privateDecrypt(
        { key: this.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
        Buffer.from(h.wrappedKey, 'base64'),
      );
    } else {
      throw new Error(`unsupported capture algorithm ${String(h.alg)}`);
    }
    this.prefix = Buffer.from(h.noncePrefix, 'base64');
    this.aad = createHash('sha256').update(json).digest();
    this.header = h;
    this.buf = this.buf.subarray(MAGIC.length + 4 + n);
    return true;
  }

  push(data: Buffer): Buffer[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, data]) : data;
    const out: Buffer[] = [];
    if (!this.header && !this.readHeader()) return out;
    const h = this.header as CaptureHeader;
    for (;;) {
      if (this.buf.length === 0) break;
      if (this.finished) throw new Error('data after the last chunk of the capture');
      if (this.buf.length < 4) break;
      const n = this.buf.readUInt32BE(0);
      if (n > h.chunkSize) throw new Error('capture chunk larger than its header allows');
      if (this.buf.length < 4 + n + TAG) break;
      const body = this.buf.subarray(4, 4 + n);
      const tag = this.buf.subarray(4 + n, 4 + n + TAG);
      this.buf = this.buf.subarray(4 + n + TAG);
      // a chunk shorter than chunkSize can only be the last one; a full one may be either
      const tryOpen = (last: boolean): Buffer | undefined => {
        const d = createDecipheriv(
          'aes-256-gcm',
          this.key as Buffer,
          nonce(this.prefix as Buffer, this.counter, last),
        );
        d.setAAD(this.aad as Buffer);
        d.setAuthTag(tag);
        try {
          return Buffer.concat([d.update(body), d.final()]);
        } catch {
          return undefined;
        }
      };
      let plain = n < h.chunkSize ? undefined : tryOpen(false);
      let last = false;
      if (!plain) {
        plain = tryOpen(true);
        last = true;
      }
      if (!plain)
        throw new Error(`capture chunk ${this.counter} failed authentication (corrupt or tampered)`);
      this.counter++;
      if (last) this.finished = true;
      out.push(plain);
    }
    return out;
  }

  end(): void {
    if (!this.header) throw new Error('capture is truncated (no complete header)');
    if (!this.finished || this.buf.length > 0) throw new Error('capture is truncated (last chunk missing)');
    this.key?.fill(0);
  }
}

/** Whole-buffer helpers (tests, small captures). */
export function encryptCapture(
  pem: string,
  plain: Buffer,
  meta: { tenant: string; txid: string; createdAt: string },
  chunkSize?: number,
): Buffer {
  const e = new CaptureEncryptor(pem, meta, chunkSize);
  return Buffer.concat([...e.push(plain), ...e.final()]);
}

export function decryptCapture(privatePem: string, data: Buffer): Buffer {
  const d = new CaptureDecryptor(privatePem);
  const out = d.push(data);
  d.end();
  return Buffer.concat(out);
}
