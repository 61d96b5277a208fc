import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { afterEach, describe, expect, it } from 'vitest';
import { type Relay, startRelay } from '../relay.ts';
import { ScriptedServer, type ScriptedServerOptions } from '../upstream/testing/scripted-server.ts';
import { forward, RawClient, relayConfig, sleep, splitReceived, tenant } from './testing/harness.ts';
import { dataRaw, envelope, line, relayKit } from './testing/relay-kit.ts';

// Protocol strictness toward clients and upstreams (README "How the relay handles a message"):
// upstream replies checked per step, the Received header, XCLIENT, postmaster, loops, the sessions gauge.

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const { sink, relayWith, client } = relayKit(cleanups);

async function scripted(opts: ScriptedServerOptions = {}): Promise<ScriptedServer> {
  const s = await ScriptedServer.start(opts);
  cleanups.push(() => s.close());
  return s;
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

describe('upstream replies are checked against the step they answer (RFC 5321 §4.3.2)', () => {
  const cases: Array<{ name: string; verb: string; reply: string; at: 'rcpt' | 'data' | 'dot' }> = [
    { name: 'DATA answered 250 (no content sent)', verb: 'DATA', reply: '250 2.0.0 Ok', at: 'data' },
    { name: 'the final dot answered 354', verb: 'DOT', reply: '354 go ahead', at: 'dot' },
    { name: 'RCPT answered 354', verb: 'RCPT', reply: '354 what', at: 'rcpt' },
    { name: 'MAIL answered 220', verb: 'MAIL', reply: '220 hello again', at: 'rcpt' },
  ];
  for (const c of cases) {
    it(`${c.name}: the client gets 451 4.5.0, the error is logged and counted`, async () => {
      const up = await scripted({ replies: { [c.verb]: c.reply } });
      const { relay, port, logs } = await relayWith(
        relayConfig([tenant('acme', ['example.com'], [forward('acme/r', ['*@example.com'], [up.port])])]),
      );
      const cl = await client(port);
      const rcpt = await envelope(cl, 'a@sender.test', ['x@example.com']);
      const expected = '451 4.5.0 Upstream protocol error, try again later';
      if (c.at === 'rcpt') {
        expect(rcpt).toEqual([expected]);
      } else {
        expect(rcpt).toEqual(['250 2.1.5 Accepted']);
        expect(await dataRaw(cl, MSG)).toBe(expected);
      }
      await sleep(20);
      const warn = logs.find((l) => l.msg === 'upstream protocol error');
      expect(warn?.error).toContain(`reply ${c.reply.slice(0, 3)} to`);
      const reason =
        c.at === 'rcpt'
          ? await metric(
              relay,
              'mailplus_relay_recipients_total{tenant="acme",route="acme/r",result="deferred",reason="upstream_protocol_error"}',
            )
          : await metric(relay, 'mailplus_relay_messages_total{tenant="acme",route="acme/r",upstream=');
      expect(reason.join('\n')).toMatch(
        c.at === 'rcpt' ? / 1$/ : /result="deferred",reason="upstream_protocol_error"} 1/,
      );
      // the connection that misbehaved is never reused
      await up.waitFor(() => up.sessions.every((s) => s.closed));
    });
  }
});

