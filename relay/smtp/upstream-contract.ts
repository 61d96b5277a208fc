import type { Upstream } from '../../contract/config/types.gen.ts';
import type { MailParams } from '../upstream/connection.ts';
import type { SmtpReply } from '../upstream/reply.ts';

/**
 * What the SMTP side needs from relay/upstream: the pool opens an upstream transaction (session +
 * MAIL FROM) and the transaction takes RCPTs and raw, still dot-stuffed content.
 */
export interface UpstreamTx {
  rcpt(address: string): Promise<SmtpReply>;
  /** DATA; 354 expected. */
  data(): Promise<SmtpReply>;
  write(chunk: Buffer): boolean;
  once(event: 'drain', listener: () => void): unknown;
  /** Sends the terminator and resolves with the final reply. */
  end(): Promise<SmtpReply>;
  /** Destroys the upstream connection: the upstream discards the message. */
  abort(): void;
  /** RSET and back to the pool. */
  release(): void;
}

export type BeginResult = { ok: true; tx: UpstreamTx; reply: SmtpReply } | { ok: false; reply: SmtpReply };

export interface UpstreamPoolLike {
  begin(target: Upstream, mailFrom: string, params: MailParams): Promise<BeginResult>;
  close(): Promise<void>;
}

export type { MailParams, SmtpReply };
