// Connection pool and transactions for the upstream leg. Connections are keyed by the whole target
// (host, port, TLS mode, verification, server name), bounded per target, reused LIFO (the most recently
// used connection is the least likely to have been dropped by the upstream's idle timeout).

import tls from 'node:tls';
import {
  type MailParams,
  SmtpConnection,
  targetLabel,
  type UpstreamTarget,
  xclientKey,
} from './connection.ts';
import { assertSafe, UpstreamError } from './errors.ts';
import type { SmtpReply } from './reply.ts';

export type TransactionOutcome =
  /** final reply 2xx: the upstream took responsibility for the message */
  | 'accepted'
  /** MAIL or final reply 5xx */
  | 'rejected'
  /** MAIL or final reply 4xx */
  | 'deferred'
  /** connect/TLS/timeout/protocol/closed failure at any step */
  | 'failed'
  /** abort(): content never completed */
  | 'aborted'
  /** release(): transaction ended without DATA */
  | 'released';

export interface TransactionResult {
  outcome: TransactionOutcome;
  /** The reply that decided the outcome (MAIL refusal or final reply), if any. */
  reply?: SmtpReply;
  error?: UpstreamError;
  /** Content bytes written (before the terminator). */
  bytes: number;
}

export interface PoolOptions {
  /** Our EHLO name. */
  heloName: string;
  /** TCP connect, and each TLS handshake. Default 10 s. */
  connectTimeoutMs?: number;
  /** Default 30 s (RFC 5321 says 5 min; a relay with a client waiting in front wants shorter). */
  greetingTimeoutMs?: number;
  /** Per reply. Default 60 s. */
  commandTimeoutMs?: number;
  /** For the reply to the final dot. Default 120 s. */
  dataTimeoutMs?: number;
  /** How long a pooled idle connection is kept. Default 10 s. */
  idleTimeoutMs?: number;
  /** Open connections (including ones being set up) per target. Default 50. */
  maxConnectionsPerTarget?: number;
  /** How long begin() waits for a free connection at the limit. Default 10 s. */
  acquireTimeoutMs?: number;
  /** Transactions per connection, then QUIT and reconnect. Default 100. */
  maxMessagesPerConnection?: number;
  /** Extra trusted CAs, added to Node's default store. */
  ca?: string | Buffer | Array<string | Buffer>;
  /** An upstream whose greeting contains this is our own fleet: a loop (connection.ts). */
  fleetMark?: string;
  /** Every session setup attempt (connect, greeting, EHLO, TLS), with its duration. */
  onConnect?(target: UpstreamTarget, ms: number, ok: boolean, error?: UpstreamError): void;
  /** Exactly once per begin() call: when its transaction (or the attempt to start one) is over. */
  onTransaction?(target: UpstreamTarget, ms: number, result: TransactionResult): void;
}

type Resolved = Required<Omit<PoolOptions, 'ca' | 'onConnect' | 'onTransaction' | 'fleetMark'>>;

interface IdleEntry {
  conn: SmtpConnection;
  timer: NodeJS.Timeout;
}

interface AcquireWaiter {
  /** conn: a released connection handed over; null: a slot was reserved for a new connection. */
  resolve: (conn: SmtpConnection | null) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

interface TargetSlot {
  target: UpstreamTarget;
  open: number;
  idle: IdleEntry[];
  waiters: AcquireWaiter[];
}

const DEFAULTS: Omit<Resolved, 'heloName'> = {
  connectTimeoutMs: 10_000,
  greetingTimeoutMs: 30_000,
  commandTimeoutMs: 60_000,
  dataTimeoutMs: 120_000,
  idleTimeoutMs: 10_000,
  maxConnectionsPerTarget: 50,
  acquireTimeoutMs: 10_000,
  maxMessagesPerConnection: 100,
};

const BODY_VALUES = new Set(['7BIT', '8BITMIME']);

function targetKey(t: UpstreamTarget): string {
  return JSON.stringify([t.host.toLowerCase(), t.port, t.tls, t.verify, t.serverName ?? null, !!t.xclient]);
}

function outcomeOf(reply: SmtpReply): TransactionOutcome {
  return reply.code < 400 ? 'accepted' : reply.code < 500 ? 'deferred' : 'rejected';
}

/** Internal contract between the pool and its transactions. */
interface PoolSide {
  release(conn: SmtpConnection): void;
  finish(target: UpstreamTarget, started: number, result: TransactionResult): void;
}

export class UpstreamPool {
  #opts: Resolved;
  #ca: Array<string | Buffer> | undefined;
  #fleetMark: string | undefined;
  #hooks: Pick<PoolOptions, 'onConnect' | 'onTransaction'>;
  #slots = new Map<string, TargetSlot>();
  #all = new Set<SmtpConnection>();
  #closed = false;
  #side: PoolSide;

