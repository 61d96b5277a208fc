// Unit tests of the pure privacy core: retention math, pseudonym derivation, trace entries and
// log-line addresses, capture scope and consent validation, dot un-stuffing, capture crypto, and
// the capture start/end transitions for the operator.
import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parseRecipientKey } from '../../contract/capture/key.ts';
import type { Capture, RelayConfig, Tenant } from '../../contract/config/types.gen.ts';
import { DEFAULT_RETENTION_SECONDS, parseRetention } from '../../contract/grammar/retention.ts';
import { captureTransitions } from '../../operator/compile/capture-transitions.ts';
import { checkConsent, consentId, MAX_CONSENT_MS, parseRfc3339 } from '../../operator/compile/consent.ts';
import {
  CaptureDecryptor,
  CaptureEncryptor,
  decryptCapture,
  encryptCapture,
  generateCaptureKeyPair,
} from '../../relay/capture/crypto.ts';
import { captureVerdict, consentActive, inScope } from '../../relay/capture/scope.ts';
import { DotUnstuffer } from '../../relay/capture/unstuff.ts';
import { createPseudonymizer } from '../../relay/observability/pseudonymize.ts';
import { entryAddresses, normalizeAddress } from '../../relay/trace/entry.ts';
import {
  addressForms,
  isPseudonym,
  redactAddress,
  tenantPseudonym,
  tenantPseudonymKey,
} from '../../relay/trace/pseudonym.ts';
import {
  type AddressPolicy,
  type FinishedTransaction,
  logAddresses,
  logText,
  traceEntries,
} from '../../relay/trace/record.ts';
import { clampRetention, expiryMs, purgePlan, retentionSecondsOf } from '../../relay/trace/retention.ts';

const KEY = 'master-key-0123456789abcdef';
const NOW = Date.parse('2025-03-01T12:00:00Z');
const H = 3600_000;

function tenant(name: string, extra: Partial<Tenant> = {}): Tenant {
  return {
    name,
    domains: [`${name}.example`],
    clientCIDRs: [],
    requireTLS: false,
    limits: {},
    routes: [],
    ...extra,
  };
}
function config(tenants: Tenant[]): RelayConfig {
  return { apiVersion: 'relay.mailplus.io/v1alpha1', kind: 'RelayConfig', hash: 'sha256:x', tenants };
}

describe('retention', () => {
  it('parses durations with d/h/m/s and enforces 1h..3650d', () => {
    expect(parseRetention('720h')).toEqual({ ok: true, seconds: 720 * 3600 });
    expect(parseRetention('30d')).toEqual({ ok: true, seconds: 30 * 86400 });
    expect(parseRetention('1h')).toEqual({ ok: true, seconds: 3600 });
    expect(parseRetention('3650d')).toEqual({ ok: true, seconds: 3650 * 86400 });
    expect(parseRetention('87600h')).toEqual({ ok: true, seconds: 3650 * 86400 });
    expect(parseRetention('1d2h30m')).toEqual({ ok: true, seconds: 86400 + 2 * 3600 + 1800 });
    for (const bad of ['59m', '3651d', '87601h', '0h', '', '1w', '-1h', '1.5h', 'h'])
      expect(parseRetention(bad).ok, bad).toBe(false);
  });
  it('defaults to 30 days and clamps', () => {
    expect(DEFAULT_RETENTION_SECONDS).toBe(720 * 3600);
    expect(retentionSecondsOf(undefined, 'x')).toBe(720 * 3600);
    expect(retentionSecondsOf(config([tenant('a', { privacy: { retentionSeconds: 7200 } })]), 'a')).toBe(
      7200,
    );
    expect(retentionSecondsOf(config([tenant('a', { privacy: { pseudonymize: true } })]), 'a')).toBe(
      720 * 3600,
    );
    expect(clampRetention(1)).toBe(3600);
    expect(clampRetention(1e12)).toBe(3650 * 86400);
    expect(clampRetention(Number.NaN)).toBe(DEFAULT_RETENTION_SECONDS);
    expect(expiryMs(NOW, 3600)).toBe(NOW + H);
  });
  it('purge plan: expired entries plus each current tenant’s cutoff', () => {
    const c = config([tenant('b', { privacy: { retentionSeconds: 7200 } }), tenant('a')]);
    expect(purgePlan(c, NOW)).toEqual({
      expiredBeforeMs: NOW,
      tenantCutoffs: [
        { tenant: 'a', beforeMs: NOW - 720 * H },
        { tenant: 'b', beforeMs: NOW - 2 * H },
      ],
    });
    expect(purgePlan(undefined, NOW).tenantCutoffs).toEqual([]);
  });
});

