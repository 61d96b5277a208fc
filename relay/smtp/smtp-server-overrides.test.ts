// The contract with smtp-server's internals (smtp-server-overrides.ts). This file fails loudly when
// an upgrade moves them: the installed and pinned versions, each overridden method's arity and
// source, and each override's behaviour over real SMTP on loopback. On an upgrade: read the new
// source of every method below, adapt the override, then update SMTP_SERVER_VERSION and OVERRIDDEN.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { SMTPServer } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ScriptedServer } from '../upstream/testing/scripted-server.ts';
import { RelayConnection, RelaySmtpServer, SMTP_SERVER_VERSION } from './smtp-server-overrides.ts';
import { forward, RawClient, relayConfig, tenant } from './testing/harness.ts';
import { dataRaw, envelope, line, relayKit } from './testing/relay-kit.ts';

const root = join(import.meta.dirname, '..', '..');
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  vi.restoreAllMocks();
  for (const c of cleanups.splice(0).reverse()) await c();
});
const { sink, relayWith, client } = relayKit(cleanups);

/** Method → [arity, first 16 hex digits of the SHA-256 of its source] in SMTP_SERVER_VERSION. */
const OVERRIDDEN: Record<string, [number, string]> = {
  init: [0, '1265a7d7ca8f5510'],
  _createParser: [0, '15ca8c360137e06a'],
  send: [3, 'c33568c0111a58b2'],
  _onCommand: [2, '41c8a1b7a32aa314'],
  _validateMailParams: [1, '9f599221f6688cc6'],
  _parseAddressCommand: [2, '9f368803e4fdff15'],
  handler_MAIL: [2, 'a40618dd2e16f0fa'],
  handler_RCPT: [2, 'ef2acd7214eaa466'],
  _resetSession: [0, '2bf7682ca13869a0'],
  _onClose: [0, '097b8d221da5c5ad'],
};
const SERVER_OVERRIDDEN: Record<string, [number, string]> = { connect: [2, '9818ea13a1c36459'] };

const sourceHash = (f: (...args: never[]) => unknown) =>
  createHash('sha256').update(f.toString()).digest('hex').slice(0, 16);

const routeAll = (port: number, domains = ['example.com']) =>
  relayConfig([
    tenant('acme', domains, [
      forward(
        'acme/all',
        domains.map((d) => `*@${d}`),
        [port],
      ),
    ]),
  ]);

describe('smtp-server contract: version and methods', () => {
  it('the installed smtp-server is the version the overrides were written for, pinned exactly', () => {
    const installed = JSON.parse(readFileSync(join(root, 'node_modules/smtp-server/package.json'), 'utf8'));
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
    expect(installed.version, 'smtp-server was upgraded: review smtp-server-overrides.ts').toBe(
      SMTP_SERVER_VERSION,
    );
    expect(pkg.dependencies['smtp-server'], 'package.json must pin smtp-server exactly').toBe(
      SMTP_SERVER_VERSION,
    );
  });

  it('every overridden method still exists with the arity and source it had', () => {
    const check = (proto: object, table: Record<string, [number, string]>, ours: object) => {
      for (const [name, [arity, hash]] of Object.entries(table)) {
        const f = (proto as Record<string, unknown>)[name];
        expect(typeof f, `${name} is gone from smtp-server`).toBe('function');
        const fn = f as (...args: never[]) => unknown;
        expect(fn.length, `${name} changed its parameters`).toBe(arity);
        expect(sourceHash(fn), `${name} changed: review its override`).toBe(hash);
        expect(Object.hasOwn(ours, name), `${name} is no longer overridden: drop it from the table`).toBe(
          true,
        );
      }
    };
    check(SMTPConnection.prototype, OVERRIDDEN, RelayConnection.prototype);
    check(SMTPServer.prototype, SERVER_OVERRIDDEN, RelaySmtpServer.prototype);
  });
});

