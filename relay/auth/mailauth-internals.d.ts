// Types for the parts of mailauth 7 (CommonJS, typed only at its entry point) that the relay's DKIM
// verifier builds on: the streaming verifier, the relaxed body hash and the key-record parser.
declare module 'mailauth/lib/dkim/dkim-verifier.js' {
  import { Writable } from 'node:stream';

  export interface KeyCache {
    resolver: unknown;
    get(
      type: string,
      name: string,
      minBitLength?: number,
      options?: { strict?: boolean; hashAlgo?: string },
    ): Promise<unknown>;
  }

  export interface BodyHasher {
    update(chunk: Buffer | null, final?: boolean): void;
  }

  export class DkimVerifier extends Writable {
    constructor(options: { resolver: unknown; sender?: string });
    keyCache: KeyCache;
    arc: Record<string, unknown>;
    results: unknown[];
    headerFrom: string[];
    fromFields: number;
    envelopeFrom: string | false;
    bodyHashes: Map<string, BodyHasher>;
    lastByte: number | undefined;
    addBodyHash(bodyCanon: string, hashAlgo: string, maxBodyLength?: number): string;
    ensureLinebreaks(input: Buffer): Generator<Buffer>;
  }
}

declare module 'mailauth/lib/dkim/body/relaxed.js' {
  export class RelaxedHash {
    constructor(algorithm?: string, maxBodyLength?: number);
    remainder: Buffer | false;
    byteLength: number;
    update(chunk: Buffer | null, final?: boolean): void;
    _pushBodyHash(chunk: Buffer): void;
  }
}

declare module 'mailauth/lib/tools.js' {
  export function getPublicKey(
    type: string,
    name: string,
    minBitLength: number | undefined,
    resolver: (name: string, rrtype: string) => Promise<unknown>,
    options?: { strict?: boolean; hashAlgo?: string },
  ): Promise<unknown>;
  export function toALabel(name: string): string;
}
