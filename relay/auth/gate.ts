import type { TenantAuthentication } from '../../contract/config/types.gen.ts';
import { type AuthDecision, type AuthOutcome, decideAuthentication } from './decide.ts';
import { authResultsHeader, headerSectionEnd, stripOwnAuthResults } from './headers.ts';
import type { MessageVerifier, SpfVerdict } from './verify.ts';

/**
 * Sits between the client's DATA bytes and the upstream for a tenant with sender authentication:
 * every byte goes to the verifier; the message is held in memory up to holdBytes, so that the
 * Authentication-Results header can carry every result, and is written to the upstream (header
 * first, forged headers claiming our authserv-id removed) only once the decision is made at the
 * end of DATA. A larger message is streamed from the moment it passes holdBytes, with a header
 * carrying the SPF result only (known before DATA); enforce still decides on all checks before the
 * upstream is given the final dot.
 */

export interface GateSink {
  write(chunk: Buffer): boolean;
}

export interface GateResult {
  decision: AuthDecision;
  /** annotated (every result) | annotated_spf_only (streamed past holdBytes). */
  annotation: 'annotated' | 'annotated_spf_only';
  outcome: AuthOutcome;
  /** Forged Authentication-Results fields removed. */
  removed: number;
}

export class AuthGate {
  private held: Buffer[] = [];
  private heldBytes = 0;
  private streaming = false;
  private removed = 0;
  private readonly policy: TenantAuthentication;
  private readonly authservId: string;
  private readonly spf: SpfVerdict;
  private readonly verifier: MessageVerifier;
  private readonly out: GateSink;

  constructor(
    policy: TenantAuthentication,
    authservId: string,
    spf: SpfVerdict,
    verifier: MessageVerifier,
    out: GateSink,
  ) {
    this.policy = policy;
    this.authservId = authservId;
    this.spf = spf;
    this.verifier = verifier;
    this.out = out;
  }

  /**
   * A chunk of raw DATA. Returns out.write's answer while streaming (backpressure), true while
   * holding; throws an SMTP-reply-shaped error when the header section alone exceeds holdBytes
   * (forged headers could not be found in it).
   */
  write(chunk: Buffer): boolean {
    this.verifier.write(chunk);
    if (this.streaming) return this.out.write(chunk);
    this.held.push(chunk);
    this.heldBytes += chunk.length;
    if (this.heldBytes <= this.policy.holdBytes) return true;
    // past the cap: from here on the message streams, annotated with what is known (SPF)
    const all = this.takeHeld();
    const end = headerSectionEnd(all);
    if (end < 0) throw new HeaderTooLarge(this.policy.holdBytes);
    this.streaming = true;
    return this.writeAnnotated(
      all,
      end,
      [this.spf.info],
      `dkim, arc and dmarc not annotated: message larger than ${this.policy.holdBytes} bytes`,
    );
  }

  /** The end of DATA: decides, and when the message may go on writes what was held. */
  async finish(): Promise<GateResult> {
    const { outcome, results } = await this.verifier.finish();
    const decision = decideAuthentication(this.policy, outcome);
    const annotation = this.streaming ? 'annotated_spf_only' : 'annotated';
    if (!this.streaming && decision.action === 'accept') {
      const all = this.takeHeld();
      const end = headerSectionEnd(all);
      // a message without an empty line is all header section
      this.writeAnnotated(all, end < 0 ? all.length : end, results);
    }
    this.held = [];
    return { decision, annotation, outcome, removed: this.removed };
  }

  abort(): void {
    this.held = [];
    this.verifier.abort();
  }

  private takeHeld(): Buffer {
    const all = this.held.length === 1 ? this.held[0] : Buffer.concat(this.held);
    this.held = [];
    this.heldBytes = 0;
    return all;
  }

  private writeAnnotated(all: Buffer, headerEnd: number, results: string[], comment?: string): boolean {
    const stripped = stripOwnAuthResults(all.subarray(0, headerEnd), this.authservId);
    this.removed += stripped.removed;
    this.out.write(authResultsHeader(this.authservId, results, comment));
    this.out.write(stripped.section);
    return this.out.write(all.subarray(headerEnd));
  }
}

export class HeaderTooLarge extends Error {
  readonly limit: number;
  constructor(limit: number) {
    super(`header section exceeds ${limit} bytes`);
    this.limit = limit;
  }
}
