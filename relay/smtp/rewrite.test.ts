// biome-ignore-all lint/suspicious/noTemplateCurlyInString: recipient templates use ${…}
// Recipient rewriting over real SMTP on loopback: swaks (or a raw client) sends through the relay to
// a real SMTP sink. The upstream gets the rewritten RCPT TO; the log line, the message trace and the
// Received header keep the recipient as the client sent it; another route's recipients in the same
// transaction (same upstream set) are forwarded untouched.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Route } from '../../contract/config/types.gen.ts';
import { runSwaks } from '../../test/support/swaks.ts';
import { openTraceStore } from '../trace/open.ts';
import { addressForms, tenantPseudonym } from '../trace/pseudonym.ts';
import { ScriptedServer } from '../upstream/testing/scripted-server.ts';
import { forward, RawClient, relayConfig, splitReceived, tenant } from './testing/harness.ts';
import { type Cleanups, relayKit } from './testing/relay-kit.ts';

const root = join(import.meta.dirname, '..', '..');
const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
const kit = relayKit(cleanups);
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mailplus-rewrite-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const rewriting = (name: string, recipients: string[], ports: number[], template: string): Route => {
  const r = forward(name, recipients, ports);
  if ('forward' in r.action) r.action.forward.rewrite = { recipient: template };
  return r;
};

/** sales: everyone rewritten to the internal domain except ceo; support: another tenant, untouched. */
const config = (port: number, template = '${local}@mail.internal.example') =>
  relayConfig([
    tenant(
      'sales',
      ['sales.example'],
      [
        rewriting('sales/inbox', ['*@sales.example'], [port], template),
        forward('sales/ceo', ['ceo@sales.example'], [port]),
      ],
    ),
    tenant('support', ['support.example'], [forward('support/all', ['*@support.example'], [port])]),
  ]);

type LogRecipient = { address: string; result: string; code: number; rewrittenTo?: string };
const transactionLine = (logs: Array<Record<string, unknown>>) => {
  const t = logs.find((l) => l.msg === 'transaction');
  if (!t) throw new Error('no transaction log line');
  return t as { recipients: LogRecipient[]; tenants: string[]; routes: string[] };
};