describe('log privacy of upstream replies', () => {
  it('a pseudonymising tenant never sees addresses from an upstream reply in the warning', async () => {
    const { tenantPseudonym } = await import('../trace/pseudonym.ts');
    const key = 'k'.repeat(32);
    const up = await scripted({
      replies: { RCPT: '421 4.3.0 <x@example.com> from <a@sender.test>: try later' },
    });
    const { port, logs } = await relayWith(
      relayConfig([
        tenant('acme', ['example.com'], [forward('acme/r', ['*@example.com'], [up.port])], {
          privacy: { pseudonymize: true },
        }),
      ]),
      { pseudonymizeKey: key },
    );
    const cl = await client(port);
    expect(await envelope(cl, 'a@sender.test', ['x@example.com'])).toEqual([
      '451 4.4.1 Upstream unavailable, try again later',
    ]);
    await sleep(20);
    const warn = logs.find((l) => l.msg === 'upstream attempt failed');
    expect(warn).toBeDefined();
    const text = JSON.stringify(logs);
    expect(text).not.toContain('x@example.com');
    expect(text).not.toContain('a@sender.test');
    expect(warn?.error).toContain(`<${tenantPseudonym(key, 'acme', 'x@example.com')}>`);
    expect(warn?.error).toContain(`<${tenantPseudonym(key, 'acme', 'a@sender.test')}>`);
  });

  it('nor an internationalised address (U-label domain, UTF-8 local part) from an SMTPUTF8 transaction', async () => {
    const { tenantPseudonym } = await import('../trace/pseudonym.ts');
    const key = 'k'.repeat(32);
    const up = await scripted({
      replies: { RCPT: '421 4.3.0 <kunde@bücher.example> from <jürgen@absender.example>: try later' },
    });
    const { port, logs } = await relayWith(
      relayConfig([
        tenant(
          'acme',
          ['xn--bcher-kva.example'],
          [forward('acme/r', ['*@xn--bcher-kva.example'], [up.port])],
          {
            privacy: { pseudonymize: true },
          },
        ),
      ]),
      { pseudonymizeKey: key },
    );
    const cl = await client(port);
    expect(await envelope(cl, 'jürgen@absender.example', ['kunde@bücher.example'], ' SMTPUTF8')).toEqual([
      '451 4.4.1 Upstream unavailable, try again later',
    ]);
    await sleep(20);
    const warn = logs.find((l) => l.msg === 'upstream attempt failed');
    expect(warn).toBeDefined();
    const text = JSON.stringify(logs);
    expect(text).not.toContain('kunde@');
    expect(text).not.toContain('jürgen');
    expect(warn?.error).toContain(`<${tenantPseudonym(key, 'acme', 'kunde@bücher.example')}>`);
  });
});

describe('<postmaster> without a domain (RFC 5321 §4.5.1)', () => {
  it('is routed and forwarded as the --postmaster address, any case', async () => {
    const up = await sink();
    const { port, logs } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('acme/r', ['*@example.com'], [up.port])])]),
      { postmaster: 'hostmaster@example.com' },
    );
    const cl = await client(port);
    expect(await envelope(cl, '', ['PostMaster'])).toEqual(['250 2.1.5 Accepted']);
    expect(await dataRaw(cl, MSG)).toMatch(/^250 2\.0\.0 OK/);
    const [m] = await up.waitForMessages(1);
    expect(m.rcptTo).toEqual(['hostmaster@example.com']);
    await sleep(20);
    expect(logs.find((l) => l.msg === 'transaction')).toMatchObject({
      result: 'relayed',
      recipients: [{ address: 'hostmaster@example.com', result: 'accepted' }],
    });
  });

  it('is refused clearly when no postmaster address is set', async () => {
    const up = await sink();
    const { relay, port } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('acme/r', ['*@example.com'], [up.port])])]),
    );
    const cl = await client(port);
    expect(await envelope(cl, 'a@sender.test', ['postmaster', 'x@example.com'])).toEqual([
      '550 5.1.1 No mailbox for <postmaster> without a domain here; use postmaster@DOMAIN',
      '250 2.1.5 Accepted',
    ]);
    expect(
      await metric(
        relay,
        'mailplus_relay_recipients_total{tenant="",route="",result="rejected",reason="no_postmaster"}',
      ),
    ).toEqual([
      'mailplus_relay_recipients_total{tenant="",route="",result="rejected",reason="no_postmaster"} 1',
    ]);
  });

  it('a malformed postmaster option is refused at start', async () => {
    await expect(startRelay({ postmaster: 'nobody', listen: { port: 0 }, admin: false })).rejects.toThrow(
      /postmaster must be an address/,
    );
  });
});

