import type { Readable } from 'node:stream';
import type { dkimVerify } from 'mailauth';
import { RelaxedHash } from 'mailauth/lib/dkim/body/relaxed.js';
import { DkimVerifier, type KeyCache } from 'mailauth/lib/dkim/dkim-verifier.js';
import { getPublicKey, toALabel } from 'mailauth/lib/tools.js';
import { TtlCache } from '../dns/ttl-cache.ts';

/**
 * mailauth's streaming DKIM verifier with three costs taken out, its verdicts unchanged (the
 * checks, the canonicalisation rules and the signature verification stay mailauth's):
 *
 * - Key records are parsed once, not per message: a parsed key is kept by (selector, domain,
 *   lookup options, record text). The record itself still comes from DNS for every message (from
 *   the relay's DNS cache within its TTL), so a changed or revoked key takes effect as DNS says.
 * - Bare-LF repair (`ensureLinebreaks`) and relaxed body canonicalisation are per-byte JavaScript
 *   loops (about 2.5 ms per MiB each). A chunk in which they would change nothing — no bare LF;
 *   for relaxed, no tab, no run of spaces, no space before a line end — is found with native
 *   Buffer.indexOf scans and passed on whole; any other chunk goes through mailauth's own code.
 */

export type Resolver = (name: string, rrtype: string) => Promise<unknown>;
export type DkimResult = Awaited<ReturnType<typeof dkimVerify>>;

const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const TWO_SPACES = Buffer.from('  ');
const SPACE_CRLF = Buffer.from(' \r\n');

/** True when every LF in buf follows a CR (`before`: the byte preceding buf, or undefined). */
export function noBareLf(buf: Buffer, before: number | undefined): boolean {
  for (let p = buf.indexOf(LF); p >= 0; p = buf.indexOf(LF, p + 1)) {
    if ((p === 0 ? before : buf[p - 1]) !== CR) return false;
  }
  return true;
}

/**
 * Complete lines that relaxed body canonicalisation (RFC 6376 §3.4.4) leaves as they are: CRLF line
 * ends only, no tab, no run of spaces, no space before a line end. (`lines` starts at a line start.)
 */
export function relaxedCanonical(lines: Buffer): boolean {
  return (
    lines.indexOf(TAB) < 0 &&
    lines.indexOf(TWO_SPACES) < 0 &&
    lines.indexOf(SPACE_CRLF) < 0 &&
    noBareLf(lines, undefined)
  );
}

/**
 * mailauth's relaxed body hash, skipping its per-byte scan for lines already in canonical form. The
 * partial line held from the previous chunk is joined with this chunk's first line only, so a
 * chunk is not copied.
 */
export class FastRelaxedHash extends RelaxedHash {
  override update(chunk: Buffer | null, final?: boolean): void {
    if (final || !chunk?.length) {
      super.update(chunk, final);
      return;
    }
    const counted = this.byteLength + chunk.length;
    let rest = chunk;
    const held = this.remainder || undefined;
    if (held?.length) {
      const firstLf = chunk.indexOf(LF);
      if (firstLf < 0) {
        // still inside one line: hold it (mailauth does the same)
        this.remainder = Buffer.concat([held, chunk]);
        this.byteLength = counted;
        return;
      }
      const line = Buffer.concat([held, chunk.subarray(0, firstLf + 1)]);
      this.remainder = false;
      this.completeLines(line);
      rest = chunk.subarray(firstLf + 1);
    }
    // `rest` starts at a line start
    const lastLf = rest.lastIndexOf(LF);
    if (lastLf >= 0) this.completeLines(rest.subarray(0, lastLf + 1));
    this.remainder = lastLf + 1 < rest.length ? rest.subarray(lastLf + 1) : false;
    // mailauth counts the bytes it was given; every byte of the chunk exactly once
    this.byteLength = counted;
  }

  /** Whole lines (from a line start to a LF), with nothing held: hashed as they are, or by mailauth. */
  private completeLines(lines: Buffer): void {
    if (relaxedCanonical(lines)) this._pushBodyHash(lines);
    else super.update(lines, false);
  }
}

