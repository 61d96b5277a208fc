// Sender authentication (TenantPolicy spec.authentication) over real SMTP and real DNS: NSD serves
// the zone `test` on loopback with SPF records, DKIM keys (generated here), DMARC records and an
// ARC sealer's key; a counting forwarder in front of it never answers names under slow.test and
// the selector slowsel (timeouts). Messages are signed and sealed with mailauth's own signers.
import { generateKeyPairSync } from 'node:crypto';
import { dkimSign, sealMessage } from 'mailauth';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { TenantAuthentication } from '../../contract/config/types.gen.ts';
import type { Relay } from '../../relay/relay.ts';
import { forward, relayConfig, splitReceived, tenant } from '../../relay/smtp/testing/harness.ts';
import { dataRaw, envelope, relayKit } from '../../relay/smtp/testing/relay-kit.ts';
import { type DnsServer, startDnsServer, txt } from '../support/dns.ts';
import { type DnsProxy, startDnsProxy } from '../support/dns-proxy.ts';

const AUTHSERV = 'mx.example.com';

function rsaKey() {
  // 1024 bits: the key record fits a plain 512-byte UDP answer through the forwarder
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
  return {
    pem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    record: `v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`,
  };
}
const keys = {
  rej: rsaKey(),
  quar: rsaKey(),
  none: rsaKey(),
  other: rsaKey(),
  fwd: rsaKey(),
  brief: rsaKey(),
};

let dns: DnsServer;
let proxy: DnsProxy;

beforeAll(async () => {
  dns = await startDnsServer({
    zones: [
      {
        zone: 'test',
        records: [
          txt('good', 'v=spf1 ip4:127.0.0.0/8 -all'),
          txt('soft', 'v=spf1 ip4:192.0.2.1 ~all'),
          txt('bad', 'v=spf1 ip4:192.0.2.1 -all'),
          txt('_dmarc.good', 'v=DMARC1; p=reject'),
          txt('_dmarc.bad', 'v=DMARC1; p=reject'),
          txt('_dmarc.soft', 'v=DMARC1; p=none'),
          txt('_dmarc.rej', 'v=DMARC1; p=reject'),
          txt('_dmarc.quar', 'v=DMARC1; p=quarantine'),
          txt('_dmarc.none', 'v=DMARC1; p=none'),
          txt('s1._domainkey.rej', keys.rej.record),
          txt('s1._domainkey.quar', keys.quar.record),
          txt('s1._domainkey.none', keys.none.record),
          txt('s1._domainkey.other', keys.other.record),
          txt('arc._domainkey.fwd', keys.fwd.record),
        ],
      },
      {
        // records (and negative answers) that live for one second: the cache must ask again after it
        zone: 'brief.example',
        ttl: 1,
        records: [
          txt('@', 'v=spf1 ip4:127.0.0.0/8 -all'),
          txt('s1._domainkey', keys.brief.record),
          txt('_dmarc', 'v=DMARC1; p=reject'),
        ],
      },
    ],
  });
  proxy = await startDnsProxy({
    upstream: dns.server,
    silent: (name) => name.endsWith('slow.test') || name.startsWith('slowsel._domainkey.'),
  });
}, 30_000);
afterAll(async () => {
  await proxy?.close();
  await dns?.stop();
});

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
const { sink, relayWith, client } = relayKit(cleanups);

const DNS = () => ({ servers: [proxy.server], timeoutMs: 300, tries: 1 });

function policy(p: Partial<TenantAuthentication> = {}): TenantAuthentication {
  return {
    mode: 'annotate',
    authservId: AUTHSERV,
    holdBytes: 262_144,
    rejectQuarantine: false,
    deferOnLookupFailure: true,
    ...p,
  };
}

async function setup(auth: TenantAuthentication | undefined) {
  const up = await sink();
  const { relay, port, logs } = await relayWith(
    relayConfig([
      tenant('acme', ['example.com'], [forward('acme/all', ['*@example.com'], [up.port])], {
        ...(auth ? { authentication: auth } : {}),
      }),
    ]),
    { dns: DNS() },
  );
  return { up, relay, port, logs };
}

