// The DATA phase of one transaction: the client's raw bytes stream through to the upstream (after
// our Received header), bounded by the size and hop limits, teed into a consented capture, held for
// sender authentication where a tenant asks for it; the client's 250 follows the upstream's 250.
// The first failure wins (`failure`), the rest of the client's message is drained, and the reply
// goes out after its terminator.
import { AuthGate, HeaderTooLarge } from '../auth/gate.ts';
import { MessageVerifier, type Resolve } from '../auth/verify.ts';
import type { CaptureTee } from '../capture/recorder.ts';
import { UpstreamError } from '../upstream/errors.ts';
import type { RawSMTPDataStream } from './raw-data-stream.ts';
import { HopCounter } from './received.ts';
import { REPLY, type SmtpError, smtpError, upstreamRefusal } from './replies.ts';
import { countAuth, logUpstreamError, type ReportDeps } from './transaction-report.ts';
import type { MessageResult, Transaction, TransactionOutcome } from './transaction-state.ts';
import type { UpstreamTx } from './upstream-contract.ts';

export interface DataDeps extends ReportDeps {
  /** The relay-wide size limit; a tenant's own may be lower. */
  maxMessageSize: number;
  maxHops: number;
  /** Our host name in the Received header, the authserv-id by default. */
  hostname: string;
  authResolve?: Resolve;
}

export interface DataResult {
  reply: { err?: SmtpError; message?: string };
  outcome: TransactionOutcome;
}

interface Failure {
  err: SmtpError;
  reason: string;
  result: MessageResult;
}

/** A reply the protocol does not allow at that step (relay/upstream/reply.ts), or a malformed one. */
export function isProtocolError(err: unknown): boolean {
  return err instanceof UpstreamError && err.kind === 'protocol';
}

export class DataTransfer {
  private readonly deps: DataDeps;
  private readonly t: Transaction;
  private readonly stream: RawSMTPDataStream;
  private readonly started = performance.now();
  /** The smallest size limit of the relay and the transaction's tenants. */
  private readonly limit: number;
  /** Resolves when the client's message ended (its terminator, or the client went away). */
  private readonly ended: Promise<void>;
  private failure: Failure | undefined;
  /** The upstream transaction while the message may still go through. */
  private utx: UpstreamTx | undefined;
  private clientGone = false;
  private tee: CaptureTee | undefined;
  private gate: AuthGate | undefined;

  constructor(deps: DataDeps, t: Transaction, stream: RawSMTPDataStream) {
    this.deps = deps;
    this.t = t;
    this.stream = stream;
    this.utx = t.utx;
    let limit = deps.maxMessageSize;
    for (const tenant of t.tenants.values()) {
      if (tenant.limits.maxMessageSize !== undefined) limit = Math.min(limit, tenant.limits.maxMessageSize);
    }
    this.limit = limit;
    this.ended = this.watchClient();
    stream.once('bad-line-ending', () =>
      this.fail(REPLY.badLineEnding(), 'bad_line_ending', 'rejected', 'abort'),
    );
  }

  async run(): Promise<DataResult> {
    const capturing = this.startCapture();
    await this.openData();
    await this.settleCapture(capturing);
    await this.startAuth();
    if (!this.failure && this.utx) this.pipe(this.utx, this.gate ?? this.utx);
    await this.ended;
    if (!this.failure && this.stream.byteLength > this.limit) {
      this.fail(REPLY.tooBig(this.limit), 'too_big', 'rejected', 'abort');
    }
    if (!this.failure && this.stream.badLineEnding) {
      this.fail(REPLY.badLineEnding(), 'bad_line_ending', 'rejected', 'abort');
    }
    await this.decideAuth();
    // kept only when the whole message was received and handed to the upstream
    if (this.tee) this.deps.privacy.endCapture(this.tee, !this.failure);
    if (this.failure) {
      const f = this.failure;
      return this.result({ err: f.err }, f.result, f.err.responseCode, f.reason);
    }
    return this.commit(this.utx as UpstreamTx);
  }