describe('pseudonyms', () => {
  it('derives one key per tenant: pseudonyms do not link across tenants', () => {
    const a = tenantPseudonym(KEY, 'a', 'Alice@Example.COM');
    const b = tenantPseudonym(KEY, 'b', 'alice@example.com');
    expect(a).toMatch(/^h:[0-9a-f]{16}@example\.com$/);
    expect(a).not.toBe(b);
    expect(tenantPseudonym(KEY, 'a', 'alice@example.com')).toBe(a); // case-insensitive, stable
    expect(tenantPseudonym(`${KEY}x`, 'a', 'alice@example.com')).not.toBe(a);
    // the tenant key is not the master key: not the relay-wide log pseudonym either
    expect(a).not.toBe(createPseudonymizer(KEY)('alice@example.com'));
    expect(createPseudonymizer(tenantPseudonymKey(KEY, 'a'))('alice@example.com')).toBe(a);
    expect(tenantPseudonym(KEY, 'a', '')).toBe('<>');
    expect(isPseudonym(a)).toBe(true);
    expect(isPseudonym('alice@example.com')).toBe(false);
    expect(redactAddress('Bob@Example.com')).toBe('redacted@example.com');
  });
  it('address forms: the plain address, plus each tenant pseudonym with the key', () => {
    expect(addressForms(' Alice@example.com ', ['b', 'a', 'a'], undefined)).toEqual([
      { tenant: null, address: 'alice@example.com' },
    ]);
    expect(addressForms('alice@example.com', ['b', 'a'], KEY)).toEqual([
      { tenant: null, address: 'alice@example.com' },
      { tenant: 'a', address: tenantPseudonym(KEY, 'a', 'alice@example.com') },
      { tenant: 'b', address: tenantPseudonym(KEY, 'b', 'alice@example.com') },
    ]);
  });
  it('address forms: both spellings of an internationalised domain, each with its pseudonyms', () => {
    const a = 'kunde@xn--bcher-kva.example';
    const u = 'kunde@bücher.example';
    expect(addressForms('Kunde@BÜCHER.example', [], undefined)).toEqual([
      { tenant: null, address: u },
      { tenant: null, address: a },
    ]);
    expect(addressForms(a, ['p'], KEY)).toEqual([
      { tenant: null, address: a },
      { tenant: null, address: u },
      { tenant: 'p', address: tenantPseudonym(KEY, 'p', a) },
      { tenant: 'p', address: tenantPseudonym(KEY, 'p', u) },
    ]);
    // not a domain: searched as given
    expect(addressForms('x@bad_domain..example', [], undefined)).toEqual([
      { tenant: null, address: 'x@bad_domain..example' },
    ]);
  });
  it('entry addresses are lower-cased, the null sender is not an address', () => {
    expect(normalizeAddress('<A@B.c>')).toBe('a@b.c');
    expect(normalizeAddress('<>')).toBe('');
    const e = {
      sender: '<>',
      recipients: [
        { address: 'X@a.example', result: 'accepted' as const, code: 250 },
        { address: 'x@a.example', result: 'accepted' as const, code: 250 },
      ],
    };
    expect(entryAddresses(e as never)).toEqual([{ address: 'x@a.example', role: 'recipient' }]);
  });
});

