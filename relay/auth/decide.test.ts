import { describe, expect, it } from 'vitest';
import type { TenantAuthentication } from '../../contract/config/types.gen.ts';
import { type AuthOutcome, decideAuthentication } from './decide.ts';

const enforce: TenantAuthentication = {
  mode: 'enforce',
  holdBytes: 65536,
  rejectQuarantine: false,
  deferOnLookupFailure: true,
};
const o = (x: Partial<AuthOutcome>): AuthOutcome => ({
  spf: 'fail',
  dkim: ['none'],
  arc: 'none',
  dmarc: 'fail',
  policy: 'reject',
  domain: 'bank.example',
  ...x,
});

describe('decideAuthentication', () => {
  it('enforce rejects a DMARC failure under p=reject with the reason', () => {
    expect(decideAuthentication(enforce, o({}))).toEqual({
      action: 'reject',
      reason: 'dmarc_reject',
      code: 550,
      enhanced: '5.7.1',
      text: 'Message rejected: DMARC policy of bank.example is reject and the message failed it (spf=fail, dkim=none)',
    });
  });
  it('p=quarantine is delivered unless the tenant rejects it; p=none always', () => {
    expect(decideAuthentication(enforce, o({ policy: 'quarantine' }))).toEqual({
      action: 'accept',
      reason: 'dmarc_fail_quarantine',
    });
    expect(
      decideAuthentication({ ...enforce, rejectQuarantine: true }, o({ policy: 'quarantine' })),
    ).toMatchObject({ action: 'reject', reason: 'dmarc_quarantine' });
    expect(decideAuthentication(enforce, o({ policy: 'none' }))).toEqual({
      action: 'accept',
      reason: 'dmarc_fail_none',
    });
  });
  it('a failed lookup that could explain the failure defers (451 4.7.5), unless the tenant accepts', () => {
    expect(decideAuthentication(enforce, o({ dkim: ['temperror'] }))).toMatchObject({
      action: 'defer',
      code: 451,
      enhanced: '4.7.5',
    });
    expect(decideAuthentication(enforce, o({ dmarc: 'temperror', policy: undefined }))).toMatchObject({
      action: 'defer',
    });
    expect(
      decideAuthentication({ ...enforce, deferOnLookupFailure: false }, o({ spf: 'temperror' })),
    ).toMatchObject({ action: 'reject' });
  });
  it('annotate never refuses; passing mail is accepted', () => {
    expect(decideAuthentication({ ...enforce, mode: 'annotate' }, o({}))).toEqual({
      action: 'accept',
      reason: 'dmarc_fail_reject',
    });
    expect(decideAuthentication(enforce, o({ dmarc: 'pass', policy: undefined }))).toEqual({
      action: 'accept',
      reason: 'dmarc_pass',
    });
  });
});
