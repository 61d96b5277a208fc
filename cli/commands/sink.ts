import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SMTPServer } from 'smtp-server';
import { CliError } from '../errors.ts';
import { parseFlags, parseHostPort, str } from '../flags.ts';

const help = `Usage: mailplus sink [--listen HOST:PORT] [--out DIR]

A local stand-in for your real mail server, for trying Mail-Plus out: accepts every message,
prints one line per message (envelope, Message-ID and size) and, with --out, saves each message as an .eml
file. It is a development tool; never expose it.

Options:
  --listen HOST:PORT   where to listen (default 127.0.0.1:2526)
  --out DIR            also write each message to DIR/<n>.eml
`;

/** The Message-ID header's value without angle brackets, or '' (header section only, unfolded). */
export function messageIdOf(message: Buffer): string {
  const end = message.indexOf('\r\n\r\n');
  const head = message.subarray(0, end < 0 ? Math.min(message.length, 64 * 1024) : end).toString('latin1');
  const m = /^message-id:[ \t]*(?:\r\n[ \t]+)*<?([^>\s]+)>?/im.exec(head);
  return m ? m[1] : '';
}

export interface RunningSink {
  close(): Promise<void>;
}

/**
 * Starts the capture sink: every message is accepted, one JSON line per message (envelope,
 * Message-ID and size) goes to `print`, and with `out` the message is saved as DIR/<n>.eml.
 */
export async function startSink(
  listen: { host: string; port: number },
  opts: { out?: string; print?: (line: string) => void } = {},
): Promise<RunningSink> {
  const { out } = opts;
  const print = opts.print ?? ((line: string) => process.stdout.write(`${line}\n`));
  if (out) await mkdir(out, { recursive: true });
  let count = 0;
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    disableReverseLookup: true,
    logger: false,
    banner: 'mailplus sink',
    // not this host's name: the relay (by default named after the host) would take a sink that
    // greets with its own name for itself, a mail loop
    name: 'mailplus-sink.localhost',
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const n = ++count;
        const body = Buffer.concat(chunks);
        print(
          JSON.stringify({
            time: new Date().toISOString(),
            msg: 'sink received a message',
            message: n,
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            to: session.envelope.rcptTo.map((r) => r.address),
            messageId: messageIdOf(body),
            size: body.length,
          }),
        );
        if (!out) return callback(null, `sink received message ${n}`);
        writeFile(join(out, `${n}.eml`), body).then(
          () => callback(null, `sink received message ${n}`),
          (err: Error) => callback(err),
        );
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => resolve());
  }).catch((err: Error) => {
    throw new CliError(`sink: cannot listen on ${listen.host}:${listen.port}: ${err.message}`, 1);
  });
  return { close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

export async function runSink(argv: string[]): Promise<number> {
  const { values, help: shown } = parseFlags(
    argv,
    { listen: { type: 'string' }, out: { type: 'string' } },
    help,
  );
  if (shown) return 0;
  const listen = parseHostPort(str(values.listen) ?? '127.0.0.1:2526', '--listen');
  const sink = await startSink(listen, { out: str(values.out) });
  process.stderr.write(`mailplus sink listening on ${listen.host}:${listen.port}\n`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  await sink.close();
  return 0;
}
