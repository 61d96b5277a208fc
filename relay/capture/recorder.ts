// Writes consented captures into the trace store: reserves one of the consent's maxMessages slots
// (atomically in the store, so replicas never exceed it together), then un-stuffs, encrypts and
// appends the message chunk by chunk while it streams to the upstream. The mail never waits for
// the store except for the reservation (bounded by reserveTimeoutMs, and only for in-scope
// messages of a tenant with an active consent); a failed capture is discarded, the mail unaffected.
import type { Capture } from '../../contract/config/types.gen.ts';
import type { TraceStore } from '../trace/store.ts';
import { CaptureEncryptor } from './crypto.ts';
import { consentActive } from './scope.ts';
import { DotUnstuffer } from './unstuff.ts';

export type CaptureOutcome = 'stored' | 'discarded' | 'quota_exhausted' | 'store_unavailable' | 'failed';

export interface CaptureRecorderOptions {
  store: () => TraceStore | undefined;
  now: () => number;
  onOutcome?: (tenant: string, outcome: CaptureOutcome) => void;
  logger?: { warn(msg: string, fields?: Record<string, unknown>): void };
  /** Default 2000 ms. */
  reserveTimeoutMs?: number;
  /** Ciphertext bytes per stored row. Default 256 KiB. */
  rowBytes?: number;
}

export class CaptureTee {
  private readonly unstuffer = new DotUnstuffer();
  private readonly enc: CaptureEncryptor;
  private readonly store: TraceStore;
  private readonly id: string;
  private readonly consent: Capture;
  private readonly tenant: string;
  private readonly o: CaptureRecorderOptions;
  private row: Buffer[] = [];
  private rowLen = 0;
  private seq = 0;
  private chain: Promise<void> = Promise.resolve();
  private broken = false;

  constructor(
    store: TraceStore,
    id: string,
    tenant: string,
    consent: Capture,
    enc: CaptureEncryptor,
    o: CaptureRecorderOptions,
  ) {
    this.store = store;
    this.id = id;
    this.tenant = tenant;
    this.consent = consent;
    this.enc = enc;
    this.o = o;
  }

  private emit(pieces: Buffer[], force: boolean): void {
    for (const p of pieces) {
      this.row.push(p);
      this.rowLen += p.length;
    }
    if (this.rowLen === 0 || (!force && this.rowLen < (this.o.rowBytes ?? 256 * 1024))) return;
    const data = Buffer.concat(this.row);
    this.row = [];
    this.rowLen = 0;
    const seq = this.seq++;
    this.chain = this.chain.then(() =>
      this.broken ? undefined : this.store.appendCapture(this.id, seq, data),
    );
    this.chain = this.chain.catch((err: Error) => {
      this.broken = true;
      this.o.logger?.warn('capture write failed, discarding the capture', {
        tenant: this.tenant,
        error: err.message,
      });
    });
  }

  /** A raw (dot-stuffed) chunk of the message as it goes to the upstream. Synchronous. */
  write(raw: Buffer): void {
    if (this.broken) return;
    try {
      this.emit(this.enc.push(this.unstuffer.push(raw)), false);
    } catch {
      this.broken = true;
    }
  }

  /** keep: the whole message passed. Stores it if the consent is still active now, else discards. */
  async finish(keep: boolean): Promise<CaptureOutcome> {
    const active = consentActive(this.consent, this.o.now());
    if (keep && active && !this.broken) {
      try {
        this.emit(this.enc.final(), true);
      } catch {
        this.broken = true;
      }
    }
    await this.chain;
    let outcome: CaptureOutcome;
    if (keep && active && !this.broken) {
      try {
        await this.store.completeCapture(this.id);
        outcome = 'stored';
      } catch {
        outcome = 'failed';
      }
    } else {
      outcome = this.broken ? 'failed' : 'discarded';
    }
    if (outcome !== 'stored') await this.store.discardCapture(this.id).catch(() => {});
    this.o.onOutcome?.(this.tenant, outcome);
    return outcome;
  }
}

export class CaptureRecorder {
  private readonly o: CaptureRecorderOptions;

  constructor(o: CaptureRecorderOptions) {
    this.o = o;
  }

  /** Undefined when nothing is to be captured (no store, quota used up, store too slow). */
  async begin(tenant: string, consent: Capture, txid: string): Promise<CaptureTee | undefined> {
    const store = this.o.store();
    if (!store) {
      this.o.onOutcome?.(tenant, 'store_unavailable');
      return undefined;
    }
    const expiresMs = Date.parse(consent.expiresAt);
    const started = this.o.now();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.o.reserveTimeoutMs ?? 2000);
    });
    const work = (async () => {
      if (!(await store.reserveCapture(tenant, consent.id, consent.maxMessages, expiresMs)))
        return 'quota' as const;
      const enc = new CaptureEncryptor(consent.publicKey, {
        tenant,
        txid,
        createdAt: new Date(started).toISOString(),
      });
      const id = await store.beginCapture({
        tenant,
        consentId: consent.id,
        txid,
        createdMs: started,
        expiresMs,
      });
      return { id, enc };
    })();
    let r: Awaited<typeof work> | 'timeout' | 'error';
    try {
      r = await Promise.race([work, timeout]);
    } catch (err) {
      this.o.logger?.warn('capture could not start', { tenant, error: (err as Error).message });
      r = 'error';
    } finally {
      clearTimeout(timer);
    }
    if (r === 'timeout') {
      // the reservation may still land: the slot stays used (never more than maxMessages)
      void work.then((w) => (typeof w === 'object' ? store.discardCapture(w.id) : undefined)).catch(() => {});
      this.o.onOutcome?.(tenant, 'store_unavailable');
      return undefined;
    }
    if (r === 'error') {
      this.o.onOutcome?.(tenant, 'store_unavailable');
      return undefined;
    }
    if (r === 'quota') {
      this.o.onOutcome?.(tenant, 'quota_exhausted');
      return undefined;
    }
    return new CaptureTee(store, r.id, tenant, consent, r.enc, this.o);
  }
}
