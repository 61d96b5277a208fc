import { PassThrough } from 'node:stream';
import { arc, dmarc, spf } from 'mailauth';
import { DotUnstuffer } from '../capture/unstuff.ts';
import type { AuthOutcome } from './decide.ts';
import { type DkimResult, KeyRecords, verifyDkim } from './dkim-verifier.ts';
import { headerSectionEnd } from './headers.ts';

/**
 * One transaction's sender authentication, with mailauth (SPF RFC 7208, DKIM RFC 6376, ARC RFC
 * 8617, DMARC RFC 9989) asking DNS through the relay's own resolver (--dns-server, timeouts and
 * tries). SPF starts as soon as the envelope is known (client IP, HELO, MAIL FROM), before DATA;
 * DKIM and ARC hash the message as it streams past (unstuffed, never stored); DMARC is decided
 * from all three at the end of DATA.
 */

export type Resolve = (name: string, rrtype: string) => Promise<unknown>;

export interface Envelope {
  ip: string;
  helo?: string;
  /** MAIL FROM; '' for the null sender (the HELO identity is checked then). */
  sender: string;
}

export interface AuthResults {
  outcome: AuthOutcome;
  /** Authentication-Results resinfo entries (RFC 8601 §2.2), SPF first. */
  results: string[];
}

export interface SpfVerdict {
  result: string;
  info: string;
  /** The domain SPF passed for (for DMARC alignment). */
  domain?: string;
}

const SPF_MAX_ELAPSED_MS = 20_000;
/** A header section longer than this is fed to the verifier as it comes, without looking for signatures. */
const HEAD_SCAN_BYTES = 1024 * 1024;
const SIGNED = /^(dkim-signature|arc-seal|arc-message-signature|arc-authentication-results)[ \t]*:/im;

const oneLine = (s: string) => s.replace(/\r?\n[ \t]*/g, ' ').trim();

/** Parsed DKIM and ARC keys, shared by the relay's messages (see dkim-verifier.ts). */
const KEYS = new KeyRecords();

/** SPF for the envelope; an exception from the library is a temperror, never a crash. */
export async function checkSpf(env: Envelope, resolver: Resolve, mta: string): Promise<SpfVerdict> {
  try {
    const r = await spf({
      sender: env.sender,
      ip: env.ip,
      helo: env.helo,
      mta,
      resolver: resolver as never,
      // RFC 7208 §4.6.4: bound the whole evaluation (the client's DATA waits for it), 20 s at least
      maxElapsedTime: SPF_MAX_ELAPSED_MS,
    });
    const result = r.status.result;
    return {
      result,
      info: oneLine(r.info),
      ...(result === 'pass' && r.domain ? { domain: r.domain } : {}),
    };
  } catch (err) {
    return { result: 'temperror', info: `spf=temperror (${oneLine((err as Error).message)})` };
  }
}

export class MessageVerifier {
  private readonly input = new PassThrough();
  private readonly unstuffer = new DotUnstuffer();
  private readonly dkim: Promise<DkimResult>;
  private readonly resolver: Resolve;
  private readonly spf: Promise<SpfVerdict>;
  private ended = false;
  /** The header section until its end is seen; undefined once it has been fed. */
  private head: Buffer[] | undefined = [];
  private headBytes = 0;
  /** Unsigned message: the body has nothing to verify and is not hashed at all. */
  private skipBody = false;

  constructor(spfVerdict: Promise<SpfVerdict>, resolver: Resolve, sender: string) {
    this.spf = spfVerdict;
    this.resolver = resolver;
    this.dkim = verifyDkim(this.input, resolver, sender, KEYS);
    // surfaced by finish(); an early rejection must not be unhandled
    this.dkim.catch(() => undefined);
  }

  /**
   * The raw (dot-stuffed) DATA bytes as the relay forwards them. A message without DKIM-Signature or
   * ARC header fields gets dkim=none and arc=none whatever its body: the verifier is given only its
   * header section (DMARC needs From), which spares hashing the body (about 10 ms of CPU per MiB).
   */
  write(chunk: Buffer): void {
    if (this.ended || this.skipBody) return;
    const data = this.unstuffer.push(chunk);
    if (!this.head) {
      this.input.write(data);
      return;
    }
    this.head.push(data);
    this.headBytes += data.length;
    const all = this.head.length === 1 ? this.head[0] : Buffer.concat(this.head);
    const end = headerSectionEnd(all);
    if (end < 0 && this.headBytes <= HEAD_SCAN_BYTES) {
      this.head = [all];
      return;
    }
    this.head = undefined;
    if (end >= 0 && !SIGNED.test(all.subarray(0, end).toString('latin1'))) {
      this.input.write(all.subarray(0, end));
      this.skipBody = true;
      return;
    }
    this.input.write(all);
  }

  /** The message was not completed (the transaction failed): stop hashing. */
  abort(): void {
    this.ended = true;
    this.input.destroy();
  }

  async finish(): Promise<AuthResults> {
    this.ended = true;
    if (this.head) this.input.write(Buffer.concat(this.head));
    this.head = undefined;
    this.input.end();
    const spfV = await this.spf;
    const results = [spfV.info];
    let d: DkimResult;
    try {
      d = await this.dkim;
    } catch (err) {
      const why = oneLine((err as Error).message);
      results.push(`dkim=permerror (${why})`);
      return {
        outcome: { spf: spfV.result, dkim: ['permerror'], arc: 'none', dmarc: 'none' },
        results,
      };
    }
    const sigs = d.results ?? [];
    const dkim = sigs.length ? sigs.map((s) => s.status.result) : ['none'];
    if (sigs.length) for (const s of sigs) results.push(oneLine(s.info));
    else results.push('dkim=none');
    const a = await arc(d.arc as never, { resolver: this.resolver as never }).catch(() => undefined);
    const arcResult = a?.status.result ?? 'none';
    if (a?.info) results.push(oneLine(a.info));
    let dmarcFailed = false;
    const m = d.headerFrom
      ? (await dmarc({
          headerFrom: d.headerFrom,
          fromFields: d.fromFields,
          spfDomains: spfV.domain ? [spfV.domain] : [],
          dkimDomains: sigs
            .filter((s) => s.status.result === 'pass' && s.signingDomain)
            .map((s) => ({ id: s.id, domain: s.signingDomain as string, aligned: s.status.aligned })),
          arcResult: a,
          resolver: this.resolver as never,
        }).catch(() => {
          // the record could not be fetched (mailauth reports most DNS failures itself)
          dmarcFailed = true;
          return undefined;
        })) || undefined
      : undefined;
    const dmarcResult = m ? m.status.result : dmarcFailed ? 'temperror' : 'none';
    if (m?.info) results.push(oneLine(m.info));
    else results.push(`dmarc=${dmarcResult}`);
    return {
      outcome: {
        spf: spfV.result,
        dkim,
        arc: arcResult,
        dmarc: dmarcResult,
        ...(m && m.status.result === 'fail' ? { policy: m.policy } : {}),
        ...(m?.status.header?.from ? { domain: m.status.header.from } : {}),
      },
      results,
    };
  }
}
