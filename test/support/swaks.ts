// Runs swaks (an independent SMTP client) and parses its transcript into the server's
// replies per command. swaks exits non-zero when the transaction fails.
import { execFile } from 'node:child_process';

export interface SwaksOptions {
  host?: string;
  port: number;
  from?: string;
  /** One or more recipients. */
  to: string | string[];
  /** Full message (headers + body), CRLF or LF; swaks dot-stuffs it. Default: swaks' test message. */
  data?: string;
  /** Only the body (swaks adds its own headers). */
  body?: string;
  /** Extra headers, e.g. {'X-Test': '1'} (added to swaks' default headers). */
  headers?: Record<string, string>;
  ehlo?: string;
  /** 'starttls' = require STARTTLS, 'optional' = use it if offered, 'implicit' = TLS on connect. */
  tls?: 'starttls' | 'optional' | 'implicit';
  /** Verify the server certificate against this CA file (path). */
  tlsCa?: string;
  /** Client certificate and key (paths). */
  tlsCert?: string;
  tlsKey?: string;
  pipeline?: boolean;
  /** Stop after this command, e.g. 'RCPT'. */
  quitAfter?: string;
  timeoutSec?: number;
  extraArgs?: string[];
}

export interface SwaksReply {
  /** What the reply answers: 'CONNECT' (greeting), 'EHLO', 'MAIL', 'RCPT', 'DATA', 'END' (after the dot), 'QUIT', ... */
  command: string;
  code: number;
  /** All reply lines without the code and separator, joined with '\n'. */
  text: string;
}

export interface SwaksResult {
  exitCode: number;
  transcript: string;
  replies: SwaksReply[];
  /** The last reply for each command (RCPT: the last recipient's; see replies for all). */
  last: Record<string, SwaksReply | undefined>;
  /** Replies to RCPT in order. */
  rcpt: SwaksReply[];
  tls: boolean;
}

export async function runSwaks(opts: SwaksOptions): Promise<SwaksResult> {
  const args = [
    '--server',
    opts.host ?? '127.0.0.1',
    '--port',
    String(opts.port),
    '--to',
    Array.isArray(opts.to) ? opts.to.join(',') : opts.to,
    '--from',
    opts.from ?? 'sender@example.test',
    '--ehlo',
    opts.ehlo ?? 'client.test',
    '--timeout',
    String(opts.timeoutSec ?? 20),
  ];
  if (opts.data !== undefined) args.push('--data', '-');
  if (opts.body !== undefined) args.push('--body', opts.body);
  for (const [k, v] of Object.entries(opts.headers ?? {})) args.push('--add-header', `${k}: ${v}`);
  if (opts.tls === 'starttls') args.push('--tls');
  if (opts.tls === 'optional') args.push('--tls-optional');
  if (opts.tls === 'implicit') args.push('--tls-on-connect');
  if (opts.tlsCa) args.push('--tls-verify', '--tls-ca-path', opts.tlsCa);
  if (opts.tlsCert) args.push('--tls-cert', opts.tlsCert);
  if (opts.tlsKey) args.push('--tls-key', opts.tlsKey);
  if (opts.pipeline) args.push('--pipeline');
  if (opts.quitAfter) args.push('--quit-after', opts.quitAfter);
  args.push(...(opts.extraArgs ?? []));

  const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>(
    (resolve, reject) => {
      const child = execFile(
        'swaks',
        args,
        { timeout: ((opts.timeoutSec ?? 20) + 10) * 1000, maxBuffer: 64 * 1024 * 1024 },
        (err, stdout, stderr) => {
          const e = err as (NodeJS.ErrnoException & { code?: number | string }) | null;
          if (e && e.code === 'ENOENT') {
            reject(new Error('swaks not found: run scripts/ci-deps.sh'));
            return;
          }
          resolve({ code: typeof e?.code === 'number' ? e.code : e ? 1 : 0, stdout, stderr });
        },
      );
      if (opts.data !== undefined) child.stdin?.end(opts.data);
      else child.stdin?.end();
    },
  );
  const transcript = stdout + stderr;
  const replies = parseTranscript(transcript);
  const last: Record<string, SwaksReply | undefined> = {};
  for (const r of replies) last[r.command] = r;
  return {
    exitCode: code,
    transcript,
    replies,
    last,
    rcpt: replies.filter((r) => r.command === 'RCPT'),
    tls: /^[<>~ ]*~>/m.test(transcript) || /<~ /.test(transcript),
  };
}

/**
 * Groups swaks' "<- " / "<~ " / "<** " server lines into replies and pairs them with the client
 * commands in order (works with --pipeline). Message content lines are not commands.
 */
export function parseTranscript(transcript: string): SwaksReply[] {
  const replies: SwaksReply[] = [];
  const pending: string[] = [];
  let inContent = false;
  let current: SwaksReply | undefined;
  for (const raw of transcript.split(/\r?\n/)) {
    const client = /^ [-~]> ?(.*)$/.exec(raw);
    if (client) {
      if (!inContent) pending.push(label(client[1]));
      else if (client[1] === '.') {
        pending.push('END');
        inContent = false;
      }
      continue;
    }
    const server = /^<(?:-|~|\*\*|~\*) +(\d{3})([ -])(.*)$/.exec(raw);
    if (!server) continue;
    const [, code, sep, text] = server;
    if (!current) {
      const command =
        replies.length === 0 && pending.length === 0 ? 'CONNECT' : (pending.shift() ?? 'UNKNOWN');
      current = { command, code: Number(code), text };
      replies.push(current);
    } else {
      current.text += `\n${text}`;
    }
    if (sep === ' ') {
      if (current.command === 'DATA' && current.code === 354) inContent = true;
      current = undefined;
    }
  }
  return replies;
}

function label(clientLine: string): string {
  return clientLine.split(/[\s:]/)[0].toUpperCase();
}
