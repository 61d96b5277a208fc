// The cluster drills' sender and checker (test/e2e/mail-flow.ts) against a real SMTP server on
// loopback: 4xx replies are retried and counted, and the checker catches a message delivered twice
// (the server took it, then the connection died before the 250 reached the sender).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SMTPServer } from 'smtp-server';
import { afterEach, describe, expect, it } from 'vitest';
import { messageIdOf } from '../../cli/commands/sink.ts';
import { startProcess } from '../support/processes.ts';

const script = fileURLToPath(new URL('./mail-flow.ts', import.meta.url));
const dirs: string[] = [];
const servers: SMTPServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise<void>((r) => s.close(() => r()));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A sink that logs one JSON line per message (as `mailplus sink`), with hooks to misbehave. */
async function sink(opts: { deferFirstRcpt?: boolean; dropAfterFirstData?: boolean }) {
  const lines: string[] = [];
  const rcptSeen = new Set<string>();
  let dropped = false;
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    logger: false,
    onRcptTo(addr, _session, cb) {
      if (opts.deferFirstRcpt && !rcptSeen.has(addr.address)) {
        rcptSeen.add(addr.address);
        const err = new Error('try again later') as Error & { responseCode: number };
        err.responseCode = 451;
        return cb(err);
      }
      cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        lines.push(JSON.stringify({ messageId: messageIdOf(Buffer.concat(chunks)) }));
        if (opts.dropAfterFirstData && !dropped) {
          dropped = true;
          // accepted here, but the sender never hears it: it must retry, and the retry duplicates
          sockets.get(session.remotePort)?.destroy();
          return;
        }
        cb();
      });
    },
  });
  servers.push(server);
  const sockets = new Map<number, Socket>();
  server.server.on('connection', (sock: Socket) => {
    if (sock.remotePort) sockets.set(sock.remotePort, sock);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.server.address() as { port: number }).port;
  return { port, lines };
}

async function flow(port: number, min: number) {
  const dir = mkdtempSync(join(tmpdir(), 'mail-flow-'));
  dirs.push(dir);
  writeFileSync(join(dir, 'stop'), '');
  const proc = startProcess(process.execPath, [
    script,
    'send',
    '--server',
    `127.0.0.1:${port}`,
    '--to-domain',
    'e2e.example.com',
    '--min',
    String(min),
    '--stop-file',
    join(dir, 'stop'),
    '--out',
    join(dir, 'sent.json'),
    '--concurrency',
    '2',
    '--max-seconds',
    '30',
  ]);
  const code = await proc.exited;
  const check = async (sinkLines: string[], extra: string[] = []) => {
    writeFileSync(join(dir, 'sink.log'), `${sinkLines.join('\n')}\n`);
    const c = startProcess(process.execPath, [
      script,
      'check',
      '--sent',
      join(dir, 'sent.json'),
      '--sink-log',
      join(dir, 'sink.log'),
      '--min',
      String(min),
      ...extra,
    ]);
    return { code: await c.exited, out: c.lines.map((l) => l.text).join('\n') };
  };
  return {
    code,
    out: proc.lines.map((l) => l.text).join('\n'),
    sent: JSON.parse(readFileSync(join(dir, 'sent.json'), 'utf8')),
    check,
  };
}

describe('test/e2e/mail-flow.ts', () => {
  it('retries 4xx as an MTA does; every accepted message at the sink once passes the check', async () => {
    const s = await sink({ deferFirstRcpt: true });
    const f = await flow(s.port, 20);
    expect(f.code, f.out).toBe(0);
    expect(f.sent.accepted.length).toBeGreaterThanOrEqual(20);
    // every message was deferred once at RCPT, then accepted
    expect(f.sent.retries).toBe(f.sent.accepted.length);
    expect(f.sent.retriesByReason).toEqual({ 451: f.sent.accepted.length });
    const c = await f.check(s.lines);
    expect(c.code, c.out).toBe(0);
    expect(c.out).toMatch(/0 missing, 0 duplicated/);
  }, 30_000);

  it('a message taken but never confirmed is retried, and the check reports the duplicate', async () => {
    const s = await sink({ dropAfterFirstData: true });
    const f = await flow(s.port, 10);
    expect(f.code, f.out).toBe(0);
    expect(f.sent.ambiguous).toBe(1);
    const c = await f.check(s.lines);
    expect(c.code).toBe(1);
    expect(c.out).toMatch(/1 duplicated/);
    expect(c.out).toMatch(/FAIL delivered more than once/);
  }, 30_000);

  it('the check reports a message the sink never logged, and too few 250s inside the windows', async () => {
    const s = await sink({});
    const f = await flow(s.port, 5);
    expect(f.code, f.out).toBe(0);
    const c = await f.check(s.lines.slice(1));
    expect(c.code).toBe(1);
    expect(c.out).toMatch(/1 missing/);
    // all delivered, but none inside the drill's window
    const early = await f.check(s.lines, ['--window', `0-${f.sent.startedAt - 1}`]);
    expect(early.code).toBe(1);
    expect(early.out).toMatch(/only 0 accepted during the drill, want 5/);
    const whole = await f.check(s.lines, ['--window', `${f.sent.startedAt}-${f.sent.endedAt}`]);
    expect(whole.code, whole.out).toBe(0);
  }, 30_000);
});
