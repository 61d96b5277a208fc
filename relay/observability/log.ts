import { pseudonymWithKey } from '../trace/pseudonym.ts';

/**
 * Structured JSON logging, one line per event, metadata only: never message content, subject or
 * headers, and smtp-server's protocol logger stays off.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogSink = (line: string) => void;

export interface Logger {
  log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export function createLogger(sink: LogSink = (line) => process.stdout.write(line)): Logger {
  const log = (level: LogLevel, msg: string, fields: Record<string, unknown> = {}) => {
    sink(`${JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields })}\n`);
  };
  return {
    log,
    info: (msg, f) => log('info', msg, f),
    warn: (msg, f) => log('warn', msg, f),
    error: (msg, f) => log('error', msg, f),
  };
}

/**
 * Address pseudonymisation for logs. With a key, the local part is replaced by
 * `h:` + the first 16 hex digits of HMAC-SHA256(key, lower-cased full address), and the domain is
 * kept: operators still see which tenant/domain a transaction concerned (needed to debug routing),
 * while mailboxes are not readable and the same address maps to the same token (correlation across
 * lines), and without the key tokens cannot be reversed by hashing guessed addresses.
 * The null sender stays '<>'. Without a key addresses are logged as given.
 */
export function createPseudonymizer(key?: string | Buffer): (address: string) => string {
  if (!key || key.length === 0) return (a) => a;
  return (address) => pseudonymWithKey(key, address);
}
