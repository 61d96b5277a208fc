// The compile step's privacy and troubleshooting handling (pure: the time is passed in), and the
// supply-chain scripts' pure parts (notices rendering, copyright extraction, license allow-list).
import { describe, expect, it } from 'vitest';
import { validateRelayConfig } from '../../contract/config/load.ts';
import type { MailRoute, TenantPolicy, TenantPolicySpec } from '../../operator/api/types.gen.ts';
import { compile } from '../../operator/compile/compile.ts';
import { generateCaptureKeyPair } from '../../relay/capture/crypto.ts';
import { checkLicenses, licenseAllowed } from '../../scripts/license-check.ts';
import {
  type Component,
  extractCopyright,
  productionPackages,
  renderNotices,
} from '../../scripts/third-party-notices.ts';

const NOW = Date.parse('2025-03-01T12:00:00Z');
const keys = generateCaptureKeyPair();

const tp = (ns: string, extra: Partial<TenantPolicySpec> = {}): TenantPolicy => ({
  apiVersion: 'mailplus.io/v1alpha1',
  kind: 'TenantPolicy',
  metadata: { name: 'policy', namespace: ns, generation: 3, creationTimestamp: '2024-01-01T00:00:00Z' },
  spec: { domains: [`${ns}.example`], ...extra },
});
const mr = (ns: string): MailRoute => ({
  apiVersion: 'mailplus.io/v1alpha1',
  kind: 'MailRoute',
  metadata: { name: 'all', namespace: ns, generation: 1 },
  spec: { match: { recipients: [`*@${ns}.example`] }, forward: { upstreams: [{ host: 'mx.example.net' }] } },
});
const troubleshooting = (over: Record<string, unknown> = {}) =>
  ({
    scope: ['support@acme.example'],
    consentReference: 'TICKET-42',
    approvedBy: 'dpo@acme.example',
    expiresAt: '2025-03-03T12:00:00Z',
    maxMessages: 20,
    publicKey: keys.publicKey,
    ...over,
  }) as TenantPolicySpec['troubleshooting'];
const run = (policies: TenantPolicy[], options: { now?: number } = { now: NOW }) =>
  compile(
    {
      tenantPolicies: policies,
      mailRoutes: policies.map((p) => mr(p.metadata?.namespace as string)),
      services: [],
    },
    options,
  );
const accepted = (r: ReturnType<typeof run>, ns: string) =>
  r.statuses.get(`TenantPolicy/${ns}/policy`)?.conditions.find((c) => c.type === 'Accepted');

describe('compile: spec.privacy', () => {
  it('retention and pseudonymize go into the tenant’s relay config; absent means defaults', () => {
    const r = run([
      tp('acme', { privacy: { retention: '48h', pseudonymize: true } }),
      tp('plain'),
      tp('days', { privacy: { retention: '90d' } }),
    ]);
    expect(validateRelayConfig(r.config)).toEqual([]);
    const t = Object.fromEntries(r.config.tenants.map((x) => [x.name, x]));
    expect(t.acme.privacy).toEqual({ retentionSeconds: 48 * 3600, pseudonymize: true });
    expect(t.plain.privacy).toBeUndefined();
    expect(t.days.privacy).toEqual({ retentionSeconds: 90 * 86400, pseudonymize: false }); // CRD default
  });
  it('a retention outside 1h..3650d is an invalid spec naming the field', () => {
    for (const retention of ['30m', '3651d']) {
      const r = run([tp('acme', { privacy: { retention } })]);
      expect(accepted(r, 'acme')).toMatchObject({ status: 'False', reason: 'InvalidSpec' });
      expect(accepted(r, 'acme')?.message).toMatch(/^spec\.privacy\.retention: /);
    }
  });
});

describe('compile: spec.troubleshooting (consent)', () => {
  it('a valid, current consent becomes the tenant’s capture', () => {
    const r = run([tp('acme', { troubleshooting: troubleshooting() })]);
    expect(accepted(r, 'acme')).toMatchObject({ status: 'True', reason: 'Accepted' });
    const c = r.config.tenants[0].capture;
    expect(c).toMatchObject({
      scope: ['support@acme.example'],
      maxMessages: 20,
      expiresAt: '2025-03-03T12:00:00.000Z',
    });
    expect(validateRelayConfig(r.config)).toEqual([]);
    // pure and deterministic: same input and time, same hash
    expect(run([tp('acme', { troubleshooting: troubleshooting() })]).config.hash).toBe(r.config.hash);
  });
  it.each([
    ['expiresAt', { expiresAt: '2025-03-01T11:00:00Z' }, /expired/],
    ['expiresAt', { expiresAt: '2025-03-09T12:00:00Z' }, /more than 7 days/],
    ['scope[0]', { scope: ['support@other.example'] }, /outside the domains/],
    ['publicKey', { publicKey: keys.privateKey }, /PRIVATE key/],
    ['publicKey', { publicKey: 'not a key' }, /PEM public key/],
  ])(
    'refuses %s (%j): Accepted=False ConsentInvalid, routes still served, nothing captured',
    (field, over, why) => {
      const r = run([tp('acme', { troubleshooting: troubleshooting(over) })]);
      const a = accepted(r, 'acme');
      expect(a).toMatchObject({ status: 'False', reason: 'ConsentInvalid' });
      expect(a?.message).toContain(`spec.troubleshooting.${field}`);
      expect(a?.message).toMatch(why);
      expect(r.config.tenants[0].capture).toBeUndefined();
      expect(r.config.tenants[0].routes.map((x) => x.name)).toEqual(['acme/all']);
      expect(
        r.statuses.get('TenantPolicy/acme/policy')?.conditions.find((c) => c.type === 'Ready')?.status,
      ).toBe('False');
    },
  );
  it('without `now` in the options every consent is refused (the compile step never reads the clock)', () => {
    const r = run([tp('acme', { troubleshooting: troubleshooting() })], {});
    expect(accepted(r, 'acme')).toMatchObject({ status: 'False', reason: 'ConsentInvalid' });
    expect(accepted(r, 'acme')?.message).toMatch(/without the current time/);
  });
  it('a missing required field is refused by the schema, naming the field', () => {
    const t = troubleshooting() as Record<string, unknown>;
    delete t.consentReference;
    const r = run([tp('acme', { troubleshooting: t as TenantPolicySpec['troubleshooting'] })]);
    expect(accepted(r, 'acme')).toMatchObject({ status: 'False', reason: 'InvalidSpec' });
    expect(accepted(r, 'acme')?.message).toContain('spec.troubleshooting.consentReference');
  });
});