function message(from: string, extra = '', body = 'Hello there.\r\n'): string {
  return (
    `${extra}From: <${from}>\r\nTo: <rcpt@example.com>\r\nSubject: test message\r\n` +
    `Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <${Math.random().toString(36).slice(2)}@mp.test>\r\n\r\n${body}`
  );
}

async function signed(
  msg: string,
  domain: keyof typeof keys,
  selector = 's1',
  signDomain = `${domain}.test`,
) {
  const r = await dkimSign(msg, {
    signatureData: [{ signingDomain: signDomain, selector, privateKey: keys[domain].pem }],
  } as never);
  expect(r.errors).toEqual([]);
  expect(r.signatures).toMatch(/^DKIM-Signature: /);
  return r.signatures + msg;
}

/** Sends one message from 127.0.0.1 (HELO client.test); returns the final reply line. */
async function send(port: number, mailFrom: string, content: string): Promise<string> {
  const c = await client(port);
  const rcpt = await envelope(c, mailFrom, ['rcpt@example.com']);
  expect(rcpt).toEqual(['250 2.1.5 Accepted']);
  return dataRaw(c, content);
}

/** The Authentication-Results header our relay put on the n-th delivered message (unfolded). */
function arOf(data: Buffer): { ar: string | undefined; rest: string } {
  const { rest } = splitReceived(data);
  const text = rest.toString();
  const m = /^Authentication-Results: ((?:[^\r\n]|\r\n[ \t])*)\r\n/.exec(text);
  return { ar: m?.[1].replace(/\r\n[ \t]*/g, ' '), rest: m ? text.slice(m[0].length) : text };
}

async function metric(relay: Relay, name: string): Promise<string> {
  return relay.metrics.registry.getSingleMetricAsString(name);
}