  /** The first failure decides the reply; the upstream is dropped and the client's rest drained. */
  private fail(err: SmtpError, reason: string, result: MessageResult, how: 'abort' | 'release'): void {
    if (this.failure) return;
    this.failure = { err, reason, result };
    if (this.utx) {
      if (how === 'abort') this.utx.abort();
      else this.utx.release();
    }
    this.utx = undefined;
    this.t.utx = undefined;
    // drain the rest of the client's message; the reply goes out after its terminator
    this.stream.resume();
  }

  private watchClient(): Promise<void> {
    const stream = this.stream;
    return new Promise<void>((resolve) => {
      stream.once('end', () => resolve());
      stream.once('close', () => {
        if (!stream.readableEnded) {
          this.clientGone = true;
          this.fail(REPLY.upstreamLost(), 'client_disconnected', 'failed', 'abort');
          resolve();
        }
      });
      stream.on('error', () => {
        // the client went away; handled by 'close'
      });
    });
  }

  /**
   * Consented capture: decided now (expiry checked per message), reserved in the store while the
   * upstream answers DATA; undefined at once for everyone else (the fast path).
   */
  private startCapture(): Promise<CaptureTee | undefined> | undefined {
    if (!this.utx || this.t.broken) return undefined;
    return this.deps.privacy.startCapture(this.t.snapshot.table.config, this.t.id, this.t.accepted());
  }

  private async settleCapture(capturing: Promise<CaptureTee | undefined> | undefined): Promise<void> {
    if (!capturing) return;
    const tee = await capturing.catch(() => undefined);
    if (tee && this.failure) this.deps.privacy.endCapture(tee, false);
    else this.tee = tee;
  }

  /** DATA upstream; backpressure: nothing is read from the client until the upstream said 354. */
  private async openData(): Promise<void> {
    const utx = this.utx;
    if (!utx || this.t.broken) {
      this.fail(REPLY.upstreamUnavailable(), 'upstream_unavailable', 'deferred', 'abort');
      return;
    }
    try {
      const reply = await utx.data();
      if (reply.code !== 354) {
        const deferred = reply.code < 500;
        this.fail(
          upstreamRefusal(reply),
          deferred ? 'upstream_deferred' : 'upstream_rejected',
          deferred ? 'deferred' : 'rejected',
          'release',
        );
      }
    } catch (err) {
      if (isProtocolError(err)) {
        logUpstreamError(this.deps, this.t, [...this.t.tenants.keys()], this.t.upstreamLabel, err);
        this.fail(REPLY.upstreamProtocol(), 'upstream_protocol_error', 'deferred', 'abort');
      } else this.fail(REPLY.upstreamLost(), 'upstream_failed', 'deferred', 'abort');
    }
  }

  /** Sender authentication holds the header section; SPF was started at RCPT. */
  private async startAuth(): Promise<void> {
    const t = this.t;
    const resolve = this.deps.authResolve;
    if (this.failure || !this.utx || !t.auth || !t.spf || !resolve) return;
    const utx = this.utx;
    const authservId = t.auth.authservId ?? this.deps.hostname;
    // its result goes into a streamed message's header
    const spf = await t.spf;
    this.gate = new AuthGate(t.auth, authservId, spf, new MessageVerifier(t.spf, resolve, t.sender), utx);
  }

