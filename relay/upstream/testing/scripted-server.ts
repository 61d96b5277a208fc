// A tiny scripted SMTP peer for tests: replies per command are configurable, STARTTLS and implicit TLS
// are supported, and every byte received (after TLS decryption) is recorded exactly, so tests can assert
// byte-faithful pass-through. The content of each message is kept still dot-stuffed, as on the wire.

import net from 'node:net';
import tls from 'node:tls';

export interface ScriptedSession {
  index: number;
  /** Command lines received (without CRLF), in order; content is not included. */
  commands: string[];
  /** Every byte received on this session, after TLS decryption. */
  readonly raw: Buffer;
  /** Content of each completed DATA phase: bytes between the 354 and the terminator line ".\r\n". */
  messages: Buffer[];
  /** Bytes received in the DATA phase that never saw a terminator (connection lost mid-content). */
  readonly partial: Buffer | undefined;
  tls: boolean;
  closed: boolean;
  socket: net.Socket;
  /** Count of commands with this verb so far on this session (including the current one). */
  count(verb: string): number;
}

/** A reply line (or several joined with \r\n), null for no reply at all, or an action. */
export type ScriptedReply = string | null | { reply?: string; close?: boolean; destroy?: boolean };
export type Responder = ScriptedReply | ((line: string, session: ScriptedSession) => ScriptedReply);

export interface ScriptedServerOptions {
  /** Default '220 scripted.test ESMTP'; null: never greet. */
  greeting?: Responder;
  /** EHLO extension lines; STARTTLS is added when `tls` is set and not implicit. */
  extensions?: string[];
  /** Key and certificate for STARTTLS (or implicit TLS). */
  tls?: { key: string; cert: string };
  implicit?: boolean;
  /** Per verb (EHLO, HELO, MAIL, RCPT, DATA, DOT for the final reply, RSET, QUIT, STARTTLS, NOOP). */
  replies?: Record<string, Responder>;
}

const CRLF = Buffer.from('\r\n');
const DEFAULT_EXTENSIONS = ['PIPELINING', 'SIZE 10485760', '8BITMIME', 'ENHANCEDSTATUSCODES', 'SMTPUTF8'];

export class ScriptedServer {
  readonly sessions: ScriptedSession[] = [];
  #server: net.Server;
  #opts: ScriptedServerOptions;
  #sockets = new Set<net.Socket>();

  private constructor(opts: ScriptedServerOptions) {
    this.#opts = opts;
    this.#server = net.createServer((socket) => this.#accept(socket));
  }

