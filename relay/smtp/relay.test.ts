import nodemailer from 'nodemailer';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { forward, RawClient, reject, relayConfig, sleep, splitReceived, tenant } from './testing/harness.ts';
import { dataRaw, envelope, line, relayKit } from './testing/relay-kit.ts';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const { sink, relayWith, client } = relayKit(cleanups);

function transport(port: number) {
  const t = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
  cleanups.push(() => t.close());
  return t;
}

async function send(port: number, from: string, to: string[], raw: string | Buffer) {
  return transport(port).sendMail({ envelope: { from, to }, raw });
}

const MSG = 'From: a@sender.test\r\nTo: x@example.com\r\nSubject: secret subject\r\n\r\nhello body\r\n';

describe('relay main path', () => {
  it('relays a message to the upstream and answers 250 after the upstream did', async () => {
    const up = await sink();
    const { port, logs } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('acme/all', ['*@example.com'], [up.port])])]),
    );
    const info = await send(port, 'a@sender.test', ['x@example.com'], MSG);
    expect(info.response).toMatch(/^250 2\.0\.0 OK/);
    const [m] = await up.waitForMessages(1);
    expect(m.mailFrom).toBe('a@sender.test');
    expect(m.rcptTo).toEqual(['x@example.com']);
    // our Received header first (RFC 5321 §4.4), then the client's content untouched
    const { received, rest } = splitReceived(m.data);
    expect(received).toMatch(
      /^Received: from [^\r\n]+ \(unknown \[127\.0\.0\.1\]\)\r\n\tby relay\.test \(Mail-Plus\) with ESMTP id [0-9a-f]{16}\r\n\tfor <x@example\.com>; \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000\r\n$/,
    );
    expect(rest.toString()).toBe(MSG);
    await sleep(20);
    const line = logs.find((l) => l.msg === 'transaction');
    expect(line).toMatchObject({
      result: 'relayed',
      code: 250,
      tenants: ['acme'],
      routes: ['acme/all'],
      sender: 'a@sender.test',
      recipients: [{ address: 'x@example.com', result: 'accepted', code: 250 }],
    });
    expect(JSON.stringify(logs)).not.toContain('secret subject');
    expect(JSON.stringify(logs)).not.toContain('hello body');
  });
});

describe('upstream pool metrics', () => {
  it('counts sessions set up, transactions by outcome, and the pool occupancy at scrape time', async () => {
    const up = await sink();
    const down = await sink({ refuse: true });
    const { port, relay } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [down.port, up.port])])]),
    );
    for (let i = 0; i < 3; i++) await send(port, 'a@s.test', ['x@example.com'], MSG);
    await up.waitForMessages(3);
    const c = await client(port);
    await envelope(c, 'a@s.test', ['x@example.com']);
    await c.cmd('RSET');
    // the relay answers RSET at once; the upstream's RSET (and the release it counts) follows
    const released = `mailplus_relay_upstream_transactions_total{upstream="127.0.0.1:${up.port}",outcome="released"} 1`;
    await vi.waitFor(async () => expect(await relay.metrics.registry.metrics()).toContain(released), {
      timeout: 2000,
    });
    const text = await relay.metrics.registry.metrics();
    // three messages over one reused connection; the refusing upstream fails each attempt
    expect(text).toContain(
      `mailplus_relay_upstream_connections_total{upstream="127.0.0.1:${up.port}",result="ok"} 1`,
    );
    expect(text).toMatch(
      new RegExp(
        `mailplus_relay_upstream_connections_total\\{upstream="127\\.0\\.0\\.1:${down.port}",result="error"\\} [1-9]`,
      ),
    );
    expect(text).toContain(
      `mailplus_relay_upstream_transactions_total{upstream="127.0.0.1:${up.port}",outcome="accepted"} 3`,
    );
    expect(text).toContain('mailplus_relay_upstream_pool_connections{state="open"} 1');
    expect(text).toContain('mailplus_relay_upstream_pool_connections{state="idle"} 1');
    expect(text).toContain('mailplus_relay_upstream_pool_connections{state="waiting"} 0');
  });
});