  constructor(opts: PoolOptions) {
    if (!opts.heloName) throw new TypeError('PoolOptions.heloName is required (our EHLO name)');
    assertSafe('PoolOptions.heloName', opts.heloName);
    const resolved = { ...DEFAULTS, heloName: opts.heloName };
    for (const key of Object.keys(DEFAULTS) as Array<keyof typeof DEFAULTS>) {
      const v = opts[key];
      if (v === undefined) continue;
      if (!Number.isFinite(v) || v <= 0) throw new RangeError(`PoolOptions.${key} must be a positive number`);
      resolved[key] = v;
    }
    this.#opts = resolved;
    this.#fleetMark = opts.fleetMark;
    if (opts.ca !== undefined) {
      const extra = Array.isArray(opts.ca) ? opts.ca : [opts.ca];
      // `ca` replaces Node's store; the contract is "extra", so keep the defaults too.
      this.#ca = [...tls.getCACertificates('default'), ...extra];
    }
    this.#hooks = { onConnect: opts.onConnect, onTransaction: opts.onTransaction };
    this.#side = {
      release: (conn) => this.#release(conn),
      finish: (target, started, result) => this.#report(target, started, result),
    };
  }

  /**
   * Opens (or reuses) a connection and starts a transaction with MAIL FROM. A reused connection that
   * turns out dead at MAIL FROM (socket closed/reset, 421) is replaced by a fresh one, once.
   * Throws TypeError for unsafe input and UpstreamError for connect/TLS/timeout/protocol/closed failures.
   */
  async begin(
    target: UpstreamTarget,
    mailFrom: string,
    params: MailParams = {},
  ): Promise<{ ok: true; tx: UpstreamTransaction; reply: SmtpReply } | { ok: false; reply: SmtpReply }> {
    assertSafe('mailFrom', mailFrom);
    if (params.size !== undefined && !(Number.isSafeInteger(params.size) && params.size >= 0)) {
      throw new TypeError('params.size must be a non-negative integer');
    }
    if (params.body !== undefined && !BODY_VALUES.has(params.body)) {
      throw new TypeError('params.body must be 7BIT or 8BITMIME');
    }
    const started = performance.now();
    try {
      let { conn, reused } = await this.#acquire(target, false);
      for (let attempt = 0; ; attempt++) {
        try {
          if (target.xclient && params.client) {
            const key = xclientKey(params.client);
            if (conn.xclientFor !== undefined && conn.xclientFor !== key) {
              // a session speaks for one client (smtp-server, for one, takes XCLIENT only once):
              // another client's transaction needs a session of its own
              conn.poison();
              this.#release(conn);
              ({ conn, reused } = await this.#acquire(target, true));
            }
            if (conn.xclientFor === undefined && conn.capabilities.has('XCLIENT')) {
              await conn.xclient(params.client);
            }
          }
          if (params.smtputf8 && !conn.capabilities.has('SMTPUTF8')) {
            // RFC 6531 §3.4: an SMTPUTF8 message must not go to a server without the extension.
            this.#release(conn);
            const reply: SmtpReply = {
              code: 553,
              enhancedCode: '5.6.7',
              text: 'SMTPUTF8 not supported by upstream',
              lines: ['5.6.7 SMTPUTF8 not supported by upstream'],
            };
            this.#report(target, started, { outcome: 'rejected', reply, bytes: 0 });
            return { ok: false, reply };
          }
          const reply = await conn.mail(mailFrom, params);
          if (reply.code >= 200 && reply.code < 300) {
            conn.transactions++;
            return { ok: true, tx: new UpstreamTransaction(target, conn, this.#side, started), reply };
          }
          this.#release(conn);
          this.#report(target, started, { outcome: outcomeOf(reply), reply, bytes: 0 });
          return { ok: false, reply };
        } catch (err) {
          if (
            reused &&
            attempt === 0 &&
            err instanceof UpstreamError &&
            err.kind === 'closed' &&
            !this.#closed
          ) {
            ({ conn, reused } = await this.#acquire(target, true));
            continue;
          }
          throw err;
        }
      }
    } catch (err) {
      if (err instanceof UpstreamError)
        this.#report(target, started, { outcome: 'failed', error: err, bytes: 0 });
      throw err;
    }
  }

  /** QUITs idle connections, destroys busy ones, fails waiting begin() calls; resolves when all are closed. */
  async close(): Promise<void> {
    this.#closed = true;
    const idle = new Set<SmtpConnection>();
    for (const slot of this.#slots.values()) {
      for (const w of slot.waiters.splice(0)) {
        clearTimeout(w.timer);
        w.reject(new UpstreamError('closed', targetLabel(slot.target), 'pool closed'));
      }
      for (const { conn, timer } of slot.idle.splice(0)) {
        clearTimeout(timer);
        idle.add(conn);
      }
    }
    const closing = [...this.#all].map((conn) => {
      if (idle.has(conn)) return conn.quit();
      conn.destroy(new UpstreamError('closed', conn.label, 'pool closed'));
      return conn.whenClosed();
    });
    await Promise.all(closing);
  }

  stats(): { open: number; idle: number; waiting: number } {
    let open = 0;
    let idle = 0;
    let waiting = 0;
    for (const s of this.#slots.values()) {
      open += s.open;
      idle += s.idle.length;
      waiting += s.waiters.length;
    }
    return { open, idle, waiting };
  }

  // ---- internals ----

  #slot(target: UpstreamTarget): TargetSlot {
    const key = targetKey(target);
    let slot = this.#slots.get(key);
    if (!slot) {
      slot = { target: { ...target }, open: 0, idle: [], waiters: [] };
      this.#slots.set(key, slot);
    }
    return slot;
  }

  async #acquire(target: UpstreamTarget, fresh: boolean): Promise<{ conn: SmtpConnection; reused: boolean }> {
    if (this.#closed) throw new UpstreamError('closed', targetLabel(target), 'pool closed');
    const slot = this.#slot(target);
    if (!fresh) {
      for (let e = slot.idle.pop(); e; e = slot.idle.pop()) {
        clearTimeout(e.timer);
        if (e.conn.usable) return { conn: e.conn, reused: true };
        e.conn.destroy();
      }
    }
    if (slot.open < this.#opts.maxConnectionsPerTarget) {
      slot.open++;
      return { conn: await this.#openNew(slot), reused: false };
    }
    const ms = this.#opts.acquireTimeoutMs;
    const handed = await new Promise<SmtpConnection | null>((resolve, reject) => {
      const w: AcquireWaiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          slot.waiters.splice(slot.waiters.indexOf(w), 1);
          reject(
            new UpstreamError(
              'timeout',
              targetLabel(target),
              `no free connection within ${ms} ms (limit ${this.#opts.maxConnectionsPerTarget} per target)`,
            ),
          );
        }, ms),
      };
      slot.waiters.push(w);
    });
    if (handed) return { conn: handed, reused: true };
    return { conn: await this.#openNew(slot), reused: false };
  }

  /** Opens a connection on a slot already counted in slot.open. */
  async #openNew(slot: TargetSlot): Promise<SmtpConnection> {
    const started = performance.now();
    let conn: SmtpConnection;
    try {
      conn = await SmtpConnection.open(slot.target, {
        ...this.#opts,
        ca: this.#ca,
        fleetMark: this.#fleetMark,
      });
    } catch (err) {
      slot.open--;
      this.#wake(slot);
      const e =
        err instanceof UpstreamError
          ? err
          : new UpstreamError('connect', targetLabel(slot.target), String(err));
      this.#hook(() => this.#hooks.onConnect?.(slot.target, performance.now() - started, false, e));
      throw e;
    }
    this.#hook(() => this.#hooks.onConnect?.(slot.target, performance.now() - started, true));
    this.#all.add(conn);
    conn.onDead = () => {
      this.#all.delete(conn);
      const i = slot.idle.findIndex((e) => e.conn === conn);
      if (i >= 0) clearTimeout(slot.idle.splice(i, 1)[0].timer);
      slot.open--;
      this.#wake(slot);
    };
    if (this.#closed) {
      conn.destroy();
      throw new UpstreamError('closed', targetLabel(slot.target), 'pool closed');
    }
    return conn;
  }

