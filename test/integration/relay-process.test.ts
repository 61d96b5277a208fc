// `mailplus relay --config FILE` as a process, with independent peers: swaks and nodemailer as
// clients, Postfix's smtp-sink and our capturing sink as upstreams, real TLS both ways.
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { MailRoute, TenantPolicy } from '../../operator/api/types.gen.ts';
import { compile, renderRelayConfig } from '../../operator/compile/compile.ts';
import { type CaptureSink, startCaptureSink } from '../support/capture-sink.ts';
import { createTestPki, type TestPki } from '../support/certs.ts';
import { listing, startDnsServer } from '../support/dns.ts';
import { freePort, type Managed, startProcess } from '../support/processes.ts';
import { startSmtpSink } from '../support/smtp-sink.ts';
import { runSwaks } from '../support/swaks.ts';

const bin = new URL('../../bin/mailplus.js', import.meta.url).pathname;

let dir: string;
let pki: TestPki;
const cleanups: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mailplus-relay-'));
  pki = await createTestPki();
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(async () => {
  await pki?.cleanup();
  await rm(dir, { recursive: true, force: true });
});

interface Up {
  host?: string;
  port: number;
  tls?: 'none' | 'opportunistic' | 'required' | 'implicit';
}

/** A relay config for tenant acme (domain acme.test): one catch-all route to the upstreams. */
function configFor(upstreams: Up[], routeName = 'all'): string {
  const tp: TenantPolicy = {
    apiVersion: 'mailplus.io/v1alpha1',
    kind: 'TenantPolicy',
    metadata: { name: 'acme', namespace: 'acme' },
    spec: { domains: ['acme.test'] },
  } as TenantPolicy;
  const mr: MailRoute = {
    apiVersion: 'mailplus.io/v1alpha1',
    kind: 'MailRoute',
    metadata: { name: routeName, namespace: 'acme' },
    spec: {
      match: { recipients: ['*@acme.test'] },
      forward: {
        upstreams: upstreams.map((u) => ({
          host: u.host ?? '127.0.0.1',
          port: u.port,
          tls: u.tls ?? 'none',
        })),
      },
    },
  } as MailRoute;
  const { config, statuses } = compile({ tenantPolicies: [tp], mailRoutes: [mr], services: [] });
  for (const s of statuses.values()) {
    const ready = s.conditions.find((c) => c.type === 'Accepted');
    if (ready?.status !== 'True') throw new Error(`test config not accepted: ${JSON.stringify(s)}`);
  }
  return renderRelayConfig(config);
}

/** Writes the config atomically (rename), as a ConfigMap volume or a careful editor would. */
async function writeConfig(file: string, text: string): Promise<void> {
  const tmp = `${file}.tmp-${process.hrtime.bigint()}`;
  await writeFile(tmp, text);
  await rename(tmp, file);
}

async function startRelayProcess(configText: string, extra: string[] = []) {
  const file = join(dir, `relay-${Date.now()}-${Math.random().toString(16).slice(2)}.json`);
  await writeConfig(file, configText);
  const port = await freePort();
  const adminPort = await freePort();
  const proc: Managed = startProcess(
    process.execPath,
    [
      bin,
      'relay',
      '--config',
      file,
      '--listen',
      `127.0.0.1:${port}`,
      '--admin-listen',
      `127.0.0.1:${adminPort}`,
      ...extra,
    ],
    { name: 'mailplus relay' },
  );
  cleanups.push(() => proc.stop());
  await proc.waitForLine((l) => l.json?.msg === 'config applied', 15_000);
  await proc.waitForPort(port);
  return { proc, port, adminPort, file };
}

async function captureSink(opts: Parameters<typeof startCaptureSink>[0] = {}): Promise<CaptureSink> {
  const s = await startCaptureSink(opts);
  cleanups.push(() => s.close());
  return s;
}

const metric = async (adminPort: number, name: string): Promise<string[]> =>
  (await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text())
    .split('\n')
    .filter((l) => l.startsWith(name));

