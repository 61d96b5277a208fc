import type { TenantAuthentication } from '../../contract/config/types.gen.ts';

/**
 * What the checks found, in RFC 8601 result words, and what enforce mode does with it. Pure: the
 * checks run in verify.ts.
 */
export interface AuthOutcome {
  spf: string;
  /** One result per DKIM signature; ['none'] without signatures. */
  dkim: string[];
  arc: string;
  /** 'none' without a DMARC record (or without a single author domain). */
  dmarc: string;
  /** The sender's effective policy when DMARC failed (none | quarantine | reject), after t=y. */
  policy?: string;
  /** The author domain DMARC was evaluated for (RFC5322.From). */
  domain?: string;
}

export type AuthDecision =
  | { action: 'accept'; reason: string }
  | { action: 'reject' | 'defer'; reason: string; code: number; enhanced: string; text: string };

const TEMP = 'temperror';

/**
 * enforce: refuse what the sender's DMARC policy says to reject (p=reject, and p=quarantine when
 * the tenant asks), defer when a failed DNS lookup could be why (the DMARC record itself, or an SPF
 * or DKIM check that could have aligned) and the tenant wants that; annotate: never refuses, the
 * reason still tells the dashboard what enforce would have done.
 */
export function decideAuthentication(p: TenantAuthentication, o: AuthOutcome): AuthDecision {
  const enforce = p.mode === 'enforce';
  const lookupFailed = o.spf === TEMP || o.dkim.includes(TEMP) || o.dmarc === TEMP;
  const defer = (): AuthDecision => ({
    action: 'defer',
    reason: 'dns_temperror',
    code: 451,
    enhanced: '4.7.5',
    text: `Sender authentication of ${o.domain ?? 'the sender'} could not be completed (DNS lookup failed), try again later`,
  });
  if (o.dmarc === TEMP) {
    return enforce && p.deferOnLookupFailure ? defer() : { action: 'accept', reason: 'dns_temperror' };
  }
  if (o.dmarc !== 'fail')
    return { action: 'accept', reason: o.dmarc === 'pass' ? 'dmarc_pass' : 'dmarc_none' };
  const policy = o.policy ?? 'none';
  const refuses = policy === 'reject' || (policy === 'quarantine' && p.rejectQuarantine);
  if (!refuses) return { action: 'accept', reason: `dmarc_fail_${policy}` };
  if (!enforce) return { action: 'accept', reason: `dmarc_fail_${policy}` };
  if (lookupFailed && p.deferOnLookupFailure) return defer();
  return {
    action: 'reject',
    reason: `dmarc_${policy}`,
    code: 550,
    enhanced: '5.7.1',
    text: `Message rejected: DMARC policy of ${o.domain} is ${policy} and the message failed it (spf=${o.spf}, dkim=${o.dkim.join(',')})`,
  };
}