describe('recipient policy (docs/architecture.md reply table)', () => {
  it('relay_denied, no_route, route_reject, client_not_allowed', async () => {
    const up = await sink();
    const { port, relay } = await relayWith(
      relayConfig([
        tenant(
          'acme',
          ['example.com'],
          [
            forward('acme/sales', ['sales@example.com'], [up.port]),
            reject('acme/block', ['blocked@example.com'], 550, '5.7.1', 'Mailbox closed by policy'),
          ],
        ),
        tenant('locked', ['locked.test'], [forward('locked/all', ['*@locked.test'], [up.port])], {
          clientCIDRs: ['10.0.0.0/8'],
        }),
      ]),
    );
    const c = await client(port);
    expect(
      await envelope(c, 'a@sender.test', [
        'x@other.test',
        'nobody@example.com',
        'blocked@example.com',
        'y@locked.test',
      ]),
    ).toEqual([
      '550 5.7.1 Relay access denied: other.test is not served here',
      '550 5.1.1 No route for nobody@example.com',
      '550 5.7.1 Mailbox closed by policy',
      '550 5.7.1 Client address not permitted to send to locked.test',
    ]);
    expect(line(await c.cmd('DATA'))).toMatch(/^503/);
    const metrics = await relay.metrics.registry.getSingleMetricAsString('mailplus_relay_recipients_total');
    for (const reason of ['relay_denied', 'no_route', 'route_reject', 'client_not_allowed']) {
      expect(metrics).toContain(`reason="${reason}"`);
    }
    expect(up.connections()).toBe(0);
  });

  it('requireTLS refuses plaintext with 530 5.7.0', async () => {
    const up = await sink();
    const { port } = await relayWith(
      relayConfig([
        tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [up.port])], { requireTLS: true }),
      ]),
    );
    const c = await client(port);
    expect(await envelope(c, 'a@s.test', ['x@example.com'])).toEqual([
      '530 5.7.0 Must issue a STARTTLS command first',
    ]);
  });

  it('maxRecipients: 452 4.5.3 past the tenant limit', async () => {
    const up = await sink();
    const { port } = await relayWith(
      relayConfig([
        tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [up.port])], {
          limits: { maxRecipients: 2 },
        }),
      ]),
    );
    const c = await client(port);
    expect(await envelope(c, 'a@s.test', ['a@example.com', 'b@example.com', 'c@example.com'])).toEqual([
      '250 2.1.5 Accepted',
      '250 2.1.5 Accepted',
      '452 4.5.3 Too many recipients',
    ]);
    expect(await dataRaw(c, MSG)).toMatch(/^250 2\.0\.0 OK/);
    const [m] = await up.waitForMessages(1);
    expect(m.rcptTo).toEqual(['a@example.com', 'b@example.com']);
  });

  it('rate limit per (tenant, client): 451 4.7.1, counted once per transaction', async () => {
    const up = await sink();
    const { port } = await relayWith(
      relayConfig([
        tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [up.port])], {
          limits: { rate: { messages: 1, perSeconds: 3600 } },
        }),
      ]),
    );
    const c = await client(port);
    expect(await envelope(c, 'a@s.test', ['a@example.com', 'b@example.com'])).toEqual([
      '250 2.1.5 Accepted',
      '250 2.1.5 Accepted',
    ]);
    expect(await dataRaw(c, MSG)).toMatch(/^250/);
    expect(await envelope(c, 'a@s.test', ['a@example.com'])).toEqual([
      '451 4.7.1 Rate limit exceeded, try again later',
    ]);
  });

  it('split: a recipient for another upstream set gets 452 4.5.3', async () => {
    const up1 = await sink();
    const up2 = await sink();
    const { port } = await relayWith(
      relayConfig([
        tenant(
          'acme',
          ['example.com'],
          [
            forward('acme/a', ['a@example.com'], [up1.port]),
            forward('acme/b', ['b@example.com'], [up2.port]),
          ],
        ),
      ]),
    );
    const c = await client(port);
    expect(await envelope(c, 'a@s.test', ['a@example.com', 'b@example.com'])).toEqual([
      '250 2.1.5 Accepted',
      '452 4.5.3 Recipient routes elsewhere, send it in a separate transaction',
    ]);
  });

  it('declared SIZE over the tenant limit: 552 5.3.4 at RCPT; over the relay limit: at MAIL', async () => {
    const up = await sink();
    const { port } = await relayWith(
      relayConfig([
        tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [up.port])], {
          limits: { maxMessageSize: 1000 },
        }),
      ]),
      { maxMessageSize: 5000 },
    );
    const c = await client(port);
    expect(await envelope(c, 'a@s.test', ['a@example.com'], ' SIZE=2000')).toEqual([
      '552 5.3.4 Message size exceeds fixed limit of 1000 bytes',
    ]);
    await c.cmd('RSET');
    expect(await envelope(c, 'a@s.test', ['a@example.com'], ' SIZE=6000')).toEqual([
      '552 5.3.4 Message size exceeds fixed limit of 5000 bytes',
    ]);
  });

  it('streamed message over the limit: 552 and nothing delivered', async () => {
    const up = await sink();
    const { port } = await relayWith(
      relayConfig([
        tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [up.port])], {
          limits: { maxMessageSize: 1000 },
        }),
      ]),
    );
    const c = await client(port);
    await envelope(c, 'a@s.test', ['a@example.com']);
    expect(await dataRaw(c, `Subject: big\r\n\r\n${'x'.repeat(5000)}\r\n`)).toBe(
      '552 5.3.4 Message size exceeds fixed limit of 1000 bytes',
    );
    expect(line(await c.cmd('NOOP'))).toMatch(/^250/);
    await sleep(100);
    expect(up.messages).toHaveLength(0);
  });
});