describe('annotate: Authentication-Results for SPF, DKIM, DMARC and ARC', () => {
  it('SPF pass / fail / softfail / temperror at MAIL FROM, each in the header and counted', async () => {
    const { up, relay, port } = await setup(policy());
    const cases: Array<[string, RegExp]> = [
      ['a@good.test', /spf=pass .*smtp\.mailfrom=a@good\.test/],
      ['a@bad.test', /spf=fail .*smtp\.mailfrom=a@bad\.test/],
      ['a@soft.test', /spf=softfail .*smtp\.mailfrom=a@soft\.test/],
      ['a@slow.test', /spf=temperror .*smtp\.mailfrom=a@slow\.test/],
    ];
    for (const [i, [from, want]] of cases.entries()) {
      expect(await send(port, from, message(from))).toMatch(/^250 /);
      const [m] = (await up.waitForMessages(i + 1)).slice(i);
      const { ar } = arOf(m.data);
      expect(ar).toMatch(new RegExp(`^${AUTHSERV.replace(/\./g, '\\.')};`));
      expect(ar).toMatch(want);
    }
    const results = await metric(relay, 'mailplus_relay_auth_results_total');
    for (const r of ['pass', 'fail', 'softfail', 'temperror']) {
      expect(results).toContain(`tenant="acme",check="spf",result="${r}"} 1`);
    }
    // annotate never refuses: the p=reject failure of bad.test is delivered and counted as such
    const actions = await metric(relay, 'mailplus_relay_auth_actions_total');
    expect(actions).toContain('tenant="acme",action="annotated",reason="dmarc_fail_reject"}');
    expect(results + actions).not.toMatch(/@|good\.test/);
  });

  it('DKIM valid / broken body / broken header / missing key, with DMARC following', async () => {
    const { up, relay, port } = await setup(policy());
    const valid = await signed(message('a@rej.test'), 'rej');
    const brokenBody = valid.replace('Hello there.', 'Hello there!');
    const brokenHeader = valid.replace('Subject: test message', 'Subject: test massage');
    const noKey = await signed(message('a@rej.test'), 'rej', 'nokey');
    const cases: Array<[string, RegExp]> = [
      [valid, /dkim=pass header\.i=@rej\.test header\.s=s1 .*dmarc=pass/],
      [brokenBody, /dkim=neutral \(body hash did not verify\) header\.i=@rej\.test.*dmarc=fail/],
      [brokenHeader, /dkim=fail \(bad signature\) header\.i=@rej\.test.*dmarc=fail/],
      [noKey, /dkim=neutral \(no key\) header\.i=@rej\.test header\.s=nokey .*dmarc=fail/],
    ];
    for (const [i, [content, want]] of cases.entries()) {
      // MAIL FROM in a domain without SPF: DMARC can only pass through DKIM
      expect(await send(port, 'bounce@nospf.test', content)).toMatch(/^250 /);
      const [m] = (await up.waitForMessages(i + 1)).slice(i);
      expect(arOf(m.data).ar).toMatch(want);
    }
    const results = await metric(relay, 'mailplus_relay_auth_results_total');
    expect(results).toContain('check="dkim",result="pass"} 1');
    expect(results).toContain('check="dmarc",result="pass"} 1');
    expect(results).toContain('check="dmarc",result="fail"} 3');
  });

  it('ARC chain valid and broken', async () => {
    const { up, port } = await setup(policy());
    // a forwarder verified the original and sealed it (ARC set i=1, cv=none)
    const original = await signed(message('a@rej.test'), 'rej');
    const seal = await sealMessage(original, {
      signingDomain: 'fwd.test',
      selector: 'arc',
      privateKey: keys.fwd.pem,
      authResults: 'fwd.test; dkim=pass header.d=rej.test; dmarc=pass header.from=rej.test',
      cv: 'none',
    });
    const sealed = seal.toString() + original;
    expect(await send(port, 'list@fwd.test', sealed)).toMatch(/^250 /);
    const broken = sealed.replace('Subject: test message', 'Subject: [list] test message');
    expect(await send(port, 'list@fwd.test', broken)).toMatch(/^250 /);
    const [ok, bad] = await up.waitForMessages(2);
    expect(arOf(ok.data).ar).toMatch(/arc=pass .*smtp\.remote-ip=|arc=pass/);
    expect(arOf(bad.data).ar).toMatch(/arc=fail/);
  });

  it('removes incoming Authentication-Results claiming our authserv-id, keeps the others', async () => {
    const { up, relay, port } = await setup(policy());
    const forged =
      `Authentication-Results: ${AUTHSERV}; dkim=pass header.d=bank.test; dmarc=pass\r\n` +
      'Authentication-Results: (upstream) other.example; spf=pass\r\n' +
      `Authentication-Results: MX.EXAMPLE.COM;\r\n\tspf=pass\r\n`;
    expect(await send(port, 'a@good.test', message('a@good.test', forged))).toMatch(/^250 /);
    const [m] = await up.waitForMessages(1);
    const { ar, rest } = arOf(m.data);
    expect(ar).toMatch(/spf=pass/);
    expect(rest).not.toMatch(/Authentication-Results: (mx\.example\.com|MX\.EXAMPLE\.COM)/i);
    expect(rest).toContain('Authentication-Results: (upstream) other.example; spf=pass\r\n');
    expect(rest).toContain('Hello there.');
    void relay;
  });

  it('a message larger than holdBytes is streamed with the SPF result only, and still verified', async () => {
    const { up, relay, port } = await setup(policy({ holdBytes: 65_536 }));
    const body = `${'x'.repeat(76)}\r\n`.repeat(1200); // ~94 KB
    const content = await signed(message('a@rej.test', '', body), 'rej');
    expect(await send(port, 'a@good.test', content)).toMatch(/^250 /);
    const [m] = await up.waitForMessages(1);
    const { ar, rest } = arOf(m.data);
    expect(ar).toBe(
      `${AUTHSERV} (dkim, arc and dmarc not annotated: message larger than 65536 bytes); ` +
        `spf=pass (${AUTHSERV}: domain of a@good.test designates 127.0.0.1 as permitted sender) smtp.mailfrom=a@good.test smtp.helo=client.test`,
    );
    expect(rest.endsWith(body)).toBe(true);
    expect(await metric(relay, 'mailplus_relay_auth_results_total')).toContain(
      'check="dkim",result="pass"} 1',
    );
    expect(await metric(relay, 'mailplus_relay_auth_actions_total')).toContain(
      'action="annotated_spf_only",reason="dmarc_pass"} 1',
    );
  });

  it('mode none (no spec.authentication): no header, nothing looked up', async () => {
    const { up, port } = await setup(undefined);
    const before = proxy.count('good.test');
    expect(await send(port, 'a@good.test', message('a@good.test'))).toMatch(/^250 /);
    const [m] = await up.waitForMessages(1);
    expect(arOf(m.data).ar).toBeUndefined();
    expect(proxy.count('good.test')).toBe(before);
  });
});

