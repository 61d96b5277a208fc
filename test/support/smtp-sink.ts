// Postfix's smtp-sink as a real, independent upstream peer: it accepts everything and
// dumps each transaction to its own file, so we can count what it received.
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, type Managed, startProcess } from './processes.ts';

export interface SmtpSinkOptions {
  port?: number;
  host?: string;
  /** Extra smtp-sink flags, e.g. ['-p'] (no PIPELINING) or ['-B', '550 5.1.1 no'] (hard bounce). */
  extraArgs?: string[];
}

export interface PostfixSmtpSink {
  port: number;
  host: string;
  pid: number;
  dumpDir: string;
  /** Number of mail transactions dumped so far (one file each). */
  count(): Promise<number>;
  /** The dump files' contents (smtp-sink's record format: envelope and content lines, see smtp-sink(1)). */
  dumps(): Promise<Buffer[]>;
  waitForCount(n: number, timeoutMs?: number): Promise<number>;
  stop(): Promise<void>;
}

export function findBinary(name: string): string {
  for (const dir of ['/usr/sbin', '/usr/local/sbin', ...(process.env.PATH ?? '').split(':')]) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  throw new Error(`${name} not found in /usr/sbin or PATH: run scripts/ci-deps.sh (Debian package postfix)`);
}

export async function startSmtpSink(opts: SmtpSinkOptions = {}): Promise<PostfixSmtpSink> {
  const bin = findBinary('smtp-sink');
  const host = opts.host ?? '127.0.0.1';
  const port = opts.port || (await freePort(host));
  const dumpDir = await mkdtemp(join(tmpdir(), 'mailplus-smtp-sink-'));
  // smtp-sink refuses to run as root without -u; the unprivileged user must be able to write dumps.
  const asRoot = process.getuid?.() === 0;
  if (asRoot) await chmod(dumpDir, 0o1777);
  const args = [
    ...(asRoot ? ['-u', 'nobody'] : []),
    // one file per transaction: <dumpDir>/m.<random hex>
    '-d',
    `${dumpDir}/m.`,
    '-h',
    'smtp-sink.test',
    ...(opts.extraArgs ?? []),
    `${host}:${port}`,
    '128',
  ];
  const proc: Managed = startProcess(bin, args, { name: 'smtp-sink' });
  await proc.waitForPort(port, host, 5000);

  const count = async () => (await readdir(dumpDir)).filter((f) => f.startsWith('m.')).length;
  return {
    port,
    host,
    pid: proc.pid,
    dumpDir,
    count,
    dumps: async () => {
      const files = (await readdir(dumpDir)).filter((f) => f.startsWith('m.'));
      return Promise.all(files.map((f) => readFile(join(dumpDir, f))));
    },
    async waitForCount(n, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      for (let i = 0; i < 10_000; i++) {
        const c = await count();
        if (c >= n) return c;
        if (Date.now() > deadline)
          throw new Error(`smtp-sink: expected ${n} message(s) within ${timeoutMs} ms, got ${c}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error('smtp-sink: waitForCount loop bound reached');
    },
    async stop() {
      await proc.stop(2000);
      await rm(dumpDir, { recursive: true, force: true });
    },
  };
}