/**
 * Parsed DKIM/ARC key records shared by all messages, bounded (entries, and an hour each). Keyed by
 * the record text as well, so only an unchanged record reuses its parsed key.
 */
export class KeyRecords {
  private readonly parsed: TtlCache<Promise<unknown>>;
  private static readonly KEEP_MS = 3_600_000;

  constructor(maxEntries = 1000, now: () => number = Date.now) {
    this.parsed = new TtlCache({ maxEntries, now });
  }

  /** A per-message key cache (mailauth's createKeyCache contract) backed by the shared parsed keys. */
  forMessage(resolver: Resolver): KeyCache {
    const lookups = new Map<string, Promise<unknown>>();
    return {
      resolver,
      get: (type, name, minBitLength, options = {}) => {
        const key = [type, !!options.strict, minBitLength ?? '', options.hashAlgo ?? '', name].join(':');
        let lookup = lookups.get(key);
        if (!lookup) {
          lookup = this.lookup(key, type, name, minBitLength, options, resolver);
          // as in mailauth: a prefetched lookup may fail before anything awaits it
          lookup.catch(() => false);
          lookups.set(key, lookup);
        }
        return lookup;
      },
    };
  }

  private async lookup(
    key: string,
    type: string,
    name: string,
    minBitLength: number | undefined,
    options: { strict?: boolean; hashAlgo?: string },
    resolver: Resolver,
  ): Promise<unknown> {
    // the same question getPublicKey asks; its DNS errors reach the caller as they would from there
    const record = await resolver(toALabel(name), 'TXT');
    const textKey = `${key}\n${JSON.stringify(record)}`;
    let parsed = this.parsed.get(textKey);
    if (!parsed) {
      parsed = getPublicKey(type, name, minBitLength, async () => record, options);
      parsed.catch(() => false);
      this.parsed.set(textKey, parsed, KeyRecords.KEEP_MS);
    }
    return parsed;
  }
}

class Verifier extends DkimVerifier {
  constructor(resolver: Resolver, sender: string, keys: KeyRecords) {
    super({ resolver, sender });
    this.keyCache = keys.forMessage(resolver);
    // the ARC checks of the message share it (mailauth hands it on as a hidden property)
    Object.defineProperty(this.arc, 'keyCache', { value: this.keyCache, configurable: true, writable: true });
  }

  override *ensureLinebreaks(input: Buffer): Generator<Buffer> {
    if (input.length && noBareLf(input, this.lastByte)) {
      this.lastByte = input[input.length - 1];
      yield input;
      return;
    }
    yield* super.ensureLinebreaks(input);
  }

  override addBodyHash(bodyCanon: string, hashAlgo: string, maxBodyLength?: number): string {
    if (bodyCanon.split('/').pop()?.trim().toLowerCase() !== 'relaxed') {
      return super.addBodyHash(bodyCanon, hashAlgo, maxBodyLength);
    }
    // the verifier finds a signature's hasher by the key returned here
    const key = ['relaxed', hashAlgo, maxBodyLength].join(':');
    // registered from the header section, before the first body byte
    if (!this.bodyHashes.has(key)) this.bodyHashes.set(key, new FastRelaxedHash(hashAlgo, maxBodyLength));
    return key;
  }
}

/** dkimVerify(input, { resolver, sender }) of mailauth, with the speed-ups above. */
export function verifyDkim(
  input: Readable,
  resolver: Resolver,
  sender: string,
  keys: KeyRecords,
): Promise<DkimResult> {
  const v = new Verifier(resolver, sender, keys);
  return new Promise<DkimResult>((resolve, reject) => {
    input.on('error', reject);
    v.on('error', reject);
    v.on('finish', () => {
      const result = {
        headerFrom: v.headerFrom,
        fromFields: v.fromFields,
        envelopeFrom: v.envelopeFrom,
        results: v.results,
      };
      // as mailauth's dkimVerify: the ARC data rides along, not enumerable
      Object.defineProperty(result, 'arc', { value: v.arc, enumerable: false });
      resolve(result as unknown as DkimResult);
    });
    input.pipe(v);
  });
}