describe('DNS answers are cached within their TTL', () => {
  it('a second message asks nothing the first one asked (positive and negative answers); after the TTL it asks again', async () => {
    const { up, relay, port } = await setup(policy());
    const queries = () => relay.metrics.registry.getSingleMetricAsString('mailplus_relay_dns_queries_total');
    const total = async () =>
      [...(await queries()).matchAll(/^mailplus_relay_dns_queries_total\{[^}]*\} (\d+)$/gm)].reduce(
        (sum, m) => sum + Number(m[1]),
        0,
      );
    // SPF, DKIM key and DMARC of the zone `test` (TTL 300 s); nospf.test has no SPF record (NODATA)
    const first = await signed(message('a@rej.test'), 'rej');
    expect(await send(port, 'bounce@nospf.test', first)).toMatch(/^250 /);
    const afterFirst = { rej: proxy.count('rej.test'), nospf: proxy.count('nospf.test'), all: await total() };
    expect(afterFirst.rej).toBeGreaterThanOrEqual(2); // the key and the DMARC record
    expect(afterFirst.nospf).toBeGreaterThanOrEqual(1); // the SPF lookup, answered NODATA
    expect(await send(port, 'bounce@nospf.test', await signed(message('b@rej.test'), 'rej'))).toMatch(
      /^250 /,
    );
    const msgs = await up.waitForMessages(2);
    for (const m of msgs)
      expect(arOf(m.data).ar).toMatch(/spf=none .*dkim=pass header\.i=@rej\.test .*dmarc=pass/);
    expect(proxy.count('rej.test')).toBe(afterFirst.rej);
    expect(proxy.count('nospf.test')).toBe(afterFirst.nospf);
    expect(await total()).toBe(afterFirst.all);

    // a zone whose answers live one second: cached within it, asked again after it
    const brief = async () => signed(message('a@brief.example'), 'brief', 's1', 'brief.example');
    expect(await send(port, 'a@brief.example', await brief())).toMatch(/^250 /);
    const asked = proxy.count('brief.example');
    expect(asked).toBeGreaterThanOrEqual(3); // SPF, key, DMARC
    expect(await send(port, 'a@brief.example', await brief())).toMatch(/^250 /);
    expect(proxy.count('brief.example')).toBe(asked);
    await new Promise((r) => setTimeout(r, 1100));
    expect(await send(port, 'a@brief.example', await brief())).toMatch(/^250 /);
    expect(proxy.count('brief.example')).toBe(2 * asked);
    const last = (await up.waitForMessages(5)).slice(2);
    for (const m of last) expect(arOf(m.data).ar).toMatch(/spf=pass .*dkim=pass .*dmarc=pass/);
  });

  it('a lookup that timed out is not cached: the next message asks again', async () => {
    const { port } = await setup(policy());
    const slow = async () => signed(message('a@rej.test'), 'rej', 'slowsel');
    await send(port, 'a@good.test', await slow());
    const asked = proxy.count('slowsel._domainkey.rej.test');
    expect(asked).toBe(1);
    await send(port, 'a@good.test', await slow());
    expect(proxy.count('slowsel._domainkey.rej.test')).toBe(2);
  });
});

