// One SMTP client session over node:net / node:tls.
//
// Why not nodemailer: SMTPConnection.send() takes the whole envelope at once and re-encodes the content
// (its DataStream re-stuffs dots and turns bare CR/LF into CRLF). The relay needs
//  - RCPT-time verification: the upstream transaction is opened while the client's envelope arrives, so
//    each client RCPT is answered with the upstream's own verdict for that recipient;
//  - byte-faithful pass-through: the client's DATA bytes are forwarded still dot-stuffed, exactly as
//    received, and only the terminator is ours;
//  - pooling with bounded concurrency (pool.ts);
//  - speed: 10 MiB messages at wire speed, TCP_NODELAY, backpressure, nothing buffered whole.
// So this is a small state machine: reply parsing (reply.ts), a command/reply queue (no pipelining),
// EHLO capabilities, STARTTLS / implicit TLS, and the transaction commands used by pool.ts.

import net from 'node:net';
import tls from 'node:tls';
import { assertSafe, UpstreamError } from './errors.ts';
import { ReplyParser, type SmtpReply, unexpectedReply } from './reply.ts';

export interface UpstreamTarget {
  host: string;
  port: number;
  tls: 'none' | 'opportunistic' | 'required' | 'implicit';
  verify: boolean;
  serverName?: string;
  /** Send XCLIENT before each transaction when the upstream advertises it. */
  xclient?: boolean;
}

/** The real client, for XCLIENT (Postfix XCLIENT_README). */
export interface ClientIdentity {
  addr: string;
  /** Its HELO/EHLO name, if it gave one. */
  helo?: string;
  proto: 'SMTP' | 'ESMTP';
}

export interface MailParams {
  size?: number;
  body?: '7BIT' | '8BITMIME';
  smtputf8?: boolean;
  /** Used toward targets with `xclient` set. */
  client?: ClientIdentity;
}

export interface ConnectionOptions {
  heloName: string;
  connectTimeoutMs: number;
  greetingTimeoutMs: number;
  commandTimeoutMs: number;
  dataTimeoutMs: number;
  /** Complete trust store for verified TLS (undefined: Node's default store). */
  ca?: Array<string | Buffer>;
  /**
   * Text in an upstream's greeting that marks it as one of our own fleet (a loop). An upstream that
   * greets or answers EHLO with our own heloName is a loop too, as Postfix's "loops back to myself".
   */
  fleetMark?: string;
}

export function targetLabel(t: UpstreamTarget): string {
  return net.isIPv6(t.host) ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
}

interface Pending {
  raw: string;
  verb: string;
  timeoutMs: number;
  resolve: (r: SmtpReply) => void;
  reject: (e: Error) => void;
}

interface Waiter {
  verb: string;
  timer: NodeJS.Timeout;
  resolve: (r: SmtpReply) => void;
  reject: (e: Error) => void;
}

const QUIT_TIMEOUT_MS = 2000;

export class SmtpConnection {
  readonly target: UpstreamTarget;
  readonly label: string;
  /** EHLO keywords (upper case) and their parameters, from the last EHLO (after STARTTLS if any). */
  capabilities = new Map<string, string>();
  secure = false;
  /** Transactions started (MAIL accepted) on this connection. */
  transactions = 0;
  /** Content bytes written in the current DATA phase. */
  contentBytes = 0;
  /** Called once when the connection is dead (closed, destroyed, failed). */
  onDead: (() => void) | undefined;
  /** The client this session speaks for after a successful XCLIENT (xclientKey of it). */
  xclientFor: string | undefined;

  #opts: ConnectionOptions;
  #socket: net.Socket | undefined;
  #parser = new ReplyParser();
  #queue: Pending[] = [];
  #waiter: Waiter | undefined;
  #failure: UpstreamError | undefined;
  #lastSocketError: Error | undefined;
  #reusable = true;
  #drainFns: Array<() => void> = [];
  #tail0 = -1;
  #tail1 = -1;
  #closedPromise: Promise<void>;
  #resolveClosed!: () => void;

  private constructor(target: UpstreamTarget, opts: ConnectionOptions) {
    this.target = target;
    this.label = targetLabel(target);
    this.#opts = opts;
    this.#closedPromise = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
  }

