// `mailplus dev` as the README's quick start runs it: the examples, a real relay process, a
// message sent with swaks, then edits to the files while it runs.
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CaptureSink, startCaptureSink } from '../support/capture-sink.ts';
import { freePort, type Managed, startProcess } from '../support/processes.ts';
import { runSwaks } from '../support/swaks.ts';

const bin = new URL('../../bin/mailplus.js', import.meta.url).pathname;
const examples = new URL('../../examples/', import.meta.url).pathname;

let dir: string;
let sink: CaptureSink;
let dev: Managed;
let port: number;
let adminPort: number;

/** The examples point at 127.0.0.1:2526; the test's copy points at this run's sink. */
async function copyExamples(to: string, sinkPort: number): Promise<void> {
  await cp(examples, to, { recursive: true, filter: (src) => !src.endsWith('.test.ts') });
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (p.endsWith('.yaml')) {
        await writeFile(p, (await readFile(p, 'utf8')).replaceAll('port: 2526', `port: ${sinkPort}`));
      }
    }
  };
  await walk(to);
}

const configApplied = (hashNot?: string) => (l: { json?: Record<string, unknown> }) =>
  l.json?.msg === 'config applied' && l.json.hash !== hashNot;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mailplus-dev-'));
  sink = await startCaptureSink();
  await copyExamples(join(dir, 'examples'), sink.port);
  port = await freePort();
  adminPort = await freePort();
  dev = startProcess(
    process.execPath,
    [
      bin,
      'dev',
      '-f',
      join(dir, 'examples'),
      '--listen',
      `127.0.0.1:${port}`,
      '--admin-listen',
      `127.0.0.1:${adminPort}`,
    ],
    { name: 'mailplus dev' },
  );
  await dev.waitForLine(configApplied(), 15_000);
  await dev.waitForPort(port);
});

afterAll(async () => {
  await dev?.stop();
  await sink?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('mailplus dev', () => {
  it('relays a message sent with swaks to the example upstream', async () => {
    const r = await runSwaks({ port, from: 'bob@partner.test', to: 'alice@sales.example.com', body: 'hi' });
    expect(r.exitCode, r.transcript).toBe(0);
    const [m] = await sink.waitForMessages(1);
    expect(m.rcptTo).toEqual(['alice@sales.example.com']);
    expect(m.data.toString()).toContain('hi');
  });

  it('recompiles on change, refuses a broken file with path and field, keeps the last good config', async () => {
    const routes = join(dir, 'examples', 'routes', 'support.yaml');
    const original = await readFile(routes, 'utf8');
    const before = dev.lines.length;
    const active = dev.lines.filter((l) => l.json?.msg === 'config applied').at(-1)?.json?.hash as string;

    // Break a field: reported with file, resource and field; the relay keeps routing.
    await writeFile(routes, original.replace(/tls: none/, 'tls: sometimes'));
    const problem = await dev.waitForLine(
      (l) => dev.lines.indexOf(l) >= before && l.json?.msg === 'resource problem',
      10_000,
    );
    expect(problem.json?.file).toBe(routes);
    expect(String(problem.json?.field)).toMatch(/^spec\.forward\.upstreams\[\d\]\.tls$/);
    sink.reset();
    const still = await runSwaks({ port, to: 'help@support.example.com' });
    expect(still.exitCode, still.transcript).toBe(0);
    await sink.waitForMessages(1);
    const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
    expect(metrics).toContain('mailplus_relay_config_last_reload_successful 0');
    expect(metrics).toContain(`mailplus_relay_config_info{hash="${active}"} 1`);

    // A valid change applies: a new reject route for one address.
    await writeFile(
      routes,
      `${original}---
apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: {name: closed, namespace: support}
spec:
  priority: 1
  match: {recipients: [old-desk@support.example.com]}
  reject: {code: 550, enhancedCode: 5.1.6, message: This desk moved to help@support.example.com}
`,
    );
    await dev.waitForLine(configApplied(active), 10_000);
    const moved = await runSwaks({ port, to: 'old-desk@support.example.com' });
    expect(moved.exitCode).not.toBe(0);
    expect(moved.last.RCPT?.code).toBe(550);
    expect(moved.last.RCPT?.text).toBe('5.1.6 This desk moved to help@support.example.com');
  });
});

describe('README quick start', () => {
  it('mailplus dev -f examples/ --sink: the built-in sink prints the message that arrives', async () => {
    const smtp = await freePort();
    const admin = await freePort();
    // The examples forward to 127.0.0.1:2526; the sink must listen exactly there.
    const proc = startProcess(
      process.execPath,
      [
        bin,
        'dev',
        '-f',
        examples,
        '--sink',
        '127.0.0.1:2526',
        '--listen',
        `127.0.0.1:${smtp}`,
        '--admin-listen',
        `127.0.0.1:${admin}`,
      ],
      { name: 'mailplus dev --sink' },
    );
    try {
      await proc.waitForLine(configApplied(), 15_000);
      await proc.waitForPort(smtp);
      const r = await runSwaks({ port: smtp, from: 'you@example.org', to: 'alice@sales.example.com' });
      expect(r.exitCode, r.transcript).toBe(0);
      const line = await proc.waitForLine((l) => l.json?.msg === 'sink received a message', 5000);
      expect(line.json).toMatchObject({
        from: 'you@example.org',
        to: ['alice@sales.example.com'],
        // swaks writes a Message-Id header; the sink reports it (how the cluster drills count deliveries)
        messageId: expect.stringMatching(/^[^<>\s]+@[^<>\s]+$/),
      });
    } finally {
      await proc.stop();
    }
  });
});