describe('Received header (RFC 5321 §4.4)', () => {
  const DATE = String.raw`\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000`;

  it('is prepended over STARTTLS with the TLS details; the dot-stuffed content follows byte for byte', async () => {
    const { createTestPki } = await import('../../test/support/certs.ts');
    const pki = await createTestPki();
    cleanups.push(() => pki.cleanup());
    const up = await scripted();
    const { port } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('acme/r', ['*@example.com'], [up.port])])]),
      { tlsCert: pki.server.certPath, tlsKey: pki.server.keyPath },
    );
    const plain = await client(port);
    expect((await plain.cmd('STARTTLS'))?.code).toBe(220);
    const c = await plain.startTls();
    cleanups.push(() => c.close());
    expect((await c.cmd('EHLO Sender.Example'))?.code).toBe(250);
    expect(await envelope(c, 'a@sender.test', ['x@example.com'])).toEqual(['250 2.1.5 Accepted']);
    const content = 'Subject: t\r\n\r\n..dot\r\nbare\nlf\r\n';
    expect(await dataRaw(c, content)).toMatch(/^250 2\.0\.0 OK/);
    await up.waitFor(() => up.sessions[0]?.messages.length === 1);
    const { received, rest } = splitReceived(up.sessions[0].messages[0]);
    expect(received).toMatch(
      new RegExp(
        String.raw`^Received: from sender\.example \(unknown \[127\.0\.0\.1\]\)\r\n` +
          String.raw`\t\(using TLSv1\.3 with cipher TLS_AES_256_GCM_SHA384 \(256/256 bits\)\)\r\n` +
          String.raw`\tby relay\.test \(Mail-Plus\) with ESMTPS id [0-9a-f]{16}\r\n` +
          String.raw`\tfor <x@example\.com>; ${DATE}\r\n$`,
      ),
    );
    expect(rest.toString('latin1')).toBe(content);
  });

  it('an SMTPUTF8 transaction is received with UTF8SMTP (RFC 6531 §3.7.3), the recipient as sent', async () => {
    const up = await scripted();
    const { port } = await relayWith(
      relayConfig([
        tenant(
          'acme',
          ['xn--bcher-kva.example'],
          [forward('acme/r', ['*@xn--bcher-kva.example'], [up.port])],
        ),
      ]),
    );
    const c = await client(port, 'sender.example');
    expect(await envelope(c, 'jürgen@sender.test', ['kunde@bücher.example'], ' SMTPUTF8')).toEqual([
      '250 2.1.5 Accepted',
    ]);
    expect(await dataRaw(c, MSG)).toMatch(/^250 2\.0\.0 OK/);
    await up.waitFor(() => up.sessions[0]?.messages.length === 1);
    const { received } = splitReceived(up.sessions[0].messages[0]);
    expect(Buffer.from(received, 'latin1').toString('utf8')).toMatch(
      new RegExp(
        String.raw`^Received: from sender\.example \(unknown \[127\.0\.0\.1\]\)\r\n` +
          String.raw`\tby relay\.test \(Mail-Plus\) with UTF8SMTP id [0-9a-f]{16}\r\n` +
          String.raw`\tfor <kunde@bücher\.example>; ${DATE}\r\n$`,
      ),
    );
  });

  it('has no for clause with several recipients; HELO gives protocol SMTP', async () => {
    const up = await scripted();
    const { port } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('acme/r', ['*@example.com'], [up.port])])]),
    );
    const c = await RawClient.connect(port);
    cleanups.push(() => c.close());
    await c.read();
    expect((await c.cmd('HELO old.example'))?.code).toBe(250);
    expect(await envelope(c, 'a@sender.test', ['x@example.com', 'y@example.com'])).toEqual([
      '250 2.1.5 Accepted',
      '250 2.1.5 Accepted',
    ]);
    expect(await dataRaw(c, MSG)).toMatch(/^250 2\.0\.0 OK/);
    await up.waitFor(() => up.sessions[0]?.messages.length === 1);
    const { received, rest } = splitReceived(up.sessions[0].messages[0]);
    expect(received).toMatch(
      new RegExp(
        String.raw`^Received: from old\.example \(unknown \[127\.0\.0\.1\]\)\r\n` +
          String.raw`\tby relay\.test \(Mail-Plus\) with SMTP id [0-9a-f]{16}\r\n\t; ${DATE}\r\n$`,
      ),
    );
    expect(rest.toString()).toBe(MSG);
  });

  it('SIZE: the upstream is told the size it gets; the limit counts only what the client sends', async () => {
    const up = await scripted();
    const { port } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('acme/r', ['*@example.com'], [up.port])])]),
      { maxMessageSize: 1000 },
    );
    const content = `Subject: t\r\n\r\n${'z'.repeat(1000 - 16)}\r\n`;
    expect(content.length).toBe(1000);
    const c = await client(port);
    expect(line(await c.cmd('MAIL FROM:<a@sender.test> SIZE=1000'))).toMatch(/^250/);
    expect(line(await c.cmd('RCPT TO:<x@example.com>'))).toMatch(/^250/);
    expect(await dataRaw(c, content)).toMatch(/^250 2\.0\.0 OK/);
    await up.waitFor(() => up.sessions[0]?.messages.length === 1);
    const delivered = up.sessions[0].messages[0];
    const mail = up.sessions[0].commands.find((l) => l.startsWith('MAIL'));
    expect(mail).toBe(`MAIL FROM:<a@sender.test> SIZE=${delivered.length}`);
    expect(splitReceived(delivered).rest.toString()).toBe(content);
    // one byte more than the limit is still refused: the limit is what the client sends
    const c2 = await client(port);
    expect(await envelope(c2, 'a@sender.test', ['x@example.com'])).toEqual(['250 2.1.5 Accepted']);
    expect(await dataRaw(c2, `${content}z\r\n`)).toBe(
      '552 5.3.4 Message size exceeds fixed limit of 1000 bytes',
    );
  });
});