const TX: FinishedTransaction = {
  timeMs: NOW,
  txid: 'abc',
  clientIp: '192.0.2.1',
  tls: true,
  sender: 'Sender@outside.example',
  recipients: [
    { address: 'x@a.example', result: 'accepted', code: 250, tenant: 'a', route: 'a/all' },
    { address: 'y@p.example', result: 'accepted', code: 250, tenant: 'p', route: 'p/all' },
    { address: 'z@p.example', result: 'rejected', code: 550, reason: 'no_route', tenant: 'p', route: '' },
    {
      address: 'q@nobody.example',
      result: 'rejected',
      code: 550,
      reason: 'relay_denied',
      tenant: '',
      route: '',
    },
  ],
  size: 123,
  upstream: '127.0.0.1:25',
  result: 'relayed',
  code: 250,
  durationMs: 7,
};

function policy(masterKey: string | undefined): AddressPolicy {
  return {
    masterKey,
    relayWide: (a) => a,
    tenants: new Map([
      ['a', tenant('a')],
      ['p', tenant('p', { privacy: { pseudonymize: true } })],
    ]),
  };
}

describe('trace entries', () => {
  it('one entry per tenant with only its recipients; pseudonymising tenants get pseudonyms', () => {
    const entries = traceEntries(TX, policy(KEY));
    expect(entries.map((e) => e.tenant)).toEqual(['a', 'p', '']);
    const [a, p, none] = entries;
    expect(a).toEqual({
      time: '2025-03-01T12:00:00.000Z',
      txid: 'abc',
      tenant: 'a',
      route: 'a/all',
      clientIp: '192.0.2.1',
      tls: true,
      sender: 'Sender@outside.example',
      recipients: [{ address: 'x@a.example', result: 'accepted', code: 250 }],
      size: 123,
      upstream: '127.0.0.1:25',
      result: 'relayed',
      code: 250,
      durationMs: 7,
    });
    expect(p.sender).toBe(tenantPseudonym(KEY, 'p', 'sender@outside.example'));
    expect(p.recipients).toEqual([
      { address: tenantPseudonym(KEY, 'p', 'y@p.example'), result: 'accepted', code: 250 },
      {
        address: tenantPseudonym(KEY, 'p', 'z@p.example'),
        result: 'rejected',
        code: 550,
        reason: 'no_route',
      },
    ]);
    expect(p.route).toBe('p/all');
    expect(JSON.stringify(p)).not.toMatch(/sender@|y@p|z@p/);
    expect(none.recipients).toEqual([
      { address: 'q@nobody.example', result: 'rejected', code: 550, reason: 'relay_denied' },
    ]);
  });
  it('a rewritten recipient (route forward.rewrite) is kept beside the original, in the same form', () => {
    const rewritten: FinishedTransaction = {
      ...TX,
      recipients: [
        { ...TX.recipients[0], rewrittenTo: 'x@mail.internal.example' },
        { ...TX.recipients[1], rewrittenTo: 'y@mail.internal.example' },
      ],
    };
    const [a, p] = traceEntries(rewritten, policy(KEY));
    expect(a.recipients).toEqual([
      { address: 'x@a.example', result: 'accepted', code: 250, rewrittenTo: 'x@mail.internal.example' },
    ]);
    expect(p.recipients).toEqual([
      {
        address: tenantPseudonym(KEY, 'p', 'y@p.example'),
        result: 'accepted',
        code: 250,
        rewrittenTo: tenantPseudonym(KEY, 'p', 'y@mail.internal.example'),
      },
    ]);
    // found (and erased) by either address
    expect(entryAddresses(a).map((x) => x.address)).toEqual([
      'sender@outside.example',
      'x@a.example',
      'x@mail.internal.example',
    ]);
  });
  it('without a master key a pseudonymising tenant’s addresses are redacted (fail closed)', () => {
    const p = traceEntries(TX, policy(undefined))[1];
    expect(p.sender).toBe('redacted@outside.example');
    expect(p.recipients.map((r) => r.address)).toEqual(['redacted@p.example', 'redacted@p.example']);
  });
  it('a transaction without recipients still leaves one entry; the null sender is <>', () => {
    const e = traceEntries({ ...TX, sender: '', recipients: [] }, policy(KEY));
    expect(e).toHaveLength(1);
    expect(e[0]).toMatchObject({ tenant: '', sender: '<>', recipients: [] });
  });
  it('log line: per-tenant pseudonyms for that tenant’s recipients and the sender', () => {
    const l = logAddresses(TX.sender, TX.recipients, policy(KEY));
    expect(l.sender).toBe(tenantPseudonym(KEY, 'p', TX.sender));
    expect(l.recipients).toEqual([
      'x@a.example',
      tenantPseudonym(KEY, 'p', 'y@p.example'),
      tenantPseudonym(KEY, 'p', 'z@p.example'),
      'q@nobody.example',
    ]);
    const plain = logAddresses(TX.sender, [TX.recipients[0]], policy(KEY));
    expect(plain).toEqual({ sender: TX.sender, recipients: ['x@a.example'] });
  });
  it('log text (an upstream reply): every address in the pseudonymising tenant’s form', () => {
    const reply = '550 5.1.1 <Y@p.example>: Recipient address rejected (from sender@outside.example, id=a@b)';
    expect(logText(reply, ['a', 'p'], policy(KEY))).toBe(
      `550 5.1.1 <${tenantPseudonym(KEY, 'p', 'Y@p.example')}>: Recipient address rejected (from ${tenantPseudonym(KEY, 'p', 'sender@outside.example')}, id=a@b)`,
    );
    expect(logText(reply, ['p'], policy(undefined))).toContain('<redacted@p.example>');
    expect(logText(reply, ['a'], policy(KEY))).toBe(reply);
  });
});

