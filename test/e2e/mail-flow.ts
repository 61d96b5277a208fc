// Continuous mail for the end-to-end drills (rolling restart, helm upgrade): a sender that behaves
// like an MTA's queue, and a check of what the sink received. No dependencies beyond Node.
//
//   node test/e2e/mail-flow.ts send --server HOST:PORT --to-domain D --min N --stop-file F
//        --out FILE [--concurrency C] [--max-seconds S] [--progress FILE] [--pid-file FILE]
//     Sends numbered messages (unique Message-ID each) over C parallel connections-per-message
//     until F exists and at least N were accepted with 250, then writes FILE (JSON: every accepted
//     Message-ID with the time of its 250, retry counts). A 4xx reply, a refused or reset
//     connection, or a timeout puts the message back in the queue (retried after a short pause,
//     as an MTA would); a 5xx fails it permanently. A connection lost after the final "." and
//     before the reply is counted as ambiguous (the sender cannot know; an MTA retries, which may
//     duplicate). Bounded by --max-seconds (default 300).
//   node test/e2e/mail-flow.ts check --sent FILE --sink-log FILE [--window FROM-UNTIL ...] [--min N]
//     Compares the accepted Message-IDs with the sink's log lines (JSON with messageId): prints a
//     summary and exits 1 when one is missing at the sink, arrived twice, or the sink got one
//     that was never accepted, or fewer than N got their 250 inside the windows (epoch ms).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { parseArgs } from 'node:util';

interface SentReport {
  accepted: { id: string; at: number }[];
  /** Attempts that ended in 4xx or a lost/refused connection and were retried. */
  retries: number;
  retriesByReason: Record<string, number>;
  /** Connection lost after the final "." without a reply (then retried). */
  ambiguous: number;
  permanent: { id: string; reply: string }[];
  startedAt: number;
  endedAt: number;
}

type Outcome =
  | { kind: 'ok' }
  | { kind: 'retry'; reason: string; ambiguous: boolean }
  | { kind: 'fail'; reply: string };

const STEP_TIMEOUT_MS = 30_000;

/** One SMTP transaction on a fresh connection: greeting, EHLO, MAIL, RCPT, DATA, content, QUIT. */
function sendOne(host: string, port: number, from: string, to: string, id: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const socket: Socket = connect({ host, port });
    let buf = '';
    let step = 0;
    let settled = false;
    let sentDot = false;
    const finish = (o: Outcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (o.kind === 'ok') socket.end('QUIT\r\n');
      else socket.destroy();
      resolve(o);
    };
    let timer = setTimeout(
      () => finish({ kind: 'retry', reason: 'timeout', ambiguous: sentDot }),
      STEP_TIMEOUT_MS,
    );
    const content =
      `From: <${from}>\r\nTo: <${to}>\r\nSubject: drill ${id}\r\nMessage-ID: <${id}>\r\n` +
      `Date: ${new Date().toUTCString()}\r\n\r\nmail flow drill message ${id}\r\n.\r\n`;
    const commands = ['EHLO drill.invalid', `MAIL FROM:<${from}>`, `RCPT TO:<${to}>`, 'DATA', content];
    socket.setEncoding('latin1');
    socket.on('error', (err: NodeJS.ErrnoException) => {
      finish({ kind: 'retry', reason: err.code ?? 'error', ambiguous: sentDot });
    });
    socket.on('close', () => finish({ kind: 'retry', reason: 'closed', ambiguous: sentDot }));
    socket.on('data', (chunk: string) => {
      buf += chunk;
      for (;;) {
        // a reply ends with a line "NNN text" (continuation lines are "NNN-text")
        const m = /^(\d{3}) [^\r\n]*\r?\n/m.exec(buf);
        if (!m) return;
        const reply = buf.slice(0, m.index + m[0].length).trim();
        buf = buf.slice(m.index + m[0].length);
        const code = Number(m[1]);
        const want = step === 4 ? 354 : step === 0 ? 220 : 250;
        if (code >= 500) return finish({ kind: 'fail', reply });
        if (code >= 400) return finish({ kind: 'retry', reason: `${code}`, ambiguous: false });
        if (step === 5) return finish(code === 250 ? { kind: 'ok' } : { kind: 'fail', reply });
        if (code !== want) return finish({ kind: 'fail', reply });
        clearTimeout(timer);
        timer = setTimeout(
          () => finish({ kind: 'retry', reason: 'timeout', ambiguous: sentDot }),
          STEP_TIMEOUT_MS,
        );
        const next = commands[step];
        step++;
        if (step === 5) sentDot = true;
        socket.write(step === 5 ? next : `${next}\r\n`);
      }
    });
  });
}