  /** Connects, reads the greeting, EHLOs and negotiates TLS as the target demands. */
  static async open(target: UpstreamTarget, opts: ConnectionOptions): Promise<SmtpConnection> {
    const conn = new SmtpConnection(target, opts);
    try {
      await conn.#connect();
      const greeting = await conn.#request(null, 'greeting', opts.greetingTimeoutMs);
      if (greeting.code !== 220) {
        throw new UpstreamError('connect', conn.label, `greeting refused: ${describe(greeting)}`, {
          reply: greeting,
        });
      }
      conn.#checkLoop(greeting, 'greeted us');
      await conn.#hello();
      if (target.tls === 'opportunistic' || target.tls === 'required') {
        if (conn.capabilities.has('STARTTLS')) {
          await conn.#startTls();
          await conn.#hello();
        } else if (target.tls === 'required') {
          throw new UpstreamError('tls', conn.label, 'STARTTLS required but not advertised');
        }
      }
      return conn;
    } catch (err) {
      const e =
        err instanceof UpstreamError && err.kind === 'closed'
          ? new UpstreamError('connect', conn.label, err.message.replace(/^upstream [^ ]+: /, ''), {
              reply: err.reply,
              cause: err,
            })
          : err;
      conn.destroy(e instanceof UpstreamError ? e : undefined);
      throw e;
    }
  }

  /** Healthy and idle enough to carry another transaction. */
  get usable(): boolean {
    const s = this.#socket;
    return (
      !this.#failure &&
      this.#reusable &&
      s !== undefined &&
      !s.destroyed &&
      s.writable &&
      s.readyState === 'open' &&
      !this.#waiter &&
      this.#queue.length === 0
    );
  }

  get failure(): UpstreamError | undefined {
    return this.#failure;
  }

  /** Resolves once the socket is closed (or never opened). */
  whenClosed(): Promise<void> {
    return this.#closedPromise;
  }

  /** Queues a command line (CRLF added) and resolves with its reply. */
  command(line: string, timeoutMs = this.#opts.commandTimeoutMs): Promise<SmtpReply> {
    return this.#request(`${line}\r\n`, line.split(' ', 1)[0].toUpperCase(), timeoutMs);
  }

  mail(from: string, params: MailParams): Promise<SmtpReply> {
    let line = `MAIL FROM:<${from}>`;
    if (params.size !== undefined && this.capabilities.has('SIZE')) line += ` SIZE=${params.size}`;
    if (params.body !== undefined && this.capabilities.has('8BITMIME')) line += ` BODY=${params.body}`;
    if (params.smtputf8) line += ' SMTPUTF8';
    assertSafe('MAIL FROM command', line);
    return this.command(line);
  }

  /**
   * XCLIENT with the attributes the upstream advertised, then EHLO again as the protocol requires
   * (with the client's HELO name, as Postfix's XCLIENT_README and nginx do). A refusal is an
   * UpstreamError: the route asked for the real client to be shown.
   */
  async xclient(client: ClientIdentity): Promise<void> {
    const offered = new Set((this.capabilities.get('XCLIENT') ?? '').toUpperCase().split(/\s+/));
    const helo = client.helo && /^[\x21-\x7e]{1,255}$/.test(client.helo) ? client.helo : undefined;
    const attrs: string[] = [];
    if (offered.has('ADDR')) attrs.push(`ADDR=${xtext(xclientAddress(client.addr))}`);
    // no reverse DNS lookups here: the name is unknown
    if (offered.has('NAME')) attrs.push('NAME=[UNAVAILABLE]');
    if (offered.has('PROTO')) attrs.push(`PROTO=${client.proto}`);
    if (offered.has('HELO')) attrs.push(`HELO=${helo ? xtext(helo) : '[UNAVAILABLE]'}`);
    if (attrs.length === 0) return;
    const line = `XCLIENT ${attrs.join(' ')}`;
    assertSafe('XCLIENT command', line);
    const reply = await this.command(line);
    if (reply.code !== 220) {
      const err = new UpstreamError('connect', this.label, `XCLIENT refused: ${describe(reply)}`, { reply });
      this.destroy(err);
      throw err;
    }
    this.xclientFor = xclientKey(client);
    try {
      this.#checkLoop(reply, 'greeted us');
      await this.#hello(helo);
    } catch (err) {
      // a loop or a refused EHLO/HELO leaves the socket open: close it, or it holds its pool slot
      this.destroy(err instanceof UpstreamError ? err : undefined);
      throw err;
    }
  }