describe('upstream verdicts and failover', () => {
  it('passes the upstream 5xx/4xx at RCPT back with its codes', async () => {
    const up = await sink({
      rcpt: {
        'gone@example.com': { code: 550, message: '5.1.1 no such user' },
        'full@example.com': { code: 452, message: '4.2.2 mailbox full' },
      },
    });
    const { port } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [up.port])])]),
    );
    const c = await client(port);
    expect(await envelope(c, 'a@s.test', ['gone@example.com', 'ok@example.com', 'full@example.com'])).toEqual(
      ['550 5.1.1 upstream: no such user', '250 2.1.5 Accepted', '452 4.2.2 upstream: mailbox full'],
    );
    expect(await dataRaw(c, MSG)).toMatch(/^250/);
    const [m] = await up.waitForMessages(1);
    expect(m.rcptTo).toEqual(['ok@example.com']);
  });

  it('fails over when the first upstream refuses connections', async () => {
    const down = await sink({ refuse: true });
    const up = await sink();
    const { port, relay } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [down.port, up.port])])]),
    );
    const info = await send(port, 'a@s.test', ['x@example.com'], MSG);
    expect(info.response).toMatch(/^250/);
    await up.waitForMessages(1);
    const attempts = await relay.metrics.registry.getSingleMetricAsString(
      'mailplus_relay_upstream_attempts_total',
    );
    expect(attempts).toContain(`upstream="127.0.0.1:${down.port}",result="error"`);
    expect(attempts).toContain(`upstream="127.0.0.1:${up.port}",result="ok"`);
  });

  it('fails over on 4xx at MAIL FROM and at the first RCPT', async () => {
    const busy = await sink({ mailFrom: { code: 451, message: '4.3.2 busy' } });
    const fussy = await sink({ rcpt: { 'x@example.com': { code: 450, message: '4.2.0 try later' } } });
    const up = await sink();
    const { port } = await relayWith(
      relayConfig([
        tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [busy.port, fussy.port, up.port])]),
      ]),
    );
    const info = await send(port, 'a@s.test', ['x@example.com'], MSG);
    expect(info.response).toMatch(/^250/);
    await up.waitForMessages(1);
    expect(busy.messages).toHaveLength(0);
    expect(fussy.messages).toHaveLength(0);
  });

  it('a 5xx at MAIL FROM is final: the next upstream is not tried', async () => {
    // the route's failover policy (transaction.ts): failures and 4xx move on, a 5xx is the verdict
    const down = await sink({ refuse: true });
    const refusing = await sink({ mailFrom: { code: 550, message: '5.7.1 go away' } });
    const up = await sink();
    const { port, relay } = await relayWith(
      relayConfig([
        tenant(
          'acme',
          ['example.com'],
          [forward('r', ['*@example.com'], [down.port, refusing.port, up.port])],
        ),
      ]),
    );
    const c = await client(port);
    expect(await envelope(c, 'a@s.test', ['x@example.com'])).toEqual(['550 5.7.1 upstream: go away']);
    const attempts = await relay.metrics.registry.getSingleMetricAsString(
      'mailplus_relay_upstream_attempts_total',
    );
    expect(attempts).toContain(`upstream="127.0.0.1:${down.port}",result="error"`);
    expect(attempts).toContain(`upstream="127.0.0.1:${refusing.port}",result="refused"`);
    expect(attempts).not.toContain(`upstream="127.0.0.1:${up.port}"`);
    expect(up.messages).toHaveLength(0);
  });

  it('all upstreams down: 451 4.4.1', async () => {
    const d1 = await sink({ refuse: true });
    const d2 = await sink({ refuse: true });
    const { port } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [d1.port, d2.port])])]),
    );
    const c = await client(port);
    expect(await envelope(c, 'a@s.test', ['x@example.com'])).toEqual([
      '451 4.4.1 Upstream unavailable, try again later',
    ]);
  });

  it('slow upstream: a greeting past the timeout fails over to the next upstream', async () => {
    const slow = await sink({ delayMs: { connect: 3000 } });
    const up = await sink();
    const { port } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [slow.port, up.port])])]),
      {
        upstream: {
          connectTimeoutMs: 2000,
          greetingTimeoutMs: 300,
          commandTimeoutMs: 5000,
          dataTimeoutMs: 5000,
        },
      },
    );
    const started = Date.now();
    const info = await send(port, 'a@s.test', ['x@example.com'], MSG);
    expect(info.response).toMatch(/^250/);
    expect(Date.now() - started).toBeLessThan(2500);
    await up.waitForMessages(1);
    expect(slow.messages).toHaveLength(0);
  });

  it('slow upstream: no final reply within the data timeout is 451 4.4.2, never 250', async () => {
    const slow = await sink({ delayMs: { data: 3000 } });
    const { port } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [slow.port])])]),
      { upstream: { connectTimeoutMs: 2000, commandTimeoutMs: 5000, dataTimeoutMs: 400 } },
    );
    const c = await client(port);
    await envelope(c, 'a@s.test', ['x@example.com']);
    expect(await dataRaw(c, MSG)).toBe('451 4.4.2 Upstream connection lost, try again later');
  });

  it('upstream disconnect mid-DATA: 451 4.4.2 and nothing delivered', async () => {
    const up = await sink({ dropAfterDataBytes: 2000 });
    const { port } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [up.port])])]),
    );
    const c = await client(port);
    await envelope(c, 'a@s.test', ['x@example.com']);
    const body = `Subject: x\r\n\r\n${`${'y'.repeat(998)}\r\n`.repeat(200)}`;
    expect(await dataRaw(c, body)).toBe('451 4.4.2 Upstream connection lost, try again later');
    await sleep(100);
    expect(up.messages).toHaveLength(0);
  });

  it('upstream final 5xx is passed to the client', async () => {
    const up = await sink({ data: { code: 554, message: '5.7.1 spam detected' } });
    const { port } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [up.port])])]),
    );
    const c = await client(port);
    await envelope(c, 'a@s.test', ['x@example.com']);
    expect(await dataRaw(c, MSG)).toBe('554 5.7.1 upstream: spam detected');
  });
});