  /** A slot was freed: let the oldest waiter open a new connection in it. */
  #wake(slot: TargetSlot): void {
    if (this.#closed) return;
    const w = slot.waiters.shift();
    if (!w) return;
    clearTimeout(w.timer);
    slot.open++;
    w.resolve(null);
  }

  /** Back to the pool after a transaction (or a refused MAIL), or closed if it should not be reused. */
  #release(conn: SmtpConnection): void {
    const slot = this.#slot(conn.target);
    if (!conn.usable) {
      conn.destroy();
      return;
    }
    if (this.#closed || conn.transactions >= this.#opts.maxMessagesPerConnection) {
      void conn.quit();
      return;
    }
    const w = slot.waiters.shift();
    if (w) {
      clearTimeout(w.timer);
      w.resolve(conn);
      return;
    }
    const entry: IdleEntry = {
      conn,
      timer: setTimeout(() => {
        const i = slot.idle.indexOf(entry);
        if (i >= 0) slot.idle.splice(i, 1);
        void conn.quit();
      }, this.#opts.idleTimeoutMs),
    };
    entry.timer.unref();
    slot.idle.push(entry);
  }

  #report(target: UpstreamTarget, started: number, result: TransactionResult): void {
    this.#hook(() => this.#hooks.onTransaction?.(target, performance.now() - started, result));
  }

  #hook(fn: () => void): void {
    try {
      fn();
    } catch {
      // metrics must never break mail flow
    }
  }
}

