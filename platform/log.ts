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