describe('content', () => {
  it('arrives byte-identical: stuffed dots, long lines, 8-bit bytes, bare LF not before a dot', async () => {
    const up = await sink();
    const { port } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [up.port])])]),
    );
    const c = await client(port);
    await envelope(c, 'a@s.test', ['x@example.com'], ' BODY=8BITMIME');
    const wire = Buffer.concat([
      Buffer.from('Subject: t\r\n\r\n..dot\r\n...\r\n..\r\n', 'latin1'),
      Buffer.alloc(20000, 0x7a),
      Buffer.from('\r\n\xe4\xf6\xfc\x00\xff\r\nbare\nlf\r\nend\r\n', 'latin1'),
    ]);
    expect(await dataRaw(c, wire)).toMatch(/^250 2\.0\.0 OK/);
    const [m] = await up.waitForMessages(1);
    // the sink un-stuffs like any MTA: what the client meant is what the upstream got
    const meant = Buffer.from(wire.toString('latin1').replaceAll('\r\n..', '\r\n.'), 'latin1');
    expect(splitReceived(m.data).received).toMatch(/^Received: from client\.test /);
    expect(splitReceived(m.data).rest.equals(meant)).toBe(true);
  });

  const shapes: Array<[string, string]> = [
    ['LF.CRLF', 'x\r\n\n.\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@example.com>\r\nDATA\r\nevil\r\n'],
    ['CRLF.LF', 'x\r\n.\nMAIL FROM:<evil@x.test>\r\n'],
    ['CR.CRLF', 'x\r.\r\nMAIL FROM:<evil@x.test>\r\n'],
    ['LF.LF', 'x\n.\nMAIL FROM:<evil@x.test>\r\n'],
  ];
  for (const [name, shape] of shapes) {
    it(`refuses the smuggling shape ${name} with 550 5.6.0 and delivers nothing`, async () => {
      const up = await sink();
      const { port } = await relayWith(
        relayConfig([tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [up.port])])]),
      );
      const c = await client(port);
      await envelope(c, 'a@s.test', ['x@example.com']);
      expect(await dataRaw(c, `Subject: s\r\n\r\n${shape}tail\r\n`)).toBe(
        '550 5.6.0 Bare CR or LF next to a line-leading dot; message refused',
      );
      expect(line(await c.cmd('NOOP'))).toMatch(/^250/);
      await sleep(100);
      expect(up.messages).toHaveLength(0);
    });
  }
});

