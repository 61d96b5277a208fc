import type net from 'node:net';
import type tls from 'node:tls';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { SMTPConnection, type SMTPConnectionOptions } from 'smtp-server/lib/smtp-connection.js';
import type { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import { isIdnaDomain, needsSmtpUtf8, receivedPath } from './address-form.ts';
import type { LimitName } from './limit-names.ts';
import { RawDataStream } from './raw-data-stream.ts';
import { FAIRNESS_REPLY, SESSION_REPLY } from './replies.ts';

/** The smtp-server version these overrides were written against (package.json pins it exactly). */
export const SMTP_SERVER_VERSION = '3.21.6';

/**
 * Every override of smtp-server internals lives in this module, against the exact version pinned in
 * package.json (SMTP_SERVER_VERSION). smtp-server-overrides.test.ts fails loudly when an upgrade
 * moves them: it checks the installed version, that each overridden method still exists with the
 * arity and source it had, and exercises each override over real SMTP. On an upgrade, read each
 * method's new source, adapt the override, then update the version and OVERRIDDEN there.
 *
 *  - init(): SMTPConnection waits a fixed 100 ms before the greeting (early-talker detection),
 *    capping one-message-per-connection throughput at 10 msg/s per connection; ours keeps the
 *    listener setup and maxClients check, pauses `greetPauseMs` (default 0), refuses while draining
 *    and starts the session time limit.
 *  - _createParser(): RawDataStream (raw-data-stream.ts) passes the dot-stuffed DATA bytes through
 *    untouched.
 *  - send(): our replies carry their enhanced code in the text (replies.ts): no second one; counts
 *    errors for the soft/hard error limits.
 *  - _onCommand(): command limit, drain, error limits and the error-sleep tarpit.
 *  - _validateMailParams(): our 552 text for a SIZE over the limit.
 *  - _parseAddressCommand(): keeps the address as the client wrote it (smtp-server decodes A-label
 *    domains to Unicode); handler_MAIL()/handler_RCPT() refuse a non-ASCII address in a transaction
 *    without SMTPUTF8, and a non-ASCII domain not written as IDNA U-labels (address-form.ts).
 *  - _resetSession(): RSET, EHLO, STARTTLS and the end of DATA drop the upstream transaction.
 *  - _onClose(): clears our timers.
 *  - SMTPServer.connect(): builds a RelayConnection (our front server accepts the sockets).
 */

export interface SessionHooks {
  /** RSET, EHLO, STARTTLS and the end of DATA reset the envelope: drop any upstream transaction. */
  onReset(session: SMTPServerSession): void;
  isDraining(): boolean;
  /** True while the session has an envelope in progress (drain lets it finish). */
  inTransaction(session: SMTPServerSession): boolean;
  /** A session-level fairness limit was applied (metrics). */
  onLimit?(limit: LimitName): void;
}

export interface ListenerSettings {
  greetPauseMs: number;
  maxCommands: number;
  maxSessionMs: number;
  maxMessageSize: number;
  /** Postfix smtpd_soft_error_limit / smtpd_hard_error_limit / smtpd_error_sleep_time; 0 = off. */
  softErrorLimit: number;
  hardErrorLimit: number;
  errorSleepMs: number;
  hooks: SessionHooks;
}

const ENHANCED_PREFIX = /^[245]\.\d{1,3}\.\d{1,3} /;

export class RelayConnection extends SMTPConnection {
  private commandCount = 0;
  /** 4xx/5xx replies since the last delivered message (Postfix's error count). */
  private errorCount = 0;
  private sessionTimer: NodeJS.Timeout | undefined;
  private errorSleep: NodeJS.Timeout | undefined;

  private get relay(): ListenerSettings {
    return (this._server as RelaySmtpServer).relay;
  }

  override init(): void {
    this._setListeners(() => {
      if (
        this._server.options.maxClients &&
        this._server.connections.size > this._server.options.maxClients
      ) {
        return this.send(421, SESSION_REPLY.tooManyClients(this.name), false);
      }
      if (this.relay.hooks.isDraining()) {
        return this.send(421, SESSION_REPLY.draining);
      }
      this.sessionTimer = setTimeout(() => {
        this.send(421, SESSION_REPLY.sessionTimeLimit);
      }, this.relay.maxSessionMs);
      this.sessionTimer.unref();
      const pause = this.relay.greetPauseMs;
      if (pause > 0) setTimeout(() => this.connectionReady(), pause).unref();
      else this.connectionReady();
    });
  }

  override _createParser(): SMTPStream {
    const parser = new RawDataStream({ maxCommandLength: this._server.options.maxCommandLength });
    parser.oncommand = (command, callback) => this._onCommand(command, callback);
    parser.on('error', (err: Error) => {
      this.send(421, SESSION_REPLY.parserError(err.message));
    });
    return parser;
  }

  /** Our replies carry their enhanced code in the text; don't let smtp-server add a second one. */
  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    // smtp-server's context for a delivered message; Postfix counts errors "without delivering mail"
    if (context === 'DATA_OK') this.errorCount = 0;
    else if (code >= 400 && code !== 421) this.errorCount++;
    super.send(code, data, typeof data === 'string' && ENHANCED_PREFIX.test(data) ? false : context);
  }

  override _onCommand(command: Buffer, callback?: () => void): void {
    if (this._ready && !this._upgrading) {
      this.commandCount++;
      if (this.commandCount > this.relay.maxCommands) {
        this.send(421, SESSION_REPLY.tooManyCommands);
        return;
      }
      if (this.relay.hooks.isDraining() && !this.relay.hooks.inTransaction(this.session)) {
        this.send(421, SESSION_REPLY.draining);
        return;
      }
      const { softErrorLimit, hardErrorLimit, errorSleepMs } = this.relay;
      if (hardErrorLimit > 0 && this.errorCount >= hardErrorLimit) {
        this.relay.hooks.onLimit?.('errors_per_session');
        this.send(421, FAIRNESS_REPLY.tooManyErrors(this.name));
        return;
      }
      if (softErrorLimit > 0 && errorSleepMs > 0 && this.errorCount >= softErrorLimit) {
        // tarpit: the parser reads nothing more from this client until the delayed command is
        // answered, so a junk session costs the relay one command per errorSleepMs
        this.relay.hooks.onLimit?.('error_sleep');
        this.errorSleep = setTimeout(() => super._onCommand(command, callback), errorSleepMs);
        return;
      }
    }
    super._onCommand(command, callback);
  }

  override _validateMailParams(parsed: Parameters<SMTPConnection['_validateMailParams']>[0]) {
    const err = super._validateMailParams(parsed);
    if (err && err.code === 552) {
      return {
        code: 552,
        message: SESSION_REPLY.tooBig(this.relay.maxMessageSize),
        enhancedCode: null,
      };
    }
    return err;
  }

  override _parseAddressCommand(
    rawName: string,
    rawCommand: Buffer | string,
  ): ReturnType<SMTPConnection['_parseAddressCommand']> {
    const parsed = super._parseAddressCommand(rawName, rawCommand);
    if (parsed === false || !parsed.address) return parsed;
    const received = receivedPath(rawCommand.toString());
    // address literals keep smtp-server's normalisation ([IPv6:…]); only the domain's form differs
    if (received !== undefined && !received.endsWith(']')) parsed.address = received;
    return parsed;
  }

  override handler_MAIL(command: Buffer, callback: () => void): void {
    const parsed = this.session.envelope.mailFrom ? false : this._parseAddressCommand('mail from', command);
    const declared =
      parsed && parsed.args !== false && (parsed.args as Record<string, unknown>).SMTPUTF8 === true;
    if (parsed && this.refusedAddress(parsed.address, !!declared, SESSION_REPLY.notIdnaSender)) {
      callback();
      return;
    }
    super.handler_MAIL(command, callback);
  }

  override handler_RCPT(command: Buffer, callback: () => void): void {
    const envelope = this.session.envelope;
    const parsed = envelope.mailFrom ? this._parseAddressCommand('rcpt to', command) : false;
    if (parsed && this.refusedAddress(parsed.address, !!envelope.smtpUtf8, SESSION_REPLY.notIdnaRecipient)) {
      callback();
      return;
    }
    super.handler_RCPT(command, callback);
  }

  /** 553 for a non-ASCII address without SMTPUTF8, or a domain not in IDNA form; true when refused. */
  private refusedAddress(address: string, smtpUtf8: boolean, notIdnaReply: string): boolean {
    if (!smtpUtf8 && needsSmtpUtf8(address)) {
      this.send(553, SESSION_REPLY.undeclaredUtf8);
      return true;
    }
    if (!isIdnaDomain(address)) {
      this.send(553, notIdnaReply);
      return true;
    }
    return false;
  }

  override _resetSession(): void {
    if (this.session.envelope) this.relay.hooks.onReset(this.session);
    super._resetSession();
  }

  override _onClose(): void {
    clearTimeout(this.sessionTimer);
    clearTimeout(this.errorSleep);
    super._onClose();
  }

  /** Whether an envelope is open (for drain). */
  get busy(): boolean {
    return this.relay.hooks.inTransaction(this.session);
  }
}

export class RelaySmtpServer extends SMTPServer {
  relay: ListenerSettings;

  constructor(options: SMTPServerOptions, relay: ListenerSettings) {
    super(options);
    this.relay = relay;
  }

  override connect(socket: net.Socket | tls.TLSSocket, socketOptions?: SMTPConnectionOptions | null): void {
    const connection = new RelayConnection(this, socket, socketOptions);
    this.connections.add(connection);
    connection.on('error', (err: Error) => this._onError(err));
    connection.on('connect', (data) => this._onClientConnect(data));
    connection.init();
  }
}