describe('third-party notices and license check', () => {
  const lock = {
    packages: {
      '': { name: 'root', version: '1.0.0' },
      'node_modules/a': { version: '1.0.0', license: 'MIT' },
      'node_modules/b': { version: '2.0.0', license: 'GPL-3.0', dev: true },
      'node_modules/c': { version: '3.0.0', license: '(MIT OR GPL-3.0)' },
      'node_modules/a/node_modules/d': { version: '0.1.0', license: 'Apache-2.0 AND GPL-2.0' },
      'node_modules/e': { version: '1.0.0', devOptional: true, license: 'WTFPL' },
      'node_modules/f': { version: '1.0.0' },
    },
  };
  it('takes production packages only, sorted', () => {
    expect(productionPackages(lock).map((p) => `${p.name}@${p.version}:${p.license}`)).toEqual([
      'a@1.0.0:MIT',
      'c@3.0.0:(MIT OR GPL-3.0)',
      'd@0.1.0:Apache-2.0 AND GPL-2.0',
      'f@1.0.0:UNKNOWN',
    ]);
  });
  it('allow-list: OR needs one allowed, AND needs all; unknown fails', () => {
    expect(licenseAllowed('MIT')).toBe(true);
    expect(licenseAllowed('(MIT OR GPL-3.0)')).toBe(true);
    expect(licenseAllowed('Apache-2.0 AND GPL-2.0')).toBe(false);
    expect(licenseAllowed('MIT AND ISC')).toBe(true);
    expect(licenseAllowed('UNKNOWN')).toBe(false);
    expect(licenseAllowed('')).toBe(false);
    for (const l of ['ISC', 'Apache-2.0', 'BSD-2-Clause', 'BSD-3-Clause', '0BSD', 'BlueOak-1.0.0'])
      expect(licenseAllowed(l), l).toBe(true);
    expect(licenseAllowed('GPL-3.0')).toBe(false);
    expect(checkLicenses(lock)).toEqual([
      'd@0.1.0 (node_modules/a/node_modules/d): license "Apache-2.0 AND GPL-2.0" is not on the allow-list',
      'f@1.0.0 (node_modules/f): license "UNKNOWN" is not on the allow-list',
    ]);
  });
  it('extracts the copyright line, not license wording or templates', () => {
    expect(
      extractCopyright('The MIT License\n\nCopyright (c) 2015-2025 Andris Reinman\n\nPermission ...'),
    ).toBe('Copyright (c) 2015-2025 Andris Reinman');
    expect(
      extractCopyright(
        'copyright license to reproduce\n(c) You must retain\nCopyright [yyyy] [name of copyright owner]',
      ),
    ).toBeUndefined();
    expect(extractCopyright('the above copyright notice\n© 2020 X Y')).toBe('© 2020 X Y');
    expect(extractCopyright(' * Copyright Eemeli Aro <eemeli@gmail.com>')).toBe(
      'Copyright Eemeli Aro <eemeli@gmail.com>',
    );
  });
  it('renders name, version, license, copyright and each license text once', () => {
    const c = (name: string, text: string): Component => ({
      name,
      version: '1.0.0',
      license: 'MIT',
      path: `node_modules/${name}`,
      copyright: `Copyright (c) 2020 ${name}`,
      licenseText: text,
    });
    const out = renderNotices('x 1.0', [c('a', 'TEXT-1'), c('b', 'TEXT-1'), c('c', 'TEXT-2')]);
    expect(out).toContain('a@1.0.0\n  License: MIT\n  Copyright (c) 2020 a\n  License text: [1]');
    expect(out).toContain('c@1.0.0\n  License: MIT\n  Copyright (c) 2020 c\n  License text: [2]');
    expect(out.match(/TEXT-1/g)).toHaveLength(1);
    expect(out.endsWith('\n')).toBe(true);
  });
});