describe('enforce: the sender DMARC policy decides at the end of DATA', () => {
  it('aligned and unaligned under p=none / quarantine / reject; rejected mail never reaches the upstream', async () => {
    const { up, relay, port } = await setup(policy({ mode: 'enforce' }));
    // aligned: signed by the From domain
    for (const d of ['none', 'quar', 'rej'] as const) {
      expect(await send(port, `b@${d}.test`, await signed(message(`a@${d}.test`), d))).toMatch(/^250 /);
    }
    await up.waitForMessages(3);
    for (const m of up.messages) expect(arOf(m.data).ar).toMatch(/dmarc=pass/);
    // unaligned: signed by another domain, MAIL FROM passes SPF for yet another
    const unaligned = async (d: string) =>
      send(port, 'a@good.test', await signed(message(`a@${d}.test`), 'other'));
    expect(await unaligned('none')).toMatch(/^250 /);
    expect(await unaligned('quar')).toMatch(/^250 /);
    const delivered = await up.waitForMessages(5);
    expect(arOf(delivered[3].data).ar).toMatch(/dmarc=fail .*header\.from=none\.test/);
    expect(arOf(delivered[4].data).ar).toMatch(/dmarc=fail \(p=quarantine.*header\.from=quar\.test/i);
    expect(await unaligned('rej')).toBe(
      '550 5.7.1 Message rejected: DMARC policy of rej.test is reject and the message failed it (spf=pass, dkim=pass)',
    );
    // the upstream was never given the final dot
    await new Promise((r) => setTimeout(r, 300));
    expect(up.messages).toHaveLength(5);
    const actions = await metric(relay, 'mailplus_relay_auth_actions_total');
    expect(actions).toContain('action="rejected",reason="dmarc_reject"} 1');
    expect(actions).toContain('action="annotated",reason="dmarc_fail_quarantine"} 1');
    expect(actions).toContain('action="annotated",reason="dmarc_fail_none"} 1');
    expect(actions).toContain('action="annotated",reason="dmarc_pass"} 3');
    expect(await metric(relay, 'mailplus_relay_messages_total')).toContain(
      'result="rejected",reason="auth_dmarc_reject"} 1',
    );
  });

  it('quarantine: reject refuses p=quarantine failures too; a failing SPF-only sender under p=reject is refused', async () => {
    const { up, port } = await setup(policy({ mode: 'enforce', rejectQuarantine: true }));
    expect(await send(port, 'a@good.test', await signed(message('a@quar.test'), 'other'))).toMatch(
      /^550 5\.7\.1 Message rejected: DMARC policy of quar\.test is quarantine/,
    );
    expect(await send(port, 'a@bad.test', message('a@bad.test'))).toMatch(
      /^550 5\.7\.1 Message rejected: DMARC policy of bad\.test is reject .*spf=fail/,
    );
    await new Promise((r) => setTimeout(r, 300));
    expect(up.messages).toHaveLength(0);
  });

  it('a DNS timeout that could explain the failure defers with 451 4.7.5; onLookupFailure Accept delivers', async () => {
    const slow = async () => signed(message('a@rej.test'), 'rej', 'slowsel');
    const deferring = await setup(policy({ mode: 'enforce' }));
    expect(await send(deferring.port, 'a@good.test', await slow())).toBe(
      '451 4.7.5 Sender authentication of rej.test could not be completed (DNS lookup failed), try again later',
    );
    await new Promise((r) => setTimeout(r, 300));
    expect(deferring.up.messages).toHaveLength(0);
    expect(await metric(deferring.relay, 'mailplus_relay_auth_actions_total')).toContain(
      'action="deferred",reason="dns_temperror"} 1',
    );
    expect(await metric(deferring.relay, 'mailplus_relay_auth_results_total')).toContain(
      'check="dkim",result="temperror"} 1',
    );

    const accepting = await setup(policy({ mode: 'enforce', deferOnLookupFailure: false }));
    expect(await send(accepting.port, 'a@good.test', await slow())).toMatch(/^550 5\.7\.1 /);
    expect(await send(accepting.port, 'a@soft.test', message('a@soft.test'))).toMatch(/^250 /);
    const [m] = await accepting.up.waitForMessages(1);
    expect(arOf(m.data).ar).toMatch(/spf=softfail/);
  });

  it('a large message failing p=reject is refused although it streamed past holdBytes', async () => {
    const { up, port } = await setup(policy({ mode: 'enforce', holdBytes: 65_536 }));
    const body = `${'y'.repeat(76)}\r\n`.repeat(1200);
    expect(await send(port, 'a@good.test', await signed(message('a@rej.test', '', body), 'other'))).toMatch(
      /^550 5\.7\.1 Message rejected: DMARC policy of rej\.test/,
    );
    await new Promise((r) => setTimeout(r, 300));
    expect(up.messages).toHaveLength(0);
  });
});