describe('mailplus relay --config', () => {
  it('STARTTLS in (swaks verifies our certificate), into Postfix smtp-sink', async () => {
    const upstream = await startSmtpSink();
    cleanups.push(() => upstream.stop());
    const { port } = await startRelayProcess(configFor([{ port: upstream.port }]), [
      '--tls-cert',
      pki.server.certPath,
      '--tls-key',
      pki.server.keyPath,
    ]);
    const r = await runSwaks({
      port,
      to: 'ops@acme.test',
      tls: 'starttls',
      tlsCa: pki.caPath,
      body: 'over TLS',
    });
    expect(r.exitCode, r.transcript).toBe(0);
    expect(r.tls).toBe(true);
    expect(r.last.END?.code).toBe(250);
    expect(await upstream.waitForCount(1)).toBe(1);
  });

  it('verified TLS to the upstream: trusted CA delivers, an untrusted certificate defers with 451', async () => {
    const tlsSink = await captureSink({ tls: { key: pki.server.key, cert: pki.server.cert } });
    const trusting = await startRelayProcess(configFor([{ port: tlsSink.port, tls: 'required' }]), [
      '--upstream-ca',
      pki.caPath,
    ]);
    const ok = await runSwaks({ port: trusting.port, to: 'ops@acme.test' });
    expect(ok.exitCode, ok.transcript).toBe(0);
    const [m] = await tlsSink.waitForMessages(1);
    expect(m.tls.secure).toBe(true);

    const untrusting = await startRelayProcess(configFor([{ port: tlsSink.port, tls: 'required' }]));
    const refused = await runSwaks({ port: untrusting.port, to: 'ops@acme.test' });
    expect(refused.exitCode).not.toBe(0);
    expect(refused.last.RCPT?.code).toBe(451);
    expect(refused.last.RCPT?.text).toMatch(/^4\.4\.1 /);
    expect(tlsSink.messages).toHaveLength(1);
  });

  it('reloads the config file under load without failing or losing a transaction', async () => {
    const sink = await captureSink();
    const { port, adminPort, file } = await startRelayProcess(configFor([{ port: sink.port }], 'all-0'));
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port,
      secure: false,
      ignoreTLS: true,
      pool: true,
      maxConnections: 4,
      maxMessages: 1000,
    });
    cleanups.push(async () => transport.close());

    let sent = 0;
    let failed = 0;
    const deadline = Date.now() + 4000;
    const sender = async (n: number) => {
      for (let i = 0; Date.now() < deadline && i < 400; i++) {
        try {
          await transport.sendMail({
            from: 'load@client.test',
            to: `user${n}@acme.test`,
            subject: 'load',
            text: `message ${n}-${i}`,
          });
          sent++;
        } catch {
          failed++;
        }
      }
    };
    const reloads = (async () => {
      for (let i = 1; i <= 10; i++) {
        await new Promise((r) => setTimeout(r, 300));
        await writeConfig(file, configFor([{ port: sink.port }], `all-${i}`));
      }
    })();
    await Promise.all([sender(1), sender(2), sender(3), sender(4), reloads]);
    await new Promise((r) => setTimeout(r, 1500)); // the last reload is picked up within a second
    expect(failed).toBe(0);
    expect(sent).toBeGreaterThan(20);
    await sink.waitForMessages(sent, 10_000);
    expect(sink.messages).toHaveLength(sent);
    const [generation] = await metric(adminPort, 'mailplus_relay_config_generation');
    expect(Number(generation.split(' ')[1])).toBe(11);
  });

  it('a refused config reverted to the active one sets last_reload_successful back to 1', async () => {
    const good = configFor([{ port: 2525 }]);
    const { adminPort, file, proc } = await startRelayProcess(good);
    const value = async (name: string) => Number((await metric(adminPort, name))[0]?.split(' ')[1]);
    expect(await value('mailplus_relay_config_last_reload_successful')).toBe(1);
    // a hand edit that breaks the hash: refused, the active config stays
    const tampered = JSON.parse(good) as { sources?: Record<string, number> };
    tampered.sources = { ...tampered.sources, 'MailRoute/acme/forged': 1 };
    await writeConfig(file, JSON.stringify(tampered));
    await proc.waitForLine((l) => l.json?.msg === 'config refused, keeping the last good one', 10_000);
    expect(await value('mailplus_relay_config_last_reload_successful')).toBe(0);
    // reverted: the same hash as the active config loads fine, so the reload-failed alert clears
    await writeConfig(file, good);
    const deadline = Date.now() + 10_000;
    while ((await value('mailplus_relay_config_last_reload_successful')) !== 1) {
      expect(Date.now(), 'last_reload_successful is 1 again within 10 s of the revert').toBeLessThan(
        deadline,
      );
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(await value('mailplus_relay_config_generation')).toBe(1);
    expect((await metric(adminPort, 'mailplus_relay_config_reloads_total')).sort()).toEqual([
      'mailplus_relay_config_reloads_total{result="failure"} 1',
      'mailplus_relay_config_reloads_total{result="success"} 2',
    ]);
  });

  it('SIGTERM drains: the transaction in flight gets its 250, late clients get 421, exit 0', async () => {
    // The upstream holds its final reply until the test lets it go: the message is in flight
    // for as long as the drain is being checked, however slow the machine.
    let reached = () => {};
    const atFinalDot = new Promise<void>((r) => {
      reached = r;
    });
    let release = () => {};
    const released = new Promise<void>((r) => {
      release = r;
    });
    const slow = await captureSink({ behaviour: { holdData: { reached, release: released } } });
    const { proc, port } = await startRelayProcess(configFor([{ port: slow.port }]), [
      '--drain-timeout',
      '10s',
    ]);
    const inFlight = runSwaks({ port, to: 'ops@acme.test', body: 'drain me' });
    await atFinalDot;
    process.kill(proc.pid, 'SIGTERM');
    await proc.waitForLine((l) => l.json?.msg === 'draining', 5000);
    const greeting = await new Promise<string>((resolve, reject) => {
      const s = connect(port, '127.0.0.1');
      s.once('data', (d) => {
        resolve(d.toString());
        s.destroy();
      });
      s.once('error', reject);
    });
    expect(greeting).toMatch(/^421 4\.3\.2 /);
    release();
    const r = await inFlight;
    expect(r.exitCode, r.transcript).toBe(0);
    expect(r.last.END?.code).toBe(250);
    expect(await proc.exited).toBe(0);
    expect(slow.messages).toHaveLength(1);
  });
});