describe('smtp-server contract: each override over real SMTP', () => {
  it('init: maxClients and the session time limit', async () => {
    const up = await sink();
    const { port } = await relayWith(routeAll(up.port), { maxClients: 1, maxSessionMs: 300 });
    const first = await client(port);
    const second = await RawClient.connect(port);
    cleanups.push(() => second.close());
    expect(line(await second.read())).toBe(
      '421 relay.test Too many connected clients, try again in a moment',
    );
    expect(line(await first.read(2000))).toBe('421 4.4.2 Session time limit exceeded, closing connection');
  });

  it('_createParser: DATA is read raw, so a dot line with a bare LF is refused', async () => {
    const up = await sink();
    const { port } = await relayWith(routeAll(up.port));
    const c = await client(port);
    await envelope(c, 'a@sender.test', ['x@example.com']);
    expect(await dataRaw(c, 'Subject: x\r\n\r\nhello\r\n.\nMAIL FROM:<evil@x.test>\r\n')).toBe(
      '550 5.6.0 Bare CR or LF next to a line-leading dot; message refused',
    );
  });

  it('send: a reply with its enhanced code in the text gets no second one', async () => {
    const up = await sink();
    const { port } = await relayWith(routeAll(up.port));
    const c = await client(port);
    expect(await envelope(c, 'a@sender.test', ['x@nowhere.test'])).toEqual([
      '550 5.7.1 Relay access denied: nowhere.test is not served here',
    ]);
  });

  it('_onCommand: the command limit and the hard error limit', async () => {
    const up = await sink();
    const limited = await relayWith(routeAll(up.port), { maxCommands: 3 });
    const c = await client(limited.port); // EHLO is the first command
    for (let i = 0; i < 2; i++) expect((await c.cmd('NOOP'))?.code).toBe(250);
    expect(line(await c.cmd('NOOP'))).toBe('421 4.7.0 Too many commands in one session, closing connection');
    const strict = await relayWith(routeAll(up.port), { fairness: { softErrorLimit: 0, hardErrorLimit: 2 } });
    const d = await client(strict.port);
    expect((await d.cmd('RCPT TO:<x@example.com>'))?.code).toBe(503);
    expect((await d.cmd('RCPT TO:<x@example.com>'))?.code).toBe(503);
    expect(line(await d.cmd('NOOP'))).toBe('421 4.7.0 relay.test Error: too many errors');
  });

  it('_validateMailParams: a declared SIZE over the limit gets our 552 text', async () => {
    const up = await sink();
    const { port } = await relayWith(routeAll(up.port), { maxMessageSize: 1000 });
    const c = await client(port);
    expect(line(await c.cmd('MAIL FROM:<a@sender.test> SIZE=5000'))).toBe(
      '552 5.3.4 Message size exceeds fixed limit of 1000 bytes',
    );
  });

  it('_parseAddressCommand: an A-label domain is forwarded as the client wrote it', async () => {
    // a scripted upstream records the command lines (smtp-server would decode the domain again)
    const up = await ScriptedServer.start();
    cleanups.push(() => up.close());
    const { port } = await relayWith(routeAll(up.port, ['xn--bcher-kva.example']));
    const c = await client(port);
    expect(await envelope(c, 'a@sender.test', ['kunde@xn--bcher-kva.example'])).toEqual([
      '250 2.1.5 Accepted',
    ]);
    const rcpts = () => up.sessions.flatMap((s) => s.commands).filter((l) => l.startsWith('RCPT'));
    expect(rcpts()).toEqual(['RCPT TO:<kunde@xn--bcher-kva.example>']);
  });

  it('handler_MAIL / handler_RCPT: unicode without SMTPUTF8, and domains not in IDNA form', async () => {
    const up = await sink();
    const { port } = await relayWith(routeAll(up.port));
    const c = await client(port);
    expect(line(await c.cmd('MAIL FROM:<jörg@sender.test>'))).toBe(
      '553 5.6.7 Must declare SMTPUTF8 to send unicode address',
    );
    // decomposed ü (u + U+0308): UTS #46 would map it, so it is not the U-label form
    expect(line(await c.cmd('MAIL FROM:<a@bu\u0308cher.example> SMTPUTF8'))).toBe(
      '553 5.1.7 Sender domain is not in IDNA form (U-labels or A-labels)',
    );
    expect((await c.cmd('MAIL FROM:<a@sender.test>'))?.code).toBe(250);
    expect(line(await c.cmd('RCPT TO:<jörg@example.com>'))).toBe(
      '553 5.6.7 Must declare SMTPUTF8 to send unicode address',
    );
    await c.cmd('RSET');
    expect((await c.cmd('MAIL FROM:<a@sender.test> SMTPUTF8'))?.code).toBe(250);
    expect(line(await c.cmd('RCPT TO:<x@bu\u0308cher.example>'))).toBe(
      '553 5.1.3 Recipient domain is not in IDNA form (U-labels or A-labels)',
    );
  });

  it('_resetSession: RSET ends the transaction and gives the upstream transaction back', async () => {
    const up = await sink();
    const { port, logs } = await relayWith(routeAll(up.port));
    const c = await client(port);
    expect(await envelope(c, 'a@sender.test', ['x@example.com'])).toEqual(['250 2.1.5 Accepted']);
    expect((await c.cmd('RSET'))?.code).toBe(250);
    await vi.waitFor(() => expect(logs.find((l) => l.msg === 'transaction')).toBeDefined(), {
      timeout: 2000,
    });
    expect(logs.find((l) => l.msg === 'transaction')).toMatchObject({ result: 'abandoned', reason: 'reset' });
  });

  it('_onClose: the session timer is cleared when the client leaves', async () => {
    const clear = vi.spyOn(globalThis, 'clearTimeout');
    const smtp = new RelaySmtpServer(
      { logger: false, authOptional: true, disabledCommands: ['AUTH'] },
      {
        greetPauseMs: 0,
        maxCommands: 100,
        maxSessionMs: 60_000,
        maxMessageSize: 1000,
        softErrorLimit: 0,
        hardErrorLimit: 0,
        errorSleepMs: 0,
        hooks: { onReset: () => {}, isDraining: () => false, inTransaction: () => false },
      },
    );
    const front = net.createServer((socket) => smtp.connect(socket, {}));
    await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => front.close(() => resolve())));
    const c = await RawClient.connect((front.address() as net.AddressInfo).port);
    await c.read();
    const [conn] = [...smtp.connections] as RelayConnection[];
    const timer = (conn as unknown as { sessionTimer: NodeJS.Timeout }).sessionTimer;
    expect(timer).toBeDefined();
    expect(line(await c.cmd('QUIT'))).toMatch(/^221 /);
    await c.closed;
    await vi.waitFor(() => expect(clear.mock.calls.some(([t]) => t === timer)).toBe(true), { timeout: 2000 });
  });
});