describe('TLS', () => {
  it('requireTLS is satisfied after STARTTLS; pipelined commands after STARTTLS are discarded', async () => {
    const { createTestPki } = await import('../../test/support/certs.ts');
    const pki = await createTestPki();
    cleanups.push(() => pki.cleanup());
    const up = await sink();
    const { port } = await relayWith(
      relayConfig([
        tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [up.port])], { requireTLS: true }),
      ]),
      { tlsCert: pki.server.certPath, tlsKey: pki.server.keyPath },
    );
    const c = await client(port);
    // STARTTLS injection: EHLO pipelined in the same plaintext packet must not run inside TLS
    c.write('STARTTLS\r\nEHLO injected.test\r\n');
    expect(line(await c.read())).toMatch(/^220/);
    const t = await c.startTls({ ca: pki.ca, servername: 'localhost', rejectUnauthorized: true });
    cleanups.push(() => t.close());
    expect(line(await t.cmd('MAIL FROM:<a@s.test>'))).toMatch(/^503/);
    expect((await t.cmd('EHLO client.test'))?.code).toBe(250);
    expect(await envelope(t, 'a@s.test', ['x@example.com'])).toEqual(['250 2.1.5 Accepted']);
    expect(await dataRaw(t, MSG)).toMatch(/^250/);
    await up.waitForMessages(1);
  });

  it('reloads the certificate when the files change; a bad pair keeps the old one', async () => {
    const { createTestPki } = await import('../../test/support/certs.ts');
    const fsp = await import('node:fs/promises');
    const path = await import('node:path');
    const pki = await createTestPki();
    cleanups.push(() => pki.cleanup());
    const other = await pki.issue('other', ['localhost']);
    const dir = await fsp.mkdtemp(path.join(pki.dir, 'live-'));
    const certPath = path.join(dir, 'tls.crt');
    const keyPath = path.join(dir, 'tls.key');
    await fsp.writeFile(certPath, pki.server.cert);
    await fsp.writeFile(keyPath, pki.server.key);
    const { port, relay } = await relayWith(relayConfig([]), {
      tlsCert: certPath,
      tlsKey: keyPath,
      certWatch: { debounceMs: 20, pollMs: 100 },
    });
    const fingerprint = async () => {
      const c = await client(port);
      expect((await c.cmd('STARTTLS'))?.code).toBe(220);
      const t = await c.startTls();
      const fp = (t.socket as import('node:tls').TLSSocket).getPeerCertificate().fingerprint256;
      t.close();
      return fp;
    };
    const first = await fingerprint();
    // atomic swap, as a Secret volume does
    await fsp.writeFile(`${certPath}.tmp`, other.cert);
    await fsp.writeFile(`${keyPath}.tmp`, other.key);
    await fsp.rename(`${keyPath}.tmp`, keyPath);
    await fsp.rename(`${certPath}.tmp`, certPath);
    await sleep(400);
    const second = await fingerprint();
    expect(second).not.toBe(first);
    await fsp.writeFile(certPath, 'garbage');
    await sleep(400);
    expect(await fingerprint()).toBe(second);
    const m = await relay.metrics.registry.getSingleMetricAsString(
      'mailplus_relay_tls_certificate_reloads_total',
    );
    expect(m).toMatch(/result="success"} [1-9]/);
    expect(m).toMatch(/result="failure"} [1-9]/);
  });
});

function proxyV2(src: string, sport: number): Buffer {
  const { V2_SIGNATURE } = { V2_SIGNATURE: Buffer.from('0d0a0d0a000d0a515549540a', 'hex') };
  const a = Buffer.alloc(12);
  a.set(src.split('.').map(Number), 0);
  a.set([127, 0, 0, 1], 4);
  a.writeUInt16BE(sport, 8);
  a.writeUInt16BE(25, 10);
  return Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x11, 0, 12]), a]);
}

