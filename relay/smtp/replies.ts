// Every reply text the SMTP side writes itself, in one place (docs/architecture.md has the table of
// causes, replies and metric reasons). Replies decided elsewhere keep their deciders: routing
// (relay/routing/decide.ts REPLIES, shared with `mailplus route`), DNS blocklists
// (relay/dnsbl/policy.ts) and sender authentication (relay/auth/decide.ts); an upstream's own
// refusal is passed on by upstreamRefusal(). Texts start with their enhanced status code, so
// smtp-server-overrides.ts keeps smtp-server from adding another.
import { REPLIES as ROUTING_REPLIES } from '../routing/decide.ts';
import { type SmtpError, smtpError } from './smtp-error.ts';
import type { SmtpReply } from './upstream-contract.ts';

export { type SmtpError, smtpError } from './smtp-error.ts';

export const REPLY = {
  tooManyRecipients: () => smtpError(452, '4.5.3', 'Too many recipients'),
  rateLimited: () => smtpError(451, '4.7.1', 'Rate limit exceeded, try again later'),
  split: () => {
    const r = ROUTING_REPLIES.split();
    return smtpError(r.code, r.enhancedCode, r.message);
  },
  upstreamUnavailable: () => smtpError(451, '4.4.1', 'Upstream unavailable, try again later'),
  upstreamLost: () => smtpError(451, '4.4.2', 'Upstream connection lost, try again later'),
  upstreamProtocol: () => smtpError(451, '4.5.0', 'Upstream protocol error, try again later'),
  tooBig: (n: number) => smtpError(552, '5.3.4', sizeLimitText(n)),
  badLineEnding: () => smtpError(550, '5.6.0', 'Bare CR or LF next to a line-leading dot; message refused'),
  noConfig: () => smtpError(451, '4.3.0', 'Relay has no routing config yet, try again later'),
  noPostmaster: () =>
    smtpError(550, '5.1.1', 'No mailbox for <postmaster> without a domain here; use postmaster@DOMAIN'),
  tooManyHops: () => smtpError(554, '5.4.6', 'Too many hops'),
  loop: (recipient: string) => smtpError(554, '5.4.6', `Mail for <${recipient}> loops back to myself`),
  tooManyTransactions: () =>
    smtpError(421, '4.7.0', 'Too many transactions in one session, closing connection'),
  headerTooLarge: (n: number) =>
    smtpError(552, '5.3.4', `Header section exceeds ${n} bytes (sender authentication reads it whole)`),
};

function sizeLimitText(n: number): string {
  return `Message size exceeds fixed limit of ${n} bytes`;
}

/**
 * Replies the listener (relay/smtp/smtp-server-overrides.ts) and the connection front (relay/relay-front.ts) write on
 * the socket: `enhanced text`, the code given separately.
 */
export const SESSION_REPLY = {
  /** 421: the relay drains (SIGTERM); a client arriving or idle now should try later. */
  draining: '4.3.2 Service shutting down, try again later',
  sessionTimeLimit: '4.4.2 Session time limit exceeded, closing connection',
  tooManyCommands: '4.7.0 Too many commands in one session, closing connection',
  tooManyClients: (hostname: string) => `${hostname} Too many connected clients, try again in a moment`,
  /** 552 to MAIL FROM with a SIZE over the relay-wide limit. */
  tooBig: (n: number) => `5.3.4 ${sizeLimitText(n)}`,
  /** 553; Postfix's reply to an unicode address in a transaction that did not declare SMTPUTF8. */
  undeclaredUtf8: '5.6.7 Must declare SMTPUTF8 to send unicode address',
  /** 553 (address-form.ts isIdnaDomain). */
  notIdnaSender: '5.1.7 Sender domain is not in IDNA form (U-labels or A-labels)',
  notIdnaRecipient: '5.1.3 Recipient domain is not in IDNA form (U-labels or A-labels)',
  /** 421 from smtp-server's parser (a command line over maxCommandLength, for one). */
  parserError: (message: string) => `Error: ${message}`,
};

/** Replies to fairness limits (relay/smtp/fairness.ts): Postfix's for the same limit. */
export const FAIRNESS_REPLY = {
  /** Postfix smtpd (anvil connection count limit); sent before the greeting, then the connection closes. */
  tooManyConnections: (hostname: string, client: string) =>
    `421 4.7.0 ${hostname} Error: too many connections from ${client}`,
  /** Postfix smtpd_client_message_rate_limit's reply: the client has too much mail in flight here. */
  upstreamPerClient: (client: string) => smtpError(450, '4.7.1', `Error: too much mail from ${client}`),
  /** Postfix has no inbound per-destination limit; 4.4.5 is RFC 3463's "system congestion". */
  upstreamPerTenant: () =>
    smtpError(451, '4.4.5', 'Error: too many concurrent transactions for this domain, try again later'),
  /** Postfix smtpd_timeout; the session is closed. */
  holdTimeout: (hostname: string) => `4.4.2 ${hostname} Error: timeout exceeded`,
  /** Postfix smtpd_hard_error_limit; the session is closed. */
  tooManyErrors: (hostname: string) => `4.7.0 ${hostname} Error: too many errors`,
  /** Postfix smtpd_recipient_limit. */
  tooManyRecipients: () => smtpError(452, '4.5.3', 'Error: too many recipients'),
};

/**
 * The upstream's refusal for the client: its code and enhanced code, its text prefixed `upstream: `.
 * An upstream that names the rewritten recipient is shown naming the one the client sent: the
 * rewritten address is the tenant's internal business.
 */
export function upstreamRefusal(r: SmtpReply, recipient?: string, rewrittenTo?: string): SmtpError {
  const enhanced = r.enhancedCode ?? `${Math.floor(r.code / 100)}.0.0`;
  const text =
    recipient !== undefined && rewrittenTo !== undefined
      ? r.text.replace(new RegExp(escapeRegExp(rewrittenTo), 'gi'), recipient)
      : r.text;
  return smtpError(r.code, enhanced, `upstream: ${text}`);
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