describe('mailplus relay --dns-server --dnsbl-site (real DNS)', () => {
  const greetingFrom = (port: number, localAddress: string) =>
    new Promise<string>((resolve, reject) => {
      const s = connect({ port, host: '127.0.0.1', localAddress });
      let buf = '';
      s.on('data', (d) => {
        buf += d.toString();
        if (buf.includes('\r\n')) {
          s.destroy();
          resolve(buf.split('\r\n')[0]);
        }
      });
      s.on('error', reject);
    });

  it('refuses a client listed with enough weight at connect; swaks from a clean address relays', async () => {
    const dns = await startDnsServer({
      zones: [
        { zone: 'zen.example', records: [listing('127.0.0.2')] },
        { zone: 'weak.example', records: [listing('127.0.0.2'), listing('127.0.0.3')] },
      ],
    });
    cleanups.push(() => dns.stop());
    const up = await captureSink();
    const { port, adminPort } = await startRelayProcess(configFor([{ port: up.port }]), [
      '--dns-server',
      dns.server,
      '--dnsbl-site',
      'zen.example*2',
      '--dnsbl-site',
      'weak.example',
      '--dnsbl-threshold',
      '2',
    ]);
    expect(await greetingFrom(port, '127.0.0.2')).toBe(
      '554 5.7.1 Service unavailable; client [127.0.0.2] blocked using zen.example',
    );
    expect(await greetingFrom(port, '127.0.0.3')).toMatch(/^220 /); // weight 1 < 2
    const r = await runSwaks({ port, to: 'ops@acme.test' });
    expect(r.exitCode, r.transcript).toBe(0);
    await up.waitForMessages(1);
    expect((await metric(adminPort, 'mailplus_relay_dnsbl_verdicts_total')).sort()).toEqual([
      // 127.0.0.3, swaks, and the start-up port probe (127.0.0.1)
      'mailplus_relay_dnsbl_verdicts_total{scope="relay",tenant="",verdict="pass"} 3',
      'mailplus_relay_dnsbl_verdicts_total{scope="relay",tenant="",verdict="reject"} 1',
    ]);
  }, 60_000);
});