  /** Streams the client's bytes to the upstream (through the auth gate), with backpressure. */
  private pipe(out: UpstreamTx, sink: { write(chunk: Buffer): boolean }): void {
    const accepted = this.t.accepted();
    // prepended to the client's bytes, which follow untouched; not part of a consented capture
    // (that is the client's message) nor of the size limits (they count what the client sent)
    out.write(
      this.t.receivedHeader(this.deps.hostname, accepted.length === 1 ? accepted[0].address : undefined),
    );
    const hops = new HopCounter();
    let bytes = 0;
    this.stream.on('data', (chunk: Buffer) => {
      if (this.failure) return;
      bytes += chunk.length;
      if (bytes > this.limit) return this.fail(REPLY.tooBig(this.limit), 'too_big', 'rejected', 'abort');
      if (hops.push(chunk) >= this.deps.maxHops) {
        return this.fail(REPLY.tooManyHops(), 'too_many_hops', 'rejected', 'abort');
      }
      this.tee?.write(chunk);
      if (!this.forward(sink, chunk)) {
        this.stream.pause();
        // the pool also emits 'drain' when the connection dies; end() then rejects (451 4.4.2)
        out.once('drain', () => {
          if (!this.failure) this.stream.resume();
        });
      }
    });
  }

  /** One chunk to the upstream; false when it should wait for 'drain' (or failed). */
  private forward(sink: { write(chunk: Buffer): boolean }, chunk: Buffer): boolean {
    try {
      return sink.write(chunk);
    } catch (err) {
      if (err instanceof HeaderTooLarge) {
        this.fail(REPLY.headerTooLarge(err.limit), 'header_too_large', 'rejected', 'abort');
      } else this.fail(REPLY.upstreamLost(), 'upstream_failed', 'deferred', 'abort');
      return true;
    }
  }

  /**
   * The authentication verdict falls before the upstream is given the final dot: a refused message
   * is aborted there (the connection is dropped), never committed.
   */
  private async decideAuth(): Promise<void> {
    const gate = this.gate;
    if (!gate) return;
    if (this.failure) {
      gate.abort();
      return;
    }
    const t = this.t;
    const r = await gate.finish();
    countAuth(this.deps.metrics, t.authTenant, r);
    if (r.decision.action === 'accept') return;
    const d = r.decision;
    const refused = d.action === 'reject';
    this.deps.logger.info(`message ${refused ? 'rejected' : 'deferred'}: sender authentication`, {
      txid: t.id,
      tenant: t.authTenant,
      reason: d.reason,
      spf: r.outcome.spf,
      dkim: r.outcome.dkim,
      dmarc: r.outcome.dmarc,
      domain: r.outcome.domain,
    });
    this.fail(
      smtpError(d.code, d.enhanced, d.text),
      `auth_${d.reason}`,
      refused ? 'rejected' : 'deferred',
      'abort',
    );
  }

  /** The final dot upstream; the client gets the upstream's verdict. */
  private async commit(out: UpstreamTx): Promise<DataResult> {
    const t = this.t;
    try {
      const final = await out.end();
      this.deps.metrics.upstreamLatency.observe(
        { upstream: t.upstreamLabel, phase: 'transaction' },
        (performance.now() - this.started) / 1000,
      );
      out.release();
      t.utx = undefined;
      if (final.code >= 200 && final.code < 300) {
        return this.result({ message: `2.0.0 OK ${final.text}`.trim() }, 'relayed', final.code, 'ok');
      }
      const deferred = final.code < 500;
      return this.result(
        { err: upstreamRefusal(final) },
        deferred ? 'deferred' : 'rejected',
        final.code,
        deferred ? 'upstream_deferred' : 'upstream_rejected',
      );
    } catch (err) {
      out.abort();
      t.utx = undefined;
      const protocol = isProtocolError(err);
      if (protocol) logUpstreamError(this.deps, t, [...t.tenants.keys()], t.upstreamLabel, err);
      const reply = { err: protocol ? REPLY.upstreamProtocol() : REPLY.upstreamLost() };
      return this.result(reply, 'deferred', 451, protocol ? 'upstream_protocol_error' : 'upstream_failed');
    }
  }

  private result(
    reply: DataResult['reply'],
    result: MessageResult,
    code: number,
    reason: string,
  ): DataResult {
    const size = this.stream.byteLength;
    return { reply, outcome: { result, code, reason, size, clientGone: this.clientGone } };
  }
}