describe('mail loops (554 5.4.6)', () => {
  const received = (n: number) =>
    Array.from(
      { length: n },
      (_, i) => `Received: from h${i}.example by h${i + 1}.example; Thu, 03 Dec 2026 07:00:00 +0000\r\n`,
    ).join('');

  it('a message with 50 Received fields is refused as a loop, nothing delivered; 49 pass', async () => {
    const up = await scripted();
    const { relay, port } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('acme/r', ['*@example.com'], [up.port])])]),
    );
    const c = await client(port);
    expect(await envelope(c, 'a@sender.test', ['x@example.com'])).toEqual(['250 2.1.5 Accepted']);
    expect(await dataRaw(c, `${received(50)}Subject: loop\r\n\r\nbody\r\n`)).toBe('554 5.4.6 Too many hops');
    expect(await envelope(c, 'a@sender.test', ['x@example.com'])).toEqual(['250 2.1.5 Accepted']);
    expect(
      await dataRaw(c, `${received(49)}Subject: ok\r\n\r\nReceived: in the body does not count\r\n`),
    ).toMatch(/^250 2\.0\.0 OK/);
    await sleep(50);
    expect(up.sessions.flatMap((s) => s.messages)).toHaveLength(1);
    expect(
      await metric(relay, 'mailplus_relay_messages_total{tenant="acme",route="acme/r",upstream='),
    ).toContainEqual(expect.stringMatching(/result="rejected",reason="too_many_hops"} 1$/));
  });

  it('the header section ends at the first line that is not a header field, as Postfix reads it', async () => {
    const up = await scripted();
    const { port } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('acme/r', ['*@example.com'], [up.port])])]),
    );
    const c = await client(port);
    expect(await envelope(c, 'a@sender.test', ['x@example.com'])).toEqual(['250 2.1.5 Accepted']);
    // no empty line: the quoted trace below "Look at this" is body text, not 60 hops
    const content = `Subject: bounce\r\nLook at this:\r\n${received(60)}`;
    expect(await dataRaw(c, content)).toMatch(/^250 2\.0\.0 OK/);
    await up.waitFor(() => up.sessions[0]?.messages.length === 1);
    expect(splitReceived(up.sessions[0].messages[0]).rest.toString()).toBe(content);
    // folded fields and the obsolete space before the colon are still the header
    expect(await envelope(c, 'a@sender.test', ['x@example.com'])).toEqual(['250 2.1.5 Accepted']);
    const folded = received(50).replaceAll('by h', '\r\n\tby h').replaceAll('Received:', 'Received :');
    expect(await dataRaw(c, `${folded}Subject: loop\r\n\r\nbody\r\n`)).toBe('554 5.4.6 Too many hops');
  });
});