type TxState = 'mail' | 'data' | 'ending' | 'done';

/** One upstream transaction, from an accepted MAIL FROM to the final reply (or abort/release). */
export class UpstreamTransaction {
  readonly target: UpstreamTarget;
  #conn: SmtpConnection;
  #pool: PoolSide;
  #started: number;
  #state: TxState = 'mail';

  /** @internal created by UpstreamPool.begin() */
  constructor(target: UpstreamTarget, conn: SmtpConnection, pool: PoolSide, started: number) {
    this.target = target;
    this.#conn = conn;
    this.#pool = pool;
    this.#started = started;
  }

  /** Content bytes written so far. */
  get bytesWritten(): number {
    return this.#conn.contentBytes;
  }

  /** RCPT TO:<address>; resolves with the upstream's verdict (any code but 421). */
  async rcpt(address: string): Promise<SmtpReply> {
    assertSafe('recipient address', address);
    this.#expect('mail', 'rcpt()');
    return this.#guard(this.#conn.command(`RCPT TO:<${address}>`));
  }

  /** Sends DATA; resolves with the 354 (content may follow) or the refusal (then release()). */
  async data(): Promise<SmtpReply> {
    this.#expect('mail', 'data()');
    const reply = await this.#guard(this.#conn.command('DATA'));
    if (reply.code === 354) {
      this.#state = 'data';
      this.#conn.beginContent();
    }
    return reply;
  }

  /** Raw, already dot-stuffed content. false: wait for 'drain' (also emitted if the connection dies). */
  write(chunk: Buffer): boolean {
    this.#expect('data', 'write()');
    return this.#conn.writeContent(chunk);
  }

  once(ev: 'drain', fn: () => void): void {
    if (ev !== 'drain') throw new TypeError(`unsupported event ${String(ev)}`);
    this.#conn.onceDrain(fn);
  }

  /**
   * Sends the terminator (".\r\n" after CRLF-terminated or empty content, else "\r\n.\r\n") and resolves
   * with the final reply; the connection then goes back to the pool if healthy.
   */
  async end(): Promise<SmtpReply> {
    this.#expect('data', 'end()');
    this.#state = 'ending';
    const conn = this.#conn;
    let reply: SmtpReply;
    try {
      reply = await conn.endContent();
    } catch (err) {
      this.#finish({ outcome: 'failed', error: err as UpstreamError, bytes: conn.contentBytes });
      throw err;
    }
    this.#finish({ outcome: outcomeOf(reply), reply, bytes: conn.contentBytes });
    this.#pool.release(conn);
    return reply;
  }

  /** Content cannot be completed: drop the connection so the upstream discards the message. Idempotent. */
  abort(): void {
    if (this.#state === 'done') return;
    const bytes = this.#conn.contentBytes;
    this.#conn.destroy(new UpstreamError('closed', this.#conn.label, 'transaction aborted'));
    this.#finish({ outcome: 'aborted', bytes: this.#state === 'mail' ? 0 : bytes });
  }

  /** Transaction over without content: RSET and back to the pool (closed if anything is off). Never rejects. */
  async release(): Promise<void> {
    if (this.#state === 'done') return;
    if (this.#state !== 'mail') {
      // mid-content there is no RSET: only dropping the connection stops the message
      this.abort();
      return;
    }
    this.#state = 'done';
    const conn = this.#conn;
    try {
      const reply = await conn.command('RSET');
      if (reply.code !== 250) conn.poison();
    } catch {
      conn.poison();
    }
    this.#report({ outcome: 'released', bytes: 0 });
    this.#pool.release(conn);
  }

  #expect(state: TxState, what: string): void {
    if (this.#state !== state) {
      throw new Error(`UpstreamTransaction.${what} called in state '${this.#state}'`);
    }
  }

  async #guard(p: Promise<SmtpReply>): Promise<SmtpReply> {
    try {
      return await p;
    } catch (err) {
      this.#finish({ outcome: 'failed', error: err as UpstreamError, bytes: 0 });
      throw err;
    }
  }

  #finish(result: TransactionResult): void {
    if (this.#state === 'done') return;
    this.#state = 'done';
    this.#report(result);
  }

  #report(result: TransactionResult): void {
    this.#pool.finish(this.target, this.#started, result);
  }
}