const keys = generateCaptureKeyPair('x25519');
function capture(extra: Partial<Capture> = {}): Capture {
  return {
    id: 'f'.repeat(64),
    scope: ['support@a.example', '*@help.a.example'],
    consentReference: 'TICKET-1',
    approvedBy: 'dpo@a.example',
    expiresAt: new Date(NOW + H).toISOString(),
    maxMessages: 5,
    publicKey: keys.publicKey,
    ...extra,
  };
}

describe('capture scope', () => {
  const tenants = new Map([
    ['a', tenant('a', { capture: capture() })],
    ['b', tenant('b')],
  ]);
  it('captures only when every accepted recipient is in the consenting tenant’s scope, before expiry', () => {
    const ok = captureVerdict(tenants, [{ address: 'Support+x@A.example', tenant: 'a' }], NOW);
    expect(ok).toMatchObject({ capture: true, tenant: 'a' });
    expect(captureVerdict(tenants, [{ address: 'x@help.a.example', tenant: 'a' }], NOW).capture).toBe(true);
    expect(captureVerdict(tenants, [{ address: 'other@a.example', tenant: 'a' }], NOW)).toEqual({
      capture: false,
      reason: 'out_of_scope',
    });
    expect(
      captureVerdict(
        tenants,
        [
          { address: 'support@a.example', tenant: 'a' },
          { address: 'other@a.example', tenant: 'a' },
        ],
        NOW,
      ),
    ).toEqual({ capture: false, reason: 'out_of_scope' });
    expect(
      captureVerdict(
        tenants,
        [
          { address: 'support@a.example', tenant: 'a' },
          { address: 'x@b.example', tenant: 'b' },
        ],
        NOW,
      ),
    ).toEqual({ capture: false, reason: 'out_of_scope' });
    expect(captureVerdict(tenants, [{ address: 'x@b.example', tenant: 'b' }], NOW)).toEqual({
      capture: false,
      reason: 'no_consent',
    });
    expect(captureVerdict(tenants, [], NOW)).toEqual({ capture: false, reason: 'no_recipients' });
  });
  it('stops at the instant of expiry', () => {
    const c = capture();
    expect(consentActive(c, NOW + H - 1)).toBe(true);
    expect(consentActive(c, NOW + H)).toBe(false);
    expect(consentActive(capture({ expiresAt: 'garbage' }), NOW)).toBe(false);
    expect(captureVerdict(tenants, [{ address: 'support@a.example', tenant: 'a' }], NOW + H)).toEqual({
      capture: false,
      reason: 'expired',
    });
  });
  it('scope patterns use the route grammar', () => {
    expect(inScope(['support@a.example'], 'support+tag@a.example')).toBe(true);
    expect(inScope(['support+t@a.example'], 'support@a.example')).toBe(false);
    expect(inScope(['*@*.a.example'], 'x@a.example')).toBe(false);
    expect(inScope(['*@*.a.example'], 'x@deep.sub.a.example')).toBe(true);
  });
});