describe('mail loops at RCPT: the upstream is this relay or its fleet', () => {
  const acmeTo = (port: number) =>
    relayConfig([tenant('acme', ['example.com'], [forward('acme/r', ['*@example.com'], [port])])]);

  it('a route to the relay itself: 554 5.4.6 at once, one extra session, not dozens', async () => {
    const { relay, port, logs } = await relayWith(undefined);
    expect(relay.applyConfig(acmeTo(port)).ok).toBe(true);
    const c = await client(port);
    expect(await envelope(c, 'a@sender.test', ['x@example.com'])).toEqual([
      '554 5.4.6 Mail for <x@example.com> loops back to myself',
    ]);
    expect(await metric(relay, 'mailplus_relay_sessions_total')).toEqual(['mailplus_relay_sessions_total 2']);
    expect(logs.find((l) => l.msg === 'mail loop')?.error).toMatch(/loops back to myself.*relay\.test/);
    expect(
      await metric(
        relay,
        'mailplus_relay_recipients_total{tenant="acme",route="acme/r",result="rejected",reason="mail_loop"}',
      ),
    ).toEqual([
      'mailplus_relay_recipients_total{tenant="acme",route="acme/r",result="rejected",reason="mail_loop"} 1',
    ]);
  });

  it('a route into another relay of the same fleet (other host name): 554 5.4.6', async () => {
    const a = await relayWith(undefined, { hostname: 'relay-a.test', fleetId: 'mx-fleet' });
    const b = await relayWith(acmeTo(a.port), { hostname: 'relay-b.test', fleetId: 'mx-fleet' });
    expect(a.relay.applyConfig(acmeTo(b.port)).ok).toBe(true);
    const c = await client(a.port);
    expect(await envelope(c, 'a@sender.test', ['x@example.com'])).toEqual([
      '554 5.4.6 Mail for <x@example.com> loops back to myself',
    ]);
    expect(await metric(b.relay, 'mailplus_relay_sessions_total')).toEqual([
      'mailplus_relay_sessions_total 1',
    ]);
  });

  it('another fleet (different fleet id) is an ordinary upstream', async () => {
    const up = await sink();
    const b = await relayWith(acmeTo(up.port), { hostname: 'relay-b.test', fleetId: 'their-fleet' });
    const a = await relayWith(acmeTo(b.port), { hostname: 'relay-a.test', fleetId: 'mx-fleet' });
    const c = await client(a.port);
    expect(await envelope(c, 'a@sender.test', ['x@example.com'])).toEqual(['250 2.1.5 Accepted']);
    expect(await dataRaw(c, MSG)).toMatch(/^250 2\.0\.0 OK/);
    const [m] = await up.waitForMessages(1);
    // two relays, two Received lines, the last hop's on top
    expect(m.data.toString()).toMatch(
      /^Received: from relay-a\.test [\s\S]*\r\nReceived: from client\.test /,
    );
  });
});