describe('PROXY protocol', () => {
  const cfg = (port: number) =>
    relayConfig([
      tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [port])], {
        clientCIDRs: ['203.0.113.0/24'],
      }),
    ]);

  for (const [name, header] of [
    ['v1', Buffer.from('PROXY TCP4 203.0.113.7 127.0.0.1 40000 25\r\n')],
    ['v2', proxyV2('203.0.113.7', 40000)],
  ] as const) {
    it(`${name} from a trusted proxy: policy sees the proxied client address`, async () => {
      const up = await sink();
      const { port, logs } = await relayWith(cfg(up.port), { trustedProxies: ['127.0.0.0/8'] });
      const c = await RawClient.connect(port, { prefix: header });
      cleanups.push(() => c.close());
      expect((await c.hello())?.code).toBe(250);
      expect(await envelope(c, 'a@s.test', ['x@example.com'])).toEqual(['250 2.1.5 Accepted']);
      expect(await dataRaw(c, MSG)).toMatch(/^250/);
      await sleep(20);
      expect(logs.find((l) => l.msg === 'transaction')?.clientIp).toBe('203.0.113.7');
    });
  }

  it('is not parsed from untrusted peers, and a trusted peer without a header is dropped', async () => {
    const up = await sink();
    const { port } = await relayWith(cfg(up.port), { trustedProxies: ['10.0.0.0/8'] });
    const c = await RawClient.connect(port);
    cleanups.push(() => c.close());
    await c.read();
    expect((await c.cmd('PROXY TCP4 203.0.113.7 127.0.0.1 40000 25'))?.code).toBe(500);
    await c.cmd('EHLO client.test');
    expect(await envelope(c, 'a@s.test', ['x@example.com'])).toEqual([
      '550 5.7.1 Client address not permitted to send to example.com',
    ]);
    const t = await relayWith(cfg(up.port), { trustedProxies: ['127.0.0.1/32'], proxyHeaderTimeoutMs: 200 });
    const d = await RawClient.connect(t.port, { prefix: Buffer.from('EHLO no-header\r\n') });
    cleanups.push(() => d.close());
    expect(await d.read()).toBeUndefined();
    expect(
      await t.relay.metrics.registry.getSingleMetricAsString('mailplus_relay_proxy_protocol_total'),
    ).toContain('result="error"');
  });
});