  static async start(opts: ScriptedServerOptions = {}, host = '127.0.0.1'): Promise<ScriptedServer> {
    const s = new ScriptedServer(opts);
    await new Promise<void>((resolve, reject) => {
      s.#server.once('error', reject);
      s.#server.listen(0, host, () => {
        s.#server.off('error', reject);
        resolve();
      });
    });
    return s;
  }

  get port(): number {
    return (this.#server.address() as net.AddressInfo).port;
  }

  /** Sessions whose socket is still open. */
  get openSessions(): number {
    return this.sessions.filter((s) => !s.closed).length;
  }

  /** Changes a reply for sessions and commands still to come. */
  setReply(verb: string, r: Responder): void {
    this.#opts.replies = { ...this.#opts.replies, [verb]: r };
  }

  /** Resolves when predicate() holds, polling every 5 ms; rejects after timeoutMs. */
  async waitFor(predicate: () => boolean, timeoutMs = 2000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (!predicate()) {
      if (Date.now() > until) throw new Error('ScriptedServer.waitFor timed out');
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #accept(plain: net.Socket): void {
    this.#sockets.add(plain);
    // without it, Nagle holds a late write (an idle 421) behind the peer's delayed ACK for ~40 ms
    plain.setNoDelay(true);
    plain.on('close', () => this.#sockets.delete(plain));
    plain.on('error', () => {});
    let socket: net.Socket = plain;
    const session: ScriptedSession = {
      index: this.sessions.length,
      commands: [],
      get raw() {
        return Buffer.concat(rawChunks);
      },
      messages: [],
      get partial() {
        return inData && contentLen > 0 ? Buffer.concat(content) : undefined;
      },
      tls: false,
      closed: false,
      socket,
      count: (verb) => session.commands.filter((c) => verbOf(c) === verb).length,
    };
    this.sessions.push(session);
    plain.on('close', () => {
      session.closed = true;
    });

    let buf = Buffer.alloc(0);
    let inData = false;
    let content: Buffer[] = [];
    let contentLen = 0;
    let tail = CRLF;
    const rawChunks: Buffer[] = [];
    const write = (r: ScriptedReply): void => {
      if (r === null || socket.destroyed) return;
      if (typeof r === 'string') {
        socket.write(`${r}\r\n`);
        return;
      }
      if (r.reply !== undefined) socket.write(`${r.reply}\r\n`);
      if (r.destroy) socket.destroy();
      else if (r.close) socket.end();
    };
    const respond = (verb: string, line: string, fallback: Responder): ScriptedReply => {
      const replies = this.#opts.replies ?? {};
      const r = verb in replies ? replies[verb] : fallback;
      return typeof r === 'function' ? r(line, session) : r;
    };

    const onData = (chunk: Buffer): void => {
      rawChunks.push(chunk);
      buf = Buffer.concat([buf, chunk]);
      while (buf.length > 0) {
        if (inData) {
          // search only the new bytes plus the last 4 before them; a virtual CRLF precedes the content
          const window = Buffer.concat([tail, buf]);
          const at = window.indexOf('\r\n.\r\n');
          if (at === -1) {
            content.push(buf);
            contentLen += buf.length;
            tail = window.subarray(-4);
            buf = Buffer.alloc(0);
            return;
          }
          const all = Buffer.concat([...content, buf]);
          const msgEnd = contentLen - tail.length + at + 2;
          session.messages.push(all.subarray(0, msgEnd));
          buf = all.subarray(msgEnd + 3);
          content = [];
          contentLen = 0;
          tail = CRLF;
          inData = false;
          write(respond('DOT', '.', '250 2.0.0 Ok: queued as SCRIPTED'));
          continue;
        }
        const nl = buf.indexOf('\r\n');
        if (nl < 0) return;
        const line = buf.subarray(0, nl).toString('utf8');
        buf = buf.subarray(nl + 2);
        session.commands.push(line);
        const verb = verbOf(line);
        switch (verb) {
          case 'EHLO': {
            const exts = [...(this.#opts.extensions ?? DEFAULT_EXTENSIONS)];
            if (this.#opts.tls && !this.#opts.implicit && !session.tls) exts.push('STARTTLS');
            const lines = ['scripted.test greets you', ...exts];
            write(
              respond(
                'EHLO',
                line,
                lines.map((l, i) => `250${i === lines.length - 1 ? ' ' : '-'}${l}`).join('\r\n'),
              ),
            );
            break;
          }
          case 'HELO':
            write(respond('HELO', line, '250 scripted.test'));
            break;
          case 'MAIL':
            write(respond('MAIL', line, '250 2.1.0 Ok'));
            break;
          case 'RCPT':
            write(respond('RCPT', line, '250 2.1.5 Ok'));
            break;
          case 'DATA': {
            const r = respond('DATA', line, '354 End data with <CR><LF>.<CR><LF>');
            if (r === '354' || (typeof r === 'string' && r.startsWith('354'))) inData = true;
            write(r);
            break;
          }
          case 'RSET':
            write(respond('RSET', line, '250 2.0.0 Ok'));
            break;
          case 'NOOP':
            write(respond('NOOP', line, '250 2.0.0 Ok'));
            break;
          case 'QUIT':
            write(respond('QUIT', line, { reply: '221 2.0.0 Bye', close: true }));
            break;
          case 'STARTTLS': {
            const r = respond('STARTTLS', line, '220 2.0.0 Ready to start TLS');
            write(r);
            if (this.#opts.tls && typeof r === 'string' && r.startsWith('220') && !r.includes('\n')) {
              socket.off('data', onData);
              const secured = new tls.TLSSocket(socket, { isServer: true, ...this.#opts.tls });
              secured.on('error', () => {});
              secured.on('data', onData);
              socket = secured;
              session.socket = secured;
              session.tls = true;
              buf = Buffer.alloc(0);
              return;
            }
            break;
          }
          default:
            write(respond(verb, line, '502 5.5.2 Command not recognized'));
        }
      }
    };

    const greet = () =>
      write(
        respond(
          'GREETING',
          '',
          this.#opts.greeting === undefined ? '220 scripted.test ESMTP' : this.#opts.greeting,
        ),
      );
    if (this.#opts.implicit && this.#opts.tls) {
      const secured = new tls.TLSSocket(plain, { isServer: true, ...this.#opts.tls });
      secured.on('error', () => {});
      socket = secured;
      session.socket = secured;
      session.tls = true;
      secured.on('data', onData);
      secured.once('secure', greet);
    } else {
      plain.on('data', onData);
      greet();
    }
  }
}

function verbOf(line: string): string {
  return line.split(/[ :]/, 1)[0].toUpperCase();
}