describe('XCLIENT toward upstreams that advertise it (route opt-in)', () => {
  interface Seen {
    addr: string;
    helo: string;
    from: string;
  }
  /** smtp-server as the next hop, with XCLIENT enabled for the relay (Postfix: smtpd_authorized_xclient_hosts). */
  async function xclientUpstream(): Promise<{ port: number; seen: Seen[]; connections: () => number }> {
    const seen: Seen[] = [];
    let connections = 0;
    const server = new SMTPServer({
      name: 'next-hop.localhost',
      useXClient: true,
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      logger: false,
      onConnect(_session, cb) {
        connections++;
        cb();
      },
      onMailFrom(address, session, cb) {
        seen.push({
          addr: session.remoteAddress,
          helo: String(session.hostNameAppearsAs),
          from: address.address,
        });
        cb();
      },
      onData(stream, _session, cb) {
        stream.resume();
        stream.on('end', () => cb());
      },
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    return { port: (server.server.address() as AddressInfo).port, seen, connections: () => connections };
  }

  const proxied = async (port: number, ip: string, helo: string) => {
    const c = await RawClient.connect(port, {
      prefix: Buffer.from(`PROXY TCP4 ${ip} 127.0.0.1 40000 25\r\n`),
    });
    cleanups.push(() => c.close());
    expect((await c.hello(helo))?.code).toBe(250);
    return c;
  };

  const routeTo = (port: number, xclient: boolean) =>
    relayConfig([
      tenant(
        'acme',
        ['example.com'],
        [
          {
            name: 'acme/r',
            priority: 100,
            recipients: ['*@example.com'],
            senders: [],
            action: {
              forward: {
                upstreams: [
                  { host: '127.0.0.1', port, tls: 'none', verify: false, ...(xclient ? { xclient } : {}) },
                ],
              },
            },
          },
        ],
      ),
    ]);

  it('the next hop sees the real client address and HELO; another client gets a session of its own', async () => {
    const up = await xclientUpstream();
    const { port } = await relayWith(routeTo(up.port, true), { trustedProxies: ['127.0.0.1/32'] });
    const one = await proxied(port, '203.0.113.9', 'one.sender.example');
    for (const n of [1, 2]) {
      expect(await envelope(one, `m${n}@sender.test`, ['x@example.com'])).toEqual(['250 2.1.5 Accepted']);
      expect(await dataRaw(one, MSG)).toMatch(/^250 2\.0\.0 OK/);
    }
    const two = await proxied(port, '198.51.100.4', 'two.sender.example');
    expect(await envelope(two, 'm3@sender.test', ['x@example.com'])).toEqual(['250 2.1.5 Accepted']);
    expect(await dataRaw(two, MSG)).toMatch(/^250 2\.0\.0 OK/);
    expect(up.seen).toEqual([
      { addr: '203.0.113.9', helo: 'one.sender.example', from: 'm1@sender.test' },
      { addr: '203.0.113.9', helo: 'one.sender.example', from: 'm2@sender.test' },
      { addr: '198.51.100.4', helo: 'two.sender.example', from: 'm3@sender.test' },
    ]);
    // the first client's two messages shared one upstream session, the second client got another
    expect(up.connections()).toBe(2);
  });

  it('without the route option no XCLIENT is sent: the next hop sees the relay', async () => {
    const up = await xclientUpstream();
    const { port } = await relayWith(routeTo(up.port, false), { trustedProxies: ['127.0.0.1/32'] });
    const c = await proxied(port, '203.0.113.9', 'one.sender.example');
    expect(await envelope(c, 'a@sender.test', ['x@example.com'])).toEqual(['250 2.1.5 Accepted']);
    expect(await dataRaw(c, MSG)).toMatch(/^250 2\.0\.0 OK/);
    expect(up.seen).toEqual([{ addr: '127.0.0.1', helo: 'relay.test', from: 'a@sender.test' }]);
  });

  it('an upstream that refuses XCLIENT fails over like any session failure (451 4.4.1), the reason logged', async () => {
    const up = await scripted({
      extensions: ['PIPELINING', 'XCLIENT NAME ADDR PROTO HELO'],
      replies: { XCLIENT: '550 5.7.0 Error: insufficient authorization' },
    });
    const { port, logs } = await relayWith(routeTo(up.port, true));
    const c = await client(port);
    expect(await envelope(c, 'a@sender.test', ['x@example.com'])).toEqual([
      '451 4.4.1 Upstream unavailable, try again later',
    ]);
    expect(up.sessions[0].commands).toContain(
      'XCLIENT ADDR=127.0.0.1 NAME=[UNAVAILABLE] PROTO=ESMTP HELO=client.test',
    );
    expect(logs.find((l) => l.msg === 'upstream attempt failed')?.error).toMatch(
      /XCLIENT refused: 550 5\.7\.0/,
    );
  });

  it('a session that fails after XCLIENT (EHLO refused, a loop) is closed, not left holding a pool slot', async () => {
    const afterXclient = (refusal: string, normal: string) => (_l: string, s: { count(v: string): number }) =>
      s.count('XCLIENT') > 0 ? refusal : normal;
    const up = await scripted({
      extensions: ['PIPELINING', 'XCLIENT NAME ADDR PROTO HELO'],
      replies: {
        XCLIENT: '220 scripted.test ESMTP',
        // Postfix with smtpd_delay_reject=no refuses a bad client HELO name at EHLO
        EHLO: afterXclient(
          '550 5.7.1 <bad.helo>: Helo command rejected',
          '250-scripted.test\r\n250-PIPELINING\r\n250 XCLIENT NAME ADDR PROTO HELO',
        ),
        HELO: '550 5.7.1 <bad.helo>: Helo command rejected',
      },
    });
    const loop = await scripted({
      extensions: ['PIPELINING', 'XCLIENT NAME ADDR PROTO HELO'],
      // after XCLIENT the "next hop" greets as this relay
      replies: { XCLIENT: '220 relay.test ESMTP' },
    });
    for (const u of [up, loop]) {
      const { port } = await relayWith(routeTo(u.port, true));
      const c = await client(port, 'bad.helo');
      expect((await envelope(c, 'a@sender.test', ['x@example.com']))[0]).toMatch(
        /^(451 4\.4\.1|554 5\.4\.6)/,
      );
      await u.waitFor(() => u.sessions.length === 1 && u.sessions[0].closed, 3000);
    }
  });
});