describe('operations', () => {
  it('hot reload: new transactions use the new config, an invalid one is refused and the last good kept', async () => {
    const up1 = await sink();
    const up2 = await sink();
    const c1 = relayConfig([tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [up1.port])])]);
    const { port, relay } = await relayWith(c1);
    const c = await client(port);
    expect(await envelope(c, 'a@s.test', ['x@example.com'])).toEqual(['250 2.1.5 Accepted']);
    // in flight: finishes on the snapshot it started with
    const c2 = relayConfig([
      tenant(
        'acme',
        ['example.com', 'new.test'],
        [forward('r', ['*@example.com', '*@new.test'], [up2.port])],
      ),
    ]);
    expect(relay.applyConfig(c2)).toMatchObject({ ok: true, generation: 2 });
    expect(line(await c.cmd('RCPT TO:<y@new.test>'))).toBe(
      '550 5.7.1 Relay access denied: new.test is not served here',
    );
    await c.cmd('RSET');
    expect(await envelope(c, 'a@s.test', ['y@new.test'])).toEqual(['250 2.1.5 Accepted']);
    expect(await dataRaw(c, MSG)).toMatch(/^250/);
    await up2.waitForMessages(1);
    const bad = { ...c2, hash: `sha256:${'0'.repeat(64)}` };
    expect(relay.applyConfig(bad).ok).toBe(false);
    expect(relay.applyConfig({ kind: 'nope' }).ok).toBe(false);
    expect(relay.configInfo()).toMatchObject({ hash: c2.hash, generation: 2 });
    const text = await relay.metrics.registry.metrics();
    expect(text).toContain('mailplus_relay_config_last_reload_successful 0');
    expect(text).toContain(`mailplus_relay_config_info{hash="${c2.hash}"} 1`);
    expect(text).not.toContain(c1.hash);
    expect(text).toContain('mailplus_relay_config_generation 2');
  });

  it('the snapshot is captured at MAIL FROM', async () => {
    const up1 = await sink();
    const c1 = relayConfig([tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [up1.port])])]);
    const { port, relay } = await relayWith(c1);
    const c = await client(port);
    await c.cmd('MAIL FROM:<a@s.test>');
    relay.applyConfig(
      relayConfig([tenant('other', ['other.test'], [forward('r', ['*@other.test'], [up1.port])])]),
    );
    expect(line(await c.cmd('RCPT TO:<x@example.com>'))).toBe('250 2.1.5 Accepted');
  });

  it('drain: idle sessions get 421 4.3.2, the in-flight message finishes, readiness drops', async () => {
    const up = await sink({ delayMs: { data: 300 } });
    const { port, relay } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [up.port])])]),
    );
    const adminPort = relay.address().admin?.port;
    expect((await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status).toBe(200);
    const idle = await client(port);
    const busy = await client(port);
    await envelope(busy, 'a@s.test', ['x@example.com']);
    expect((await busy.cmd('DATA'))?.code).toBe(354);
    busy.write(MSG);
    busy.write('.\r\n');
    await sleep(50);
    const drained = relay.drain(5000);
    expect(line(await idle.read())).toBe('421 4.3.2 Service shutting down, try again later');
    expect((await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status).toBe(503);
    // a client arriving while the relay drains is told to come back later, not reset
    const late = await RawClient.connect(port);
    expect(line(await late.read())).toBe('421 4.3.2 Service shutting down, try again later');
    expect(line(await busy.read())).toMatch(/^250 2\.0\.0 OK/);
    await drained;
    await up.waitForMessages(1);
    await expect(RawClient.connect(port)).rejects.toThrow();
  });

  it('admin: /metrics label-safe, /healthz, /config', async () => {
    const up = await sink();
    const cfg = relayConfig([
      tenant('acme', ['example.com'], [forward('acme/r', ['*@example.com'], [up.port])]),
    ]);
    const { port, relay } = await relayWith(cfg);
    await send(port, 'alice@s.test', ['bob@example.com'], MSG);
    const base = `http://127.0.0.1:${relay.address().admin?.port}`;
    const metrics = await (await fetch(`${base}/metrics`)).text();
    for (const name of [
      'sessions_total',
      'sessions_active',
      'recipients_total',
      'messages_total',
      'message_bytes_total',
      'upstream_latency_seconds_bucket',
      'upstream_attempts_total',
      'config_generation',
      'config_last_reload_successful',
      'config_last_reload_success_timestamp_seconds',
      'config_reloads_total',
      'config_info',
      'tls_certificate_reloads_total',
      'proxy_protocol_total',
      'draining',
    ]) {
      expect(metrics, name).toContain(`mailplus_relay_${name}`);
    }
    expect(metrics).toContain('process_cpu_user_seconds_total');
    expect(metrics).toContain(
      `mailplus_relay_messages_total{tenant="acme",route="acme/r",upstream="127.0.0.1:${up.port}",result="relayed",reason="ok"} 1`,
    );
    expect(metrics).not.toContain('alice');
    expect(metrics).not.toContain('bob@');
    expect(metrics).not.toMatch(/127\.0\.0\.1"/); // client addresses never; upstream labels are host:port
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const info = (await (await fetch(`${base}/config`)).json()) as {
      hash: string;
      generation: number;
      loadedAt: unknown;
    };
    expect(info).toMatchObject({ hash: cfg.hash, generation: 1 });
    expect(typeof info.loadedAt).toBe('string');
  });

  it('pseudonymises addresses in the log line when keyed, keeping the domain', async () => {
    const up = await sink();
    const { port, logs } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [up.port])])]),
      { pseudonymizeKey: 'k3y' },
    );
    await send(port, 'alice@s.test', ['bob@example.com'], MSG);
    await sleep(20);
    const l = logs.find((x) => x.msg === 'transaction') as Record<string, unknown>;
    expect(l.sender).toMatch(/^h:[0-9a-f]{16}@s\.test$/);
    expect((l.recipients as Array<{ address: string }>)[0].address).toMatch(/^h:[0-9a-f]{16}@example\.com$/);
    expect(JSON.stringify(logs)).not.toContain('alice');
    expect(JSON.stringify(logs)).not.toContain('secret subject');
    for (const k of [
      'time',
      'level',
      'txid',
      'session',
      'clientIp',
      'tls',
      'size',
      'upstream',
      'result',
      'code',
      'durationMs',
    ]) {
      expect(l, k).toHaveProperty(k);
    }
  });

  it('greets without the 100 ms delay by default; --greet-pause restores early-talker detection', async () => {
    const { port } = await relayWith(relayConfig([]));
    const t0 = performance.now();
    const c = await RawClient.connect(port);
    cleanups.push(() => c.close());
    expect((await c.read())?.code).toBe(220);
    expect(performance.now() - t0).toBeLessThan(80);
    const slow = await relayWith(relayConfig([]), { greetPauseMs: 200 });
    const e = await RawClient.connect(slow.port, { prefix: Buffer.from('EHLO early.test\r\n') });
    cleanups.push(() => e.close());
    expect(line(await e.read())).toMatch(/^421 .*talk too soon/);
  });

  it('bounds commands per session', async () => {
    const { port } = await relayWith(relayConfig([]), { maxCommands: 5 });
    const c = await client(port);
    for (let i = 0; i < 4; i++) expect((await c.cmd('NOOP'))?.code).toBe(250);
    expect(line(await c.cmd('NOOP'))).toBe('421 4.7.0 Too many commands in one session, closing connection');
  });

  it('bounds transactions per session: the sender reconnects for more', async () => {
    const up = await sink();
    const { port } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [up.port])])]),
      { maxTransactions: 2 },
    );
    const c = await client(port);
    for (let i = 0; i < 2; i++) {
      expect(await envelope(c, 'a@s.test', ['x@example.com'])).toEqual(['250 2.1.5 Accepted']);
      expect(await dataRaw(c, MSG)).toMatch(/^250 /);
    }
    expect(line(await c.cmd('MAIL FROM:<a@s.test>'))).toBe(
      '421 4.7.0 Too many transactions in one session, closing connection',
    );
    await up.waitForMessages(2);
  });

  it('client disconnect mid-DATA aborts the upstream transaction: nothing delivered', async () => {
    const up = await sink();
    const { port, logs } = await relayWith(
      relayConfig([tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [up.port])])]),
    );
    const c = await client(port);
    await envelope(c, 'a@s.test', ['x@example.com']);
    expect((await c.cmd('DATA'))?.code).toBe(354);
    c.write(`Subject: x\r\n\r\n${'z'.repeat(10000)}\r\n`);
    await sleep(50);
    c.close();
    await sleep(200);
    expect(up.messages).toHaveLength(0);
    expect(logs.find((l) => l.msg === 'transaction')).toMatchObject({
      result: 'failed',
      reason: 'client_disconnected',
    });
  });

  it('closes sessions past the session time limit with 421 4.4.2', async () => {
    const { port } = await relayWith(relayConfig([]), { maxSessionMs: 150 });
    const c = await client(port);
    expect(line(await c.read())).toBe('421 4.4.2 Session time limit exceeded, closing connection');
  });

  it('watchConfigFile follows a ConfigMap-style ..data symlink swap and refuses a broken file', async () => {
    const fsp = await import('node:fs/promises');
    const path = await import('node:path');
    const os = await import('node:os');
    const { watchConfigFile } = await import('../config/file-watch.ts');
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'mailplus-cm-'));
    cleanups.push(() => fsp.rm(dir, { recursive: true, force: true }));
    const up = await sink();
    const c1 = relayConfig([tenant('acme', ['example.com'], [forward('r', ['*@example.com'], [up.port])])]);
    const c2 = relayConfig([
      tenant('acme', ['example.com', 'two.test'], [forward('r', ['*@example.com'], [up.port])]),
    ]);
    const publish = async (gen: string, text: string) => {
      await fsp.mkdir(path.join(dir, gen));
      await fsp.writeFile(path.join(dir, gen, 'relay.json'), text);
      await fsp.symlink(gen, path.join(dir, '..data_tmp'));
      await fsp.rename(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
    };
    await publish('..v1', JSON.stringify(c1));
    await fsp.symlink('..data/relay.json', path.join(dir, 'relay.json'));
    const { relay } = await relayWith(undefined);
    expect((await fetch(`http://127.0.0.1:${relay.address().admin?.port}/readyz`)).status).toBe(503);
    const w = watchConfigFile(path.join(dir, 'relay.json'), relay, { debounceMs: 20 });
    cleanups.push(() => w.close());
    expect(relay.configInfo().hash).toBe(c1.hash);
    expect((await fetch(`http://127.0.0.1:${relay.address().admin?.port}/readyz`)).status).toBe(200);
    await publish('..v2', JSON.stringify(c2));
    const t0 = Date.now();
    while (relay.configInfo().hash !== c2.hash && Date.now() - t0 < 2000) await sleep(20);
    expect(relay.configInfo().hash).toBe(c2.hash);
    expect(Date.now() - t0).toBeLessThan(1100);
    await publish('..v3', '{"broken": ');
    await sleep(1200);
    expect(relay.configInfo()).toMatchObject({ hash: c2.hash, generation: 2 });
    expect(
      await relay.metrics.registry.getSingleMetricAsString('mailplus_relay_config_reloads_total'),
    ).toContain('result="failure"');
  });
});
