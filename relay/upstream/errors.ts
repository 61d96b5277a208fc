import type { SmtpReply } from './reply.ts';

/**
 * - `connect`: no SMTP session could be established (TCP failure, or the greeting/EHLO was refused: `reply` set)
 * - `tls`: TLS handshake or certificate failure, STARTTLS missing under `required`, or STARTTLS refused
 * - `timeout`: a connect, handshake, reply or pool-acquire deadline passed
 * - `protocol`: the upstream broke SMTP (malformed/oversized/unsolicited reply)
 * - `closed`: the connection went away (socket closed or reset, 421 reply: `reply` set, pool closed)
 * - `loop`: the upstream is this relay or its fleet (it greeted with our own name or fleet mark)
 */
export type UpstreamErrorKind = 'connect' | 'tls' | 'timeout' | 'protocol' | 'closed' | 'loop';

export class UpstreamError extends Error {
  override name = 'UpstreamError';
  kind: UpstreamErrorKind;
  reply?: SmtpReply;
  /** host:port */
  target: string;

  constructor(
    kind: UpstreamErrorKind,
    target: string,
    message: string,
    opts: { reply?: SmtpReply; cause?: unknown } = {},
  ) {
    super(`upstream ${target}: ${message}`, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.kind = kind;
    this.target = target;
    if (opts.reply) this.reply = opts.reply;
  }
}

/** Refuses values that could smuggle extra SMTP commands (CR, LF, NUL) before anything is written. */
export function assertSafe(what: string, value: string): void {
  if (/[\r\n\0]/.test(value)) {
    throw new TypeError(`${what} contains CR, LF or NUL; refusing to send it upstream`);
  }
}
