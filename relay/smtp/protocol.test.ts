import { afterEach, describe, expect, it } from 'vitest';
import { type CaptureSink, type SinkBehaviour, startCaptureSink } from '../../test/support/capture-sink.ts';
import type { RelayConfig } from '../config/types.gen.ts';
import { type Relay, type RelayOptions, startRelay } from '../relay.ts';
import { ScriptedServer, type ScriptedServerOptions } from '../upstream/testing/scripted-server.ts';
import { forward, RawClient, relayConfig, sleep, tenant } from './testing/harness.ts';

// Protocol strictness toward clients and upstreams (README "How the relay handles a message"):
// upstream replies checked per step, the Received header, XCLIENT, postmaster, loops, the sessions gauge.

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function sink(behaviour?: SinkBehaviour): Promise<CaptureSink> {
  const s = await startCaptureSink({ behaviour });
  cleanups.push(() => s.close());
  return s;
}

async function scripted(opts: ScriptedServerOptions = {}): Promise<ScriptedServer> {
  const s = await ScriptedServer.start(opts);
  cleanups.push(() => s.close());
  return s;
}

interface Started {
  relay: Relay;
  port: number;
  logs: Array<Record<string, unknown>>;
}

async function relayWith(config: RelayConfig | undefined, opts: Partial<RelayOptions> = {}): Promise<Started> {
  const logs: Array<Record<string, unknown>> = [];
  const relay = await startRelay({
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    hostname: 'relay.test',
    config,
    logSink: (l) => logs.push(JSON.parse(l)),
    upstream: { connectTimeoutMs: 2000, commandTimeoutMs: 3000, dataTimeoutMs: 3000, idleTimeoutMs: 1000 },
    ...opts,
  });
  cleanups.push(() => relay.close());
  return { relay, port: relay.address().smtp.port, logs };
}

const line = (r: { code: number; lines: string[] } | undefined) =>
  r ? `${r.code} ${r.lines.join(' | ')}` : 'closed';

async function client(port: number, name = 'client.test'): Promise<RawClient> {
  const c = await RawClient.connect(port);
  cleanups.push(() => c.close());
  expect((await c.hello(name))?.code).toBe(250);
  return c;
}

async function envelope(c: RawClient, from: string, to: string[]): Promise<string[]> {
  const m = await c.cmd(`MAIL FROM:<${from}>`);
  if (m?.code !== 250) return [line(m)];
  const out: string[] = [];
  for (const r of to) out.push(line(await c.cmd(`RCPT TO:<${r}>`)));
  return out;
}

async function dataRaw(c: RawClient, content: string | Buffer): Promise<string> {
  const r = await c.cmd('DATA');
  if (r?.code !== 354) return line(r);
  c.write(content);
  c.write('.\r\n');
  return line(await c.read());
}

async function metric(relay: Relay, name: string): Promise<string[]> {
  const text = await (await fetch(`http://127.0.0.1:${relay.address().admin?.port}/metrics`)).text();
  return text.split('\n').filter((l) => l.startsWith(name));
}

const MSG = 'From: a@sender.test\r\nTo: x@example.com\r\nSubject: s\r\n\r\nhello\r\n';

describe('sessions gauge', () => {
  it('mailplus_relay_sessions_active comes back down after STARTTLS sessions', async () => {
    const { createTestPki } = await import('../../test/support/certs.ts');
    const pki = await createTestPki();
    cleanups.push(() => pki.cleanup());
    const { relay, port } = await relayWith(relayConfig([]), {
      tlsCert: pki.server.certPath,
      tlsKey: pki.server.keyPath,
    });
    for (let i = 0; i < 3; i++) {
      const c = await client(port);
      expect((await c.cmd('STARTTLS'))?.code).toBe(220);
      const t = await c.startTls();
      expect((await t.cmd('EHLO client.test'))?.code).toBe(250);
      expect((await t.cmd('QUIT'))?.code).toBe(221);
      await t.closed;
    }
    const plain = await client(port);
    expect((await plain.cmd('QUIT'))?.code).toBe(221);
    await plain.closed;
    const until = Date.now() + 2000;
    let active: string[] = [];
    while (Date.now() < until) {
      active = await metric(relay, 'mailplus_relay_sessions_active');
      if (active[0] === 'mailplus_relay_sessions_active 0') break;
      await sleep(20);
    }
    expect(active).toEqual(['mailplus_relay_sessions_active 0']);
    expect(await metric(relay, 'mailplus_relay_sessions_total')).toEqual(['mailplus_relay_sessions_total 4']);
  });
});