describe('consent validation (compile step)', () => {
  const spec = () => ({
    scope: ['Support@A.example'],
    consentReference: 'TICKET-1',
    approvedBy: 'dpo@a.example',
    expiresAt: '2025-03-02T12:00:00Z',
    maxMessages: 10,
    publicKey: keys.publicKey,
  });
  const fields = (r: ReturnType<typeof checkConsent>) => (r.ok ? [] : r.errors.map((e) => e.field));
  it('accepts a complete, current consent and normalises it', () => {
    const r = checkConsent('a', spec(), ['a.example'], NOW);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.capture).toMatchObject({
      scope: ['support@a.example'],
      expiresAt: '2025-03-02T12:00:00.000Z',
      maxMessages: 10,
      consentReference: 'TICKET-1',
      approvedBy: 'dpo@a.example',
    });
    expect(r.capture.id).toMatch(/^[0-9a-f]{64}$/);
    const { id, ...body } = r.capture;
    expect(id).toBe(consentId('a', body));
    expect(consentId('b', body)).not.toBe(id);
  });
  it('refuses each missing or invalid field, naming it', () => {
    const s = spec() as Record<string, unknown>;
    for (const k of Object.keys(s)) {
      const x = { ...s };
      delete x[k];
      expect(fields(checkConsent('a', x, ['a.example'], NOW)), k).toEqual([`spec.troubleshooting.${k}`]);
    }
    expect(fields(checkConsent('a', { ...s, maxMessages: 0 }, ['a.example'], NOW))).toEqual([
      'spec.troubleshooting.maxMessages',
    ]);
    expect(fields(checkConsent('a', { ...s, maxMessages: 1001 }, ['a.example'], NOW))).toEqual([
      'spec.troubleshooting.maxMessages',
    ]);
    expect(fields(checkConsent('a', { ...s, maxMessages: 1.5 }, ['a.example'], NOW))).toEqual([
      'spec.troubleshooting.maxMessages',
    ]);
    expect(fields(checkConsent('a', { ...s, approvedBy: '  ' }, ['a.example'], NOW))).toEqual([
      'spec.troubleshooting.approvedBy',
    ]);
    expect(fields(checkConsent('a', { ...s, scope: [] }, ['a.example'], NOW))).toEqual([
      'spec.troubleshooting.scope',
    ]);
  });
  it('expiresAt: RFC 3339, in the future, at most 7 days ahead; no clock, no consent', () => {
    const at = (expiresAt: string) => checkConsent('a', { ...spec(), expiresAt }, ['a.example'], NOW);
    expect(at(new Date(NOW + MAX_CONSENT_MS).toISOString()).ok).toBe(true);
    expect(fields(at(new Date(NOW + MAX_CONSENT_MS + 1000).toISOString()))).toEqual([
      'spec.troubleshooting.expiresAt',
    ]);
    expect(fields(at(new Date(NOW).toISOString()))).toEqual(['spec.troubleshooting.expiresAt']);
    expect(fields(at('2025-03-01T11:00:00Z'))).toEqual(['spec.troubleshooting.expiresAt']);
    expect(fields(at('2025-03-02'))).toEqual(['spec.troubleshooting.expiresAt']);
    expect(fields(at('tomorrow'))).toEqual(['spec.troubleshooting.expiresAt']);
    expect(at('2025-03-02T14:00:00+02:00').ok).toBe(true);
    expect(fields(checkConsent('a', spec(), ['a.example'], undefined))).toEqual([
      'spec.troubleshooting.expiresAt',
    ]);
    expect(parseRfc3339('2025-03-02t12:00:00.5z')).toBe(Date.parse('2025-03-02T12:00:00.500Z'));
  });
  it('scope must stay within the tenant’s domains', () => {
    const r = checkConsent(
      'a',
      { ...spec(), scope: ['x@a.example', 'y@b.example', '*@*.a.example', 'bad'] },
      ['a.example'],
      NOW,
    );
    expect(fields(r)).toEqual([
      'spec.troubleshooting.scope[1]',
      'spec.troubleshooting.scope[2]',
      'spec.troubleshooting.scope[3]',
    ]);
    expect(checkConsent('a', { ...spec(), scope: ['*@*.a.example'] }, ['*.a.example'], NOW).ok).toBe(true);
  });
  it('publicKey: a PEM public key, X25519 or RSA ≥ 2048; never a private key', () => {
    const withKey = (publicKey: string) => checkConsent('a', { ...spec(), publicKey }, ['a.example'], NOW);
    expect(withKey(keys.privateKey).ok).toBe(false);
    if (!withKey(keys.privateKey).ok) expect(JSON.stringify(withKey(keys.privateKey))).toMatch(/PRIVATE key/);
    expect(withKey('hello').ok).toBe(false);
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    expect(withKey(rsa.publicKey.export({ type: 'spki', format: 'pem' }).toString()).ok).toBe(true);
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 });
    expect(withKey(small.publicKey.export({ type: 'spki', format: 'pem' }).toString()).ok).toBe(false);
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(withKey(ec.publicKey.export({ type: 'spki', format: 'pem' }).toString()).ok).toBe(false);
    expect(parseRecipientKey(keys.publicKey).ok).toBe(true);
  });
});