describe('recipient rewriting over SMTP', () => {
  it('sends the rewritten RCPT upstream, leaves other routes alone, keeps the original in log and trace', async () => {
    const sink = await kit.sink();
    const traceFile = join(dir, 'trace.db');
    const { relay, port, logs } = await kit.relayWith(config(sink.port), {
      traceStore: `sqlite:${traceFile}`,
    });
    const r = await runSwaks({
      port,
      from: 'customer@example.org',
      to: ['Bob+News@sales.example', 'ceo@sales.example', 'carol@support.example'],
    });
    expect(r.rcpt.map((x) => x.code)).toEqual([250, 250, 250]);
    expect(r.last.END?.code).toBe(250);

    // one upstream transaction (the three routes share the upstream set), one address rewritten
    expect(sink.messages).toHaveLength(1);
    expect(sink.messages[0].rcptTo).toEqual([
      'Bob+News@mail.internal.example',
      'ceo@sales.example',
      'carol@support.example',
    ]);

    const line = transactionLine(logs);
    expect(line.routes).toEqual(['sales/inbox', 'sales/ceo', 'support/all']);
    expect(line.recipients).toEqual([
      {
        address: 'Bob+News@sales.example',
        result: 'accepted',
        code: 250,
        rewrittenTo: 'Bob+News@mail.internal.example',
      },
      { address: 'ceo@sales.example', result: 'accepted', code: 250 },
      { address: 'carol@support.example', result: 'accepted', code: 250 },
    ]);

    await relay.flushTrace();
    const store = await openTraceStore(`sqlite:${traceFile}`);
    cleanups.push(() => store.close());
    const all = await store.query({});
    expect(all.map((e) => [e.tenant, e.route, e.recipients])).toEqual([
      [
        'sales',
        'sales/inbox',
        [
          {
            address: 'Bob+News@sales.example',
            result: 'accepted',
            code: 250,
            rewrittenTo: 'Bob+News@mail.internal.example',
          },
          { address: 'ceo@sales.example', result: 'accepted', code: 250 },
        ],
      ],
      ['support', 'support/all', [{ address: 'carol@support.example', result: 'accepted', code: 250 }]],
    ]);
    // an access or erasure request for either address finds the entry
    for (const a of ['bob+news@sales.example', 'bob+news@mail.internal.example']) {
      const found = await store.query({ addresses: addressForms(a, [], undefined) });
      expect(found.map((e) => e.tenant)).toEqual(['sales']);
    }
    const cli = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        [
          join(root, 'bin', 'mailplus.js'),
          'trace',
          '--store',
          `sqlite:${traceFile}`,
          '--address',
          'bob+news@mail.internal.example',
        ],
        { cwd: root, env: { ...process.env, MAILPLUS_TRACE_STORE: '' }, timeout: 30_000 },
        (err, stdout, stderr) =>
          resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout).toContain(
      'Bob+News@sales.example->Bob+News@mail.internal.example(250),ceo@sales.example(250)',
    );
  });

  it('logs the rewritten address in the pseudonym form of a tenant that asked for pseudonyms', async () => {
    const sink = await kit.sink();
    const cfg = relayConfig([
      tenant(
        'sales',
        ['sales.example'],
        [rewriting('sales/inbox', ['*@sales.example'], [sink.port], '${local}@mail.internal.example')],
        {
          privacy: { pseudonymize: true },
        },
      ),
    ]);
    const key = 'rewrite-test-master-key-0123456789';
    const { port, logs } = await kit.relayWith(cfg, { pseudonymizeKey: key });
    const r = await runSwaks({ port, from: 'customer@example.org', to: 'bob@sales.example' });
    expect(r.last.END?.code).toBe(250);
    expect(sink.messages[0].rcptTo).toEqual(['bob@mail.internal.example']);
    expect(transactionLine(logs).recipients).toEqual([
      {
        address: tenantPseudonym(key, 'sales', 'bob@sales.example'),
        result: 'accepted',
        code: 250,
        rewrittenTo: tenantPseudonym(key, 'sales', 'bob@mail.internal.example'),
      },
    ]);
    expect(JSON.stringify(logs)).not.toContain('bob@');
  });

  it('gives the upstream a mailbox once when two recipients rewrite to it (as Postfix cleanup does)', async () => {
    // records the raw commands (smtp-server, like the capture sink, merges repeated RCPTs itself)
    const up = await ScriptedServer.start({});
    cleanups.push(() => up.close());
    const { port, logs } = await kit.relayWith(config(up.port, '${user}@mail.internal.example'));
    const r = await runSwaks({
      port,
      from: 'customer@example.org',
      to: ['bob+a@sales.example', 'Bob+b@sales.example', 'ceo@sales.example', 'ceo@sales.example'],
    });
    expect(r.rcpt.map((x) => x.code)).toEqual([250, 250, 250, 250]);
    expect(r.last.END?.code).toBe(250);
    // only rewritten duplicates are dropped; a client's own repeated RCPT is passed on as before
    expect(up.sessions.flatMap((x) => x.commands).filter((l) => l.startsWith('RCPT'))).toEqual([
      'RCPT TO:<bob@mail.internal.example>',
      'RCPT TO:<ceo@sales.example>',
      'RCPT TO:<ceo@sales.example>',
    ]);
    expect(transactionLine(logs).recipients.map((x) => [x.address, x.result, x.rewrittenTo])).toEqual([
      ['bob+a@sales.example', 'accepted', 'bob@mail.internal.example'],
      ['Bob+b@sales.example', 'accepted', 'Bob@mail.internal.example'],
      ['ceo@sales.example', 'accepted', undefined],
      ['ceo@sales.example', 'accepted', undefined],
    ]);
  });

  it('names the original recipient in the Received header (as Postfix does)', async () => {
    const sink = await kit.sink();
    const { port } = await kit.relayWith(config(sink.port, '${user}@mail.internal.example'));
    const r = await runSwaks({ port, from: 'customer@example.org', to: 'bob+news@sales.example' });
    expect(r.last.END?.code).toBe(250);
    expect(sink.messages[0].rcptTo).toEqual(['bob@mail.internal.example']);
    const { received } = splitReceived(sink.messages[0].data);
    expect(received).toContain('for <bob+news@sales.example>;');
    expect(received).not.toContain('mail.internal.example');
  });

  it("shows the upstream's refusal of the rewritten address with the address the client sent", async () => {
    const sink = await kit.sink({
      rcpt: {
        'bob@mail.internal.example': {
          code: 550,
          message: '5.1.1 <bob@mail.internal.example>: no such user',
        },
      },
    });
    const { port, logs } = await kit.relayWith(config(sink.port));
    const c = await kit.client(port);
    expect((await c.cmd('MAIL FROM:<customer@example.org>'))?.code).toBe(250);
    const refused = await c.cmd('RCPT TO:<bob@sales.example>');
    expect(refused).toMatchObject({ code: 550, enhancedCode: '5.1.1' });
    expect(refused?.text).toBe('upstream: <bob@sales.example>: no such user');
    expect((await c.cmd('RCPT TO:<ceo@sales.example>'))?.code).toBe(250);
    expect((await c.cmd('DATA'))?.code).toBe(354);
    expect((await c.cmd('Subject: x\r\n\r\nbody\r\n.'))?.code).toBe(250);
    expect(sink.messages.map((m) => m.rcptTo)).toEqual([['ceo@sales.example']]);
    expect(transactionLine(logs).recipients[0]).toMatchObject({
      address: 'bob@sales.example',
      result: 'rejected',
      code: 550,
      rewrittenTo: 'bob@mail.internal.example',
    });
  });

  it('refuses a recipient whose rewriting is no valid address (553 5.1.3), nothing reaches the upstream', async () => {
    const sink = await kit.sink();
    const { port, logs } = await kit.relayWith(config(sink.port, '${local}.archive@mail.internal.example'));
    const c = await kit.client(port);
    const long = `${'b'.repeat(60)}@sales.example`;
    expect((await c.cmd('MAIL FROM:<customer@example.org>'))?.code).toBe(250);
    const r = await c.cmd(`RCPT TO:<${long}>`);
    expect(r).toMatchObject({ code: 553, enhancedCode: '5.1.3' });
    expect(r?.text).toBe(`Recipient address ${long} cannot be rewritten to a valid address`);
    await c.cmd('QUIT');
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(sink.messages).toEqual([]);
    expect(transactionLine(logs).recipients).toEqual([
      { address: long, result: 'rejected', code: 553, reason: 'rewrite_invalid' },
    ]);
  });

  it('keeps internationalised addresses in the form received (SMTPUTF8 passed through)', async () => {
    const up = await ScriptedServer.start({});
    cleanups.push(() => up.close());
    const ALABEL = 'xn--bcher-kva.example';
    const { port } = await kit.relayWith(
      relayConfig([
        tenant(
          'shop',
          [ALABEL],
          [rewriting('shop/all', [`*@${ALABEL}`], [up.port], '${user}@${domain}.internal')],
        ),
      ]),
    );
    const c = await RawClient.connect(port);
    cleanups.push(() => c.close());
    expect((await c.hello())?.code).toBe(250);
    expect((await c.cmd('MAIL FROM:<s@sender.example>'))?.code).toBe(250);
    expect((await c.cmd(`RCPT TO:<kunde+x@${ALABEL}>`))?.code).toBe(250);
    expect((await c.cmd('DATA'))?.code).toBe(354);
    expect((await c.cmd('Subject: x\r\n\r\nbody\r\n.'))?.code).toBe(250);
    expect((await c.cmd('MAIL FROM:<jörg@sender.example> SMTPUTF8'))?.code).toBe(250);
    expect((await c.cmd('RCPT TO:<zoë@bücher.example>'))?.code).toBe(250);
    expect((await c.cmd('DATA'))?.code).toBe(354);
    expect((await c.cmd('Subject: x\r\n\r\nbody\r\n.'))?.code).toBe(250);
    expect(up.sessions.flatMap((s) => s.commands).filter((l) => l.startsWith('RCPT'))).toEqual([
      `RCPT TO:<kunde@${ALABEL}.internal>`,
      'RCPT TO:<zoë@bücher.example.internal>',
    ]);
  });
});