async function send(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      server: { type: 'string' },
      'to-domain': { type: 'string' },
      min: { type: 'string' },
      'stop-file': { type: 'string' },
      out: { type: 'string' },
      concurrency: { type: 'string', default: '8' },
      'max-seconds': { type: 'string', default: '300' },
      progress: { type: 'string' },
      prefix: { type: 'string', default: 'drill' },
      'pid-file': { type: 'string' },
      // new messages per second at most (retries not counted); 0: as fast as it goes. Bounds what
      // the sink logs: kubelet rotates a container log at 10 MiB and `kubectl logs` shows the last file only
      rate: { type: 'string', default: '0' },
    },
  });
  const [host, portText] = (values.server ?? '').split(/:(?=\d+$)/);
  const port = Number(portText);
  if (!host || !port || !values['to-domain'] || !values.min || !values['stop-file'] || !values.out) {
    throw new Error('send needs --server HOST:PORT --to-domain --min --stop-file --out');
  }
  // the driver's clean-up stops this process by its PID (it runs behind nsenter or kubectl)
  if (values['pid-file']) writeFileSync(values['pid-file'], `${process.pid}\n`);
  const min = Number(values.min);
  const deadline = Date.now() + Number(values['max-seconds']) * 1000;
  const stopFile = values['stop-file'];
  const run = `${values.prefix}-${Date.now().toString(36)}`;
  const report: SentReport = {
    accepted: [],
    retries: 0,
    retriesByReason: {},
    ambiguous: 0,
    permanent: [],
    startedAt: Date.now(),
    endedAt: 0,
  };
  const queue: string[] = []; // messages to retry, oldest first
  let next = 0;
  const done = () => report.accepted.length >= min && existsSync(stopFile);
  const progress = setInterval(() => {
    if (values.progress) writeFileSync(values.progress, `${report.accepted.length} ${report.retries}\n`);
  }, 500);
  const attempt = async (id: string) => {
    const o = await sendOne(
      host,
      port,
      'drill@example.org',
      `flow-${id.split('@')[0]}@${values['to-domain']}`,
      id,
    );
    if (o.kind === 'ok') report.accepted.push({ id, at: Date.now() });
    else if (o.kind === 'fail') report.permanent.push({ id, reply: o.reply });
    else {
      report.retries++;
      report.retriesByReason[o.reason] = (report.retriesByReason[o.reason] ?? 0) + 1;
      if (o.ambiguous) report.ambiguous++;
      queue.push(id);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  const worker = async () => {
    // new messages until told to stop, then only the retry queue: an MTA does not drop its queue
    while (Date.now() < deadline) {
      const rate = Number(values.rate);
      if (rate > 0 && !queue.length && next >= ((Date.now() - report.startedAt) / 1000) * rate) {
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      const id = queue.shift() ?? (done() ? undefined : `${run}-${++next}@e2e.drill`);
      if (!id) {
        if (!inFlight) break;
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      inFlight++;
      await attempt(id);
      inFlight--;
    }
  };
  let inFlight = 0;
  await Promise.all(Array.from({ length: Number(values.concurrency) }, worker));
  clearInterval(progress);
  report.endedAt = Date.now();
  writeFileSync(values.out, JSON.stringify(report));
  const secs = (report.endedAt - report.startedAt) / 1000;
  console.log(
    `sender: ${report.accepted.length} accepted in ${secs.toFixed(1)} s (${(report.accepted.length / secs).toFixed(0)}/s), ` +
      `${report.retries} retried ${JSON.stringify(report.retriesByReason)}, ${report.ambiguous} ambiguous, ` +
      `${report.permanent.length} failed permanently, ${queue.length} still queued`,
  );
  if (queue.length > 0) console.log(`sender: gave up on ${queue.length} queued messages at --max-seconds`);
  return report.permanent.length > 0 || queue.length > 0 || !done() ? 1 : 0;
}

function check(argv: string[]): number {
  const { values } = parseArgs({
    args: argv,
    options: {
      sent: { type: 'string' },
      'sink-log': { type: 'string' },
      window: { type: 'string', multiple: true, default: [] },
      min: { type: 'string', default: '0' },
    },
  });
  if (!values.sent || !values['sink-log']) throw new Error('check needs --sent FILE --sink-log FILE');
  const sent = JSON.parse(readFileSync(values.sent, 'utf8')) as SentReport;
  const prefix = sent.accepted[0]?.id.replace(/-\d+@.*$/, '-') ?? '';
  const atSink = new Map<string, number>();
  for (const line of readFileSync(values['sink-log'], 'utf8').split('\n')) {
    if (!line.startsWith('{')) continue;
    const id = (JSON.parse(line) as { messageId?: string }).messageId;
    if (id?.startsWith(prefix)) atSink.set(id, (atSink.get(id) ?? 0) + 1);
  }
  const accepted = new Set(sent.accepted.map((a) => a.id));
  const missing = [...accepted].filter((id) => !atSink.has(id));
  const duplicated = [...atSink].filter(([, n]) => n > 1).map(([id, n]) => `${id} x${n}`);
  const unexpected = [...atSink.keys()].filter((id) => !accepted.has(id));
  const windows = values.window.map((w) => w.split('-').map(Number) as [number, number]);
  // no window given: the whole run
  const inWindow = sent.accepted.filter(
    (a) => !windows.length || windows.some(([from, until]) => a.at >= from && a.at <= until),
  ).length;
  console.log(
    `check: ${accepted.size} accepted (250), ${atSink.size} unique Message-IDs at the sink, ` +
      `${missing.length} missing, ${duplicated.length} duplicated, ${unexpected.length} at the sink without a 250; ` +
      `${sent.retries} retried by the sender ${JSON.stringify(sent.retriesByReason)} (${sent.ambiguous} after the final dot); ` +
      `${inWindow} accepted during the drill (${windows.length} window${windows.length === 1 ? '' : 's'})`,
  );
  const problems: string[] = [];
  if (accepted.size !== sent.accepted.length) problems.push('the sender got 250 twice for one Message-ID');
  if (missing.length) problems.push(`missing at the sink: ${missing.slice(0, 5).join(', ')}`);
  if (duplicated.length) problems.push(`delivered more than once: ${duplicated.slice(0, 5).join(', ')}`);
  if (unexpected.length)
    problems.push(`at the sink but never accepted: ${unexpected.slice(0, 5).join(', ')}`);
  if (sent.permanent.length)
    problems.push(`failed permanently: ${JSON.stringify(sent.permanent.slice(0, 3))}`);
  if (inWindow < Number(values.min))
    problems.push(`only ${inWindow} accepted during the drill, want ${values.min}`);
  for (const p of problems) console.log(`check: FAIL ${p}`);
  return problems.length ? 1 : 0;
}

const [cmd, ...rest] = process.argv.slice(2);
const run = cmd === 'send' ? send(rest) : cmd === 'check' ? Promise.resolve(check(rest)) : undefined;
if (!run) {
  console.error('usage: mail-flow.ts send ... | check ...');
  process.exit(2);
}
run.then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(`mail-flow: ${err.message}`);
    process.exit(2);
  },
);
