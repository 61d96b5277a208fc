// Internationalised addresses over real SMTP on loopback: the relay forwards, routes and records an
// address in the form the client sent it (an A-label domain stays ASCII), refuses a non-ASCII address
// in a transaction that did not declare SMTPUTF8 (as Postfix does), passes SMTPUTF8 through and
// refuses it toward an upstream that does not offer it; trace and erase find both forms of a domain.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Relay, startRelay } from '../relay.ts';
import type { StoredTraceEntry } from '../trace/entry.ts';
import { ScriptedServer } from '../upstream/testing/scripted-server.ts';
import { forward, RawClient, relayConfig, tenant } from './testing/harness.ts';

const root = join(import.meta.dirname, '..', '..');
const ALABEL = 'xn--bcher-kva.example';
const ULABEL = 'bücher.example';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mailplus-idn-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function upstream(extensions?: string[]): Promise<ScriptedServer> {
  const s = await ScriptedServer.start(extensions ? { extensions } : {});
  cleanups.push(() => s.close());
  return s;
}

/** A relay whose tenant holds bücher.example (the compiled config carries A-labels). */
async function relayTo(ports: number[], traceFile?: string): Promise<Relay> {
  const relay = await startRelay({
    listen: { host: '127.0.0.1', port: 0 },
    admin: false,
    hostname: 'relay.test',
    config: relayConfig([tenant('shop', [ALABEL], [forward('shop/all', [`*@${ALABEL}`], ports)])]),
    logSink: () => {},
    upstream: { connectTimeoutMs: 2000, commandTimeoutMs: 5000, dataTimeoutMs: 5000, idleTimeoutMs: 1000 },
    ...(traceFile ? { traceStore: `sqlite:${traceFile}` } : {}),
  });
  cleanups.push(() => relay.close());
  return relay;
}

async function client(relay: Relay): Promise<RawClient> {
  const c = await RawClient.connect(relay.address().smtp.port);
  cleanups.push(() => c.close());
  expect((await c.hello())?.code).toBe(250);
  return c;
}

async function sendMessage(c: RawClient): Promise<number | undefined> {
  expect((await c.cmd('DATA'))?.code).toBe(354);
  return (await c.cmd('Subject: x\r\n\r\nbody\r\n.'))?.code;
}

const upstreamCommands = (u: ScriptedServer) =>
  u.sessions.flatMap((s) => s.commands).filter((l) => /^(MAIL|RCPT)/.test(l));