  beginContent(): void {
    this.contentBytes = 0;
    this.#tail0 = -1;
    this.#tail1 = -1;
  }

  /** Raw content bytes; false means wait for drain. After a failure bytes are dropped (endContent rejects). */
  writeContent(chunk: Buffer): boolean {
    const s = this.#socket;
    if (this.#failure || !s) return true;
    if (chunk.length === 0) return true;
    this.contentBytes += chunk.length;
    if (chunk.length >= 2) {
      this.#tail0 = chunk[chunk.length - 2];
      this.#tail1 = chunk[chunk.length - 1];
    } else {
      this.#tail0 = this.#tail1;
      this.#tail1 = chunk[0];
    }
    return s.write(chunk);
  }

  /** Sends the end-of-data terminator and resolves with the final reply. */
  endContent(): Promise<SmtpReply> {
    const endsWithCrlf = this.contentBytes === 0 || (this.#tail0 === 13 && this.#tail1 === 10);
    return this.#request(endsWithCrlf ? '.\r\n' : '\r\n.\r\n', 'end of data', this.#opts.dataTimeoutMs);
  }

  /** Calls fn once the socket drains, or when the connection dies (so a writer never waits forever). */
  onceDrain(fn: () => void): void {
    if (this.#failure) queueMicrotask(fn);
    else this.#drainFns.push(fn);
  }

  /** Never reuse this connection (its state is uncertain). */
  poison(): void {
    this.#reusable = false;
  }

  /** Polite close: QUIT, wait briefly for the reply, then destroy. Never rejects. */
  async quit(): Promise<void> {
    this.#reusable = false;
    if (!this.#failure) {
      try {
        await this.command('QUIT', Math.min(this.#opts.commandTimeoutMs, QUIT_TIMEOUT_MS));
      } catch {
        // the upstream hung up first or did not answer: nothing to do but close
      }
    }
    this.destroy();
    await this.#closedPromise;
  }

  destroy(reason?: UpstreamError): void {
    this.#fail(reason ?? new UpstreamError('closed', this.label, 'connection closed locally'));
  }

  // ---- internals ----

  #tlsOptions(): tls.ConnectionOptions {
    const t = this.target;
    const name = t.serverName ?? t.host;
    const verify = t.tls === 'opportunistic' ? false : t.verify;
    const opts: tls.ConnectionOptions = {
      // SNI must not carry an IP address (RFC 6066); verification still checks the name below.
      servername: net.isIP(name) ? undefined : name,
      rejectUnauthorized: verify,
      minVersion: 'TLSv1.2',
      checkServerIdentity: (_host, cert) => tls.checkServerIdentity(name, cert),
    };
    if (this.#opts.ca) opts.ca = this.#opts.ca;
    return opts;
  }

  #connect(): Promise<void> {
    const { host, port } = this.target;
    const implicit = this.target.tls === 'implicit';
    const ms = this.#opts.connectTimeoutMs;
    return new Promise<void>((resolve, reject) => {
      const socket = implicit
        ? tls.connect({ host, port, ...this.#tlsOptions() })
        : net.connect({ host, port });
      socket.setNoDelay(true);
      let tcpUp = false;
      const settle = (err?: UpstreamError) => {
        clearTimeout(timer);
        socket.off('connect', onConnect);
        socket.off('secureConnect', onSecure);
        socket.off('error', onError);
        socket.off('close', onClose);
        if (err) {
          socket.destroy();
          this.#resolveClosed();
          reject(err);
        } else {
          this.#attach(socket);
          resolve();
        }
      };
      const timer = setTimeout(
        () =>
          settle(
            new UpstreamError(
              'timeout',
              this.label,
              `${tcpUp ? 'TLS handshake' : 'connect'} timed out after ${ms} ms`,
            ),
          ),
        ms,
      );
      const onConnect = () => {
        tcpUp = true;
        if (!implicit) settle();
      };
      const onSecure = () => {
        this.secure = true;
        settle();
      };
      const onError = (err: Error) =>
        settle(
          new UpstreamError(tcpUp && implicit ? 'tls' : 'connect', this.label, errText(err), { cause: err }),
        );
      const onClose = () =>
        settle(
          new UpstreamError(
            tcpUp && implicit ? 'tls' : 'connect',
            this.label,
            'connection closed while connecting',
          ),
        );
      socket.on('connect', onConnect);
      socket.on('secureConnect', onSecure);
      socket.on('error', onError);
      socket.on('close', onClose);
    });
  }

  async #hello(name?: string): Promise<void> {
    const helo = name ?? this.#opts.heloName;
    assertSafe('heloName', helo);
    let reply = await this.command(`EHLO ${helo}`);
    this.capabilities = new Map();
    if (reply.code === 250) {
      this.#checkLoop(reply, 'answered EHLO');
      for (const line of reply.lines.slice(1)) {
        const [keyword, ...rest] = line.trim().split(/\s+/);
        if (keyword) this.capabilities.set(keyword.toUpperCase(), rest.join(' '));
      }
      return;
    }
    if (reply.code >= 500) {
      // RFC 5321 §3.2: a server that does not understand EHLO gets HELO (and no extensions).
      reply = await this.command(`HELO ${helo}`);
      if (reply.code === 250) return;
    }
    throw new UpstreamError('connect', this.label, `EHLO/HELO refused: ${describe(reply)}`, { reply });
  }

  /** The upstream is this relay (our own name first in its reply) or its fleet (our fleet mark). */
  #checkLoop(reply: SmtpReply, how: string): void {
    const first = (reply.lines[0] ?? '').replace(/^[245]\.\d{1,3}\.\d{1,3} +/, '');
    const name = first.split(/\s/, 1)[0].toLowerCase();
    const ours = this.#opts.heloName.toLowerCase();
    const mark = this.#opts.fleetMark;
    if (name === ours || (mark !== undefined && first.split(/\s+/).includes(mark))) {
      throw new UpstreamError(
        'loop',
        this.label,
        `mail loops back to myself: the upstream ${how} as ${name === ours ? ours : `fleet ${mark}`}`,
        { reply },
      );
    }
  }

  async #startTls(): Promise<void> {
    const reply = await this.command('STARTTLS');
    if (reply.code !== 220) {
      // Not a silent downgrade: STARTTLS was advertised, so a refusal is a failure even for opportunistic.
      throw new UpstreamError('tls', this.label, `STARTTLS refused: ${describe(reply)}`, { reply });
    }
    if (this.#failure) throw this.#failure;
    if (this.#parser.pending) {
      // Bytes after the 220 in plaintext would be read as if they came over TLS (CVE-2011-0411 class).
      throw new UpstreamError('protocol', this.label, 'data after STARTTLS 220 reply');
    }
    const raw = this.#socket!;
    this.#detach(raw);
    const ms = this.#opts.connectTimeoutMs;
    const secured = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({ socket: raw, ...this.#tlsOptions() });
      const settle = (err?: UpstreamError) => {
        clearTimeout(timer);
        s.off('secureConnect', onSecure);
        s.off('error', onError);
        s.off('close', onClose);
        if (err) {
          s.destroy();
          raw.destroy();
          reject(err);
        } else resolve(s);
      };
      const timer = setTimeout(
        () => settle(new UpstreamError('timeout', this.label, `TLS handshake timed out after ${ms} ms`)),
        ms,
      );
      const onSecure = () => settle();
      const onError = (err: Error) =>
        settle(new UpstreamError('tls', this.label, errText(err), { cause: err }));
      const onClose = () =>
        settle(new UpstreamError('tls', this.label, 'connection closed during TLS handshake'));
      s.on('secureConnect', onSecure);
      s.on('error', onError);
      s.on('close', onClose);
    }).catch((err: UpstreamError) => {
      this.#socket = undefined;
      this.#fail(err);
      throw err;
    });
    this.secure = true;
    this.#attach(secured);
  }

  #attach(socket: net.Socket): void {
    this.#socket = socket;
    socket.on('data', this.#onData);
    socket.on('error', this.#onError);
    socket.on('close', this.#onClose);
    socket.on('drain', this.#onDrain);
  }

  #detach(socket: net.Socket): void {
    socket.off('data', this.#onData);
    socket.off('error', this.#onError);
    socket.off('close', this.#onClose);
    socket.off('drain', this.#onDrain);
  }

  #request(raw: string | null, verb: string, timeoutMs: number): Promise<SmtpReply> {
    if (this.#failure) return Promise.reject(this.#failure);
    return new Promise<SmtpReply>((resolve, reject) => {
      if (raw === null) {
        // the greeting: nothing to send, just wait
        this.#await(verb, timeoutMs, resolve, reject);
        return;
      }
      this.#queue.push({ raw, verb, timeoutMs, resolve, reject });
      this.#pump();
    });
  }

  #await(verb: string, timeoutMs: number, resolve: Waiter['resolve'], reject: Waiter['reject']): void {
    const timer = setTimeout(() => {
      this.#fail(new UpstreamError('timeout', this.label, `no reply to ${verb} within ${timeoutMs} ms`));
    }, timeoutMs);
    this.#waiter = { verb, timer, resolve, reject };
  }

  /** No pipelining: one command in flight, the next one goes out when its predecessor's reply arrived. */
  #pump(): void {
    if (this.#waiter || this.#failure) return;
    const next = this.#queue.shift();
    if (!next) return;
    this.#await(next.verb, next.timeoutMs, next.resolve, next.reject);
    this.#socket!.write(next.raw);
  }

  #onData = (chunk: Buffer): void => {
    let replies: SmtpReply[];
    try {
      replies = this.#parser.push(chunk);
    } catch (err) {
      this.#fail(new UpstreamError('protocol', this.label, errText(err as Error)));
      return;
    }
    for (const reply of replies) {
      const w = this.#waiter;
      if (!w) {
        this.#fail(
          new UpstreamError('protocol', this.label, `unsolicited reply: ${describe(reply)}`, { reply }),
        );
        return;
      }
      if (reply.code === 421) {
        // The upstream is closing the session: whatever was asked, this connection is over.
        this.#fail(
          new UpstreamError('closed', this.label, `service not available: ${describe(reply)}`, { reply }),
        );
        return;
      }
      const wrong = unexpectedReply(w.verb, reply.code);
      if (wrong) {
        // the upstream's state is unknown from here on: never trust this connection again
        this.#fail(new UpstreamError('protocol', this.label, `${wrong}: ${describe(reply)}`, { reply }));
        return;
      }
      clearTimeout(w.timer);
      this.#waiter = undefined;
      w.resolve(reply);
    }
    this.#pump();
  };

  #onError = (err: Error): void => {
    this.#lastSocketError = err;
  };

  #onClose = (): void => {
    const why = this.#lastSocketError ? `: ${errText(this.#lastSocketError)}` : '';
    this.#fail(new UpstreamError('closed', this.label, `connection closed by upstream${why}`));
    this.#resolveClosed();
  };

  #onDrain = (): void => {
    const fns = this.#drainFns;
    this.#drainFns = [];
    for (const fn of fns) fn();
  };

  #fail(err: UpstreamError): void {
    if (this.#failure) return;
    this.#failure = err;
    this.#reusable = false;
    const w = this.#waiter;
    this.#waiter = undefined;
    if (w) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    for (const p of this.#queue.splice(0)) p.reject(err);
    const s = this.#socket;
    if (s) {
      s.destroy();
      if (s.closed) this.#resolveClosed();
    } else {
      this.#resolveClosed();
    }
    this.#onDrain();
    const onDead = this.onDead;
    this.onDead = undefined;
    onDead?.();
  }
}

function describe(r: SmtpReply): string {
  return `${r.code}${r.enhancedCode ? ` ${r.enhancedCode}` : ''} ${r.text}`.slice(0, 300);
}

function errText(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  return code && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
}

export function xclientKey(c: ClientIdentity): string {
  return JSON.stringify([c.addr, c.helo ?? null, c.proto]);
}

/** Postfix's ADDR syntax: IPv6 addresses carry the `IPV6:` prefix; IPv4-mapped ones are IPv4. */
function xclientAddress(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1];
  return net.isIPv6(ip) ? `IPV6:${ip}` : ip;
}

/** RFC 3461 xtext: '+', '=' and anything outside printable ASCII as +HH. */
function xtext(s: string): string {
  return Buffer.from(s, 'utf8').reduce(
    (out, b) =>
      out +
      (b < 0x21 || b > 0x7e || b === 0x2b || b === 0x3d
        ? `+${b.toString(16).toUpperCase().padStart(2, '0')}`
        : String.fromCharCode(b)),
    '',
  );
}