describe('dot un-stuffing', () => {
  const raw = Buffer.from('..leading\r\nmid.dot\r\n..\r\n...three\r\nend\r\n');
  const want = '.leading\r\nmid.dot\r\n.\r\n..three\r\nend\r\n';
  it('removes the stuffing dot of every line, at any chunking', () => {
    for (let size = 1; size <= raw.length; size++) {
      const u = new DotUnstuffer();
      const out: Buffer[] = [];
      for (let i = 0; i < raw.length; i += size) out.push(u.push(raw.subarray(i, i + size)));
      expect(Buffer.concat(out).toString(), `chunk ${size}`).toBe(want);
    }
  });
  it('leaves content without dots untouched', () => {
    const u = new DotUnstuffer();
    const b = Buffer.from('a\r\nb.c\r\n');
    expect(u.push(b)).toBe(b);
  });
});

describe('capture crypto', () => {
  const meta = { tenant: 'a', txid: 't1', createdAt: new Date(NOW).toISOString() };
  it('round-trips byte-identical (X25519 and RSA), across chunk boundaries', () => {
    const rsa = generateCaptureKeyPair('rsa');
    for (const pair of [keys, rsa]) {
      for (const len of [0, 1, 15, 16, 17, 64, 1000]) {
        const plain = Buffer.from(Array.from({ length: len }, (_, i) => (i * 7) & 0xff));
        const enc = encryptCapture(pair.publicKey, plain, meta, 16);
        expect(decryptCapture(pair.privateKey, enc).equals(plain), `len ${len}`).toBe(true);
        expect(enc.includes(plain.subarray(0, 8)) && len >= 8).toBe(false);
      }
    }
  });
  it('streams: flat memory in pieces of any size', () => {
    const plain = Buffer.alloc(300_000, 'x');
    const e = new CaptureEncryptor(keys.publicKey, meta, 4096);
    const parts: Buffer[] = [];
    for (let i = 0; i < plain.length; i += 777) parts.push(...e.push(plain.subarray(i, i + 777)));
    parts.push(...e.final());
    const ct = Buffer.concat(parts);
    const d = new CaptureDecryptor(keys.privateKey);
    const out: Buffer[] = [];
    for (let i = 0; i < ct.length; i += 1000) out.push(...d.push(ct.subarray(i, i + 1000)));
    d.end();
    expect(Buffer.concat(out).equals(plain)).toBe(true);
    expect(d.metadata).toMatchObject({ tenant: 'a', txid: 't1', v: 1 });
  });
  it('detects tampering, truncation, reordering and the wrong key', () => {
    const plain = Buffer.alloc(100, 'y');
    const ct = encryptCapture(keys.publicKey, plain, meta, 16);
    const flipped = Buffer.from(ct);
    flipped[flipped.length - 20] ^= 1;
    expect(() => decryptCapture(keys.privateKey, flipped)).toThrow(/authentication/);
    // drop the last chunk (4 + 4 + 16 bytes: 100 = 6*16 + 4)
    expect(() => decryptCapture(keys.privateKey, ct.subarray(0, ct.length - 24))).toThrow(/truncated/);
    const other = generateCaptureKeyPair();
    expect(() => decryptCapture(other.privateKey, ct)).toThrow(/another key/);
    // header tampering changes the AAD
    const hdr = Buffer.from(ct);
    const i = hdr.indexOf('"txid":"t1"');
    hdr.write('"txid":"t2"', i);
    expect(() => decryptCapture(keys.privateKey, hdr)).toThrow(/authentication/);
    expect(() => decryptCapture(keys.privateKey, Buffer.from('not a capture at all'))).toThrow(/magic/);
  });
});