function mailplus(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(root, 'bin', 'mailplus.js'), ...args],
      { cwd: root, env: { ...process.env, MAILPLUS_TRACE_STORE: '' }, timeout: 30_000 },
      (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('internationalised addresses', () => {
  it('forwards an A-label domain as received, without SMTPUTF8', async () => {
    const up = await upstream();
    const c = await client(await relayTo([up.port]));
    expect((await c.cmd('MAIL FROM:<s@xn--mnchen-3ya.example>'))?.code).toBe(250);
    expect((await c.cmd(`RCPT TO:<kunde@${ALABEL}>`))?.code).toBe(250);
    expect(await sendMessage(c)).toBe(250);
    expect(upstreamCommands(up)).toEqual([
      'MAIL FROM:<s@xn--mnchen-3ya.example>',
      `RCPT TO:<kunde@${ALABEL}>`,
    ]);
  });

  it('refuses a non-ASCII address without SMTPUTF8 (553 5.6.7) and sends nothing upstream', async () => {
    const up = await upstream();
    const c = await client(await relayTo([up.port]));
    const sender = await c.cmd('MAIL FROM:<jörg@sender.example>');
    expect(sender).toMatchObject({ code: 553, enhancedCode: '5.6.7' });
    expect(sender?.text).toContain('Must declare SMTPUTF8 to send unicode address');
    expect((await c.cmd('MAIL FROM:<s@sender.example>'))?.code).toBe(250);
    expect(await c.cmd(`RCPT TO:<kunde@${ULABEL}>`)).toMatchObject({ code: 553, enhancedCode: '5.6.7' });
    expect(await c.cmd(`RCPT TO:<jörg@${ALABEL}>`)).toMatchObject({ code: 553, enhancedCode: '5.6.7' });
    expect(upstreamCommands(up)).toEqual([]);
  });

  it('passes SMTPUTF8 and UTF-8 addresses through as received to an upstream that offers it', async () => {
    const up = await upstream();
    const c = await client(await relayTo([up.port]));
    expect((await c.cmd('MAIL FROM:<jörg@sender.example> SMTPUTF8'))?.code).toBe(250);
    expect((await c.cmd(`RCPT TO:<kunde@${ULABEL}>`))?.code).toBe(250);
    expect((await c.cmd(`RCPT TO:<zoë@${ALABEL}>`))?.code).toBe(250);
    expect(await sendMessage(c)).toBe(250);
    expect(upstreamCommands(up)).toEqual([
      'MAIL FROM:<jörg@sender.example> SMTPUTF8',
      `RCPT TO:<kunde@${ULABEL}>`,
      `RCPT TO:<zoë@${ALABEL}>`,
    ]);
  });

  it('refuses an SMTPUTF8 transaction toward an upstream without SMTPUTF8 instead of downgrading it', async () => {
    const up = await upstream(['PIPELINING', '8BITMIME', 'ENHANCEDSTATUSCODES']);
    const c = await client(await relayTo([up.port]));
    expect((await c.cmd('MAIL FROM:<s@sender.example> SMTPUTF8'))?.code).toBe(250);
    const r = await c.cmd(`RCPT TO:<kunde@${ULABEL}>`);
    expect(r).toMatchObject({ code: 553, enhancedCode: '5.6.7' });
    expect(upstreamCommands(up)).toEqual([]);
  });

  it('refuses a domain that is no IDNA U-label or A-label (NFD, full-width, mapped dots): trace and erase could not find it', async () => {
    const up = await upstream();
    const traceFile = join(dir, 'idn-mapped.db');
    const relay = await relayTo([up.port], traceFile);
    const c = await client(relay);
    expect((await c.cmd('MAIL FROM:<s@sender.example> SMTPUTF8'))?.code).toBe(250);
    // each maps (UTS #46) to bücher.example, so it would route there, yet it is stored as written
    for (const domain of [
      'bu\u0308cher.example',
      'ｂücher.example',
      'bücher\u3002example',
      'bü\u00adcher.example',
    ]) {
      expect(await c.cmd(`RCPT TO:<kunde@${domain}>`), domain).toMatchObject({
        code: 553,
        enhancedCode: '5.1.3',
      });
    }
    expect((await c.cmd('RSET'))?.code).toBe(250);
    expect(await c.cmd('MAIL FROM:<s@bu\u0308cher.example> SMTPUTF8')).toMatchObject({
      code: 553,
      enhancedCode: '5.1.7',
    });
    expect(upstreamCommands(up)).toEqual([]);
    // the canonical forms still pass
    expect((await c.cmd('MAIL FROM:<s@sender.example> SMTPUTF8'))?.code).toBe(250);
    expect((await c.cmd(`RCPT TO:<kunde@${ULABEL}>`))?.code).toBe(250);
    expect((await c.cmd(`RCPT TO:<kunde@XN--BCHER-KVA.example>`))?.code).toBe(250);
    expect(await sendMessage(c)).toBe(250);
  });

  it('trace and erase find an address under both forms of its domain', async () => {
    const up = await upstream();
    const traceFile = join(dir, 'idn.db');
    const relay = await relayTo([up.port], traceFile);
    const c = await client(relay);
    expect((await c.cmd('MAIL FROM:<s@sender.example>'))?.code).toBe(250);
    expect((await c.cmd(`RCPT TO:<kunde@${ALABEL}>`))?.code).toBe(250);
    expect(await sendMessage(c)).toBe(250);
    expect((await c.cmd('MAIL FROM:<s@sender.example> SMTPUTF8'))?.code).toBe(250);
    expect((await c.cmd(`RCPT TO:<Kunde@${ULABEL.replace('b', 'B')}>`))?.code).toBe(250);
    expect(await sendMessage(c)).toBe(250);
    await relay.flushTrace();

    const store = `sqlite:${traceFile}`;
    for (const form of [`kunde@${ALABEL}`, `kunde@${ULABEL}`, `KUNDE@BÜCHER.example`]) {
      const r = await mailplus(['trace', '--store', store, '--address', form, '-o', 'json']);
      expect(r.code, r.stderr).toBe(0);
      const entries = JSON.parse(r.stdout) as StoredTraceEntry[];
      expect(entries.map((e) => e.recipients[0].address)).toEqual([
        `kunde@${ALABEL}`,
        `Kunde@${ULABEL.replace('b', 'B')}`,
      ]);
    }
    const erased = await mailplus(['erase', '--store', store, '--address', `kunde@${ALABEL}`, '-o', 'json']);
    expect(erased.code, erased.stderr).toBe(0);
    expect(JSON.parse(erased.stdout)).toMatchObject({ total: 2 });
    const after = await mailplus(['trace', '--store', store, '-o', 'json']);
    expect(JSON.parse(after.stdout)).toEqual([]);
  });
});