describe('capture transitions (operator Events)', () => {
  const c1 = capture({ id: '1'.repeat(64) });
  const c2 = capture({ id: '2'.repeat(64) });
  const with_ = (c?: Capture) => config([tenant('a', c ? { capture: c } : {}), tenant('b')]);
  it('started / removed / replaced / expired / exhausted', () => {
    expect(captureTransitions(with_(), with_(c1), NOW).map((t) => [t.tenant, t.kind, t.reason])).toEqual([
      ['a', 'started', 'consented'],
    ]);
    expect(captureTransitions(with_(c1), with_(), NOW).map((t) => [t.kind, t.reason])).toEqual([
      ['ended', 'removed'],
    ]);
    expect(captureTransitions(with_(c1), with_(c2), NOW).map((t) => [t.kind, t.reason])).toEqual([
      ['ended', 'replaced'],
      ['started', 'consented'],
    ]);
    expect(captureTransitions(with_(c1), with_(c1), NOW).map((t) => t.kind)).toEqual([]);
    expect(
      captureTransitions(with_(c1), with_(c1), NOW + H, { prevNow: NOW }).map((t) => [t.kind, t.reason]),
    ).toEqual([['ended', 'expired']]);
    // reported once
    expect(captureTransitions(with_(c1), with_(c1), NOW + 2 * H, { prevNow: NOW + H })).toEqual([]);
    expect(captureTransitions(with_(c1), with_(), NOW + 2 * H, { prevNow: NOW + H })).toEqual([]);
    // an already expired consent never "starts"
    expect(captureTransitions(with_(), with_(c1), NOW + H)).toEqual([]);
    const used = new Map([[c1.id, 5]]);
    expect(
      captureTransitions(with_(c1), with_(c1), NOW, { used, prevUsed: new Map([[c1.id, 4]]) }).map(
        (t) => t.reason,
      ),
    ).toEqual(['exhausted']);
    expect(captureTransitions(with_(c1), with_(c1), NOW, { used, prevUsed: used })).toEqual([]);
    const t = captureTransitions(undefined, with_(c1), NOW)[0];
    expect(t).toMatchObject({
      consentReference: 'TICKET-1',
      approvedBy: 'dpo@a.example',
      maxMessages: 5,
      consentId: c1.id,
    });
  });
});
