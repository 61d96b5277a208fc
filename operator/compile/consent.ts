// Validation of TenantPolicy.spec.troubleshooting (the tenant's consent to a troubleshooting
// capture) for the compile step. Pure: the current time is a parameter. Anything short of a
// complete, current consent is refused with the field named (reason ConsentInvalid).
import { createHash } from 'node:crypto';
import { parseRecipientKey } from '../../contract/capture/key.ts';
import type { Capture } from '../../contract/config/types.gen.ts';
import { claimCoversPattern, parsePattern } from '../../contract/grammar/match.ts';

export const MAX_CONSENT_MS = 7 * 24 * 3600 * 1000;
export const MAX_CAPTURE_MESSAGES = 1000;

export interface TroubleshootingSpec {
  scope?: unknown;
  consentReference?: unknown;
  approvedBy?: unknown;
  expiresAt?: unknown;
  maxMessages?: unknown;
  publicKey?: unknown;
}

export interface ConsentError {
  field: string;
  message: string;
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$/;

/** Parses an RFC 3339 timestamp (with a zone) to epoch ms, or NaN. */
export function parseRfc3339(value: string): number {
  if (!RFC3339.test(value)) return Number.NaN;
  return Date.parse(value.toUpperCase());
}

export function consentId(tenant: string, c: Omit<Capture, 'id'>): string {
  return createHash('sha256')
    .update(JSON.stringify([tenant, c.consentReference, c.expiresAt, c.scope, c.publicKey]))
    .digest('hex');
}

/**
 * Checks a consent against the tenant's owned domain claims at `nowMs`. Returns the relay-config
 * capture (normalised: scope patterns, expiresAt in UTC, the public key re-encoded) or the errors.
 * Without `nowMs` (a caller that did not pass the clock) the consent cannot be checked: refused.
 */
export function checkConsent(
  tenant: string,
  spec: TroubleshootingSpec,
  ownedClaims: string[],
  nowMs: number | undefined,
): { ok: true; capture: Capture } | { ok: false; errors: ConsentError[] } {
  const f = (name: string) => `spec.troubleshooting.${name}`;
  const errors: ConsentError[] = [];
  const str = (v: unknown) => (typeof v === 'string' ? v.trim() : '');

  const scope: string[] = [];
  if (!Array.isArray(spec.scope) || spec.scope.length === 0) {
    errors.push({
      field: f('scope'),
      message: "required: at least one recipient pattern within the tenant's domains",
    });
  } else {
    spec.scope.forEach((s, i) => {
      const r = typeof s === 'string' ? parsePattern(s) : { ok: false as const, error: 'must be a string' };
      if (!r.ok) {
        errors.push({ field: `${f('scope')}[${i}]`, message: r.error });
        return;
      }
      if (!ownedClaims.some((c) => claimCoversPattern(c, r.value))) {
        errors.push({
          field: `${f('scope')}[${i}]`,
          message: `${r.value.text} is outside the domains this tenant holds (${ownedClaims.join(', ') || 'none'})`,
        });
        return;
      }
      if (!scope.includes(r.value.text)) scope.push(r.value.text);
    });
  }
  const consentReference = str(spec.consentReference);
  if (consentReference === '')
    errors.push({
      field: f('consentReference'),
      message: "required: the reference of the tenant's written consent",
    });
  const approvedBy = str(spec.approvedBy);
  if (approvedBy === '')
    errors.push({ field: f('approvedBy'), message: 'required: who approved the capture' });

  let expiresAt = '';
  const exp = typeof spec.expiresAt === 'string' ? parseRfc3339(spec.expiresAt) : Number.NaN;
  if (spec.expiresAt === undefined || spec.expiresAt === '') {
    errors.push({ field: f('expiresAt'), message: 'required: an RFC 3339 time at most 7 days ahead' });
  } else if (!Number.isFinite(exp)) {
    errors.push({
      field: f('expiresAt'),
      message: `"${String(spec.expiresAt)}" is not an RFC 3339 time (2025-01-31T18:00:00Z)`,
    });
  } else if (nowMs === undefined) {
    errors.push({
      field: f('expiresAt'),
      message: 'cannot be checked: the compile step was run without the current time',
    });
  } else if (exp <= nowMs) {
    errors.push({
      field: f('expiresAt'),
      message: `the consent expired at ${new Date(exp).toISOString()}; remove spec.troubleshooting or renew the consent`,
    });
  } else if (exp - nowMs > MAX_CONSENT_MS) {
    errors.push({
      field: f('expiresAt'),
      message: `${new Date(exp).toISOString()} is more than 7 days ahead; a capture may run for at most 7 days`,
    });
  } else {
    expiresAt = new Date(exp).toISOString();
  }

  const max = spec.maxMessages;
  if (typeof max !== 'number' || !Number.isInteger(max) || max < 1 || max > MAX_CAPTURE_MESSAGES)
    errors.push({
      field: f('maxMessages'),
      message: `required: a whole number from 1 to ${MAX_CAPTURE_MESSAGES}`,
    });

  let publicKey = '';
  if (typeof spec.publicKey !== 'string' || spec.publicKey.trim() === '') {
    errors.push({
      field: f('publicKey'),
      message: "required: the tenant's public key, PEM (mailplus capture keygen)",
    });
  } else {
    const k = parseRecipientKey(spec.publicKey);
    if (!k.ok) errors.push({ field: f('publicKey'), message: k.error });
    else publicKey = k.key.export({ type: 'spki', format: 'pem' }).toString();
  }

  if (errors.length > 0) return { ok: false, errors };
  const body = { scope, consentReference, approvedBy, expiresAt, maxMessages: max as number, publicKey };
  return { ok: true, capture: { id: consentId(tenant, body), ...body } };
}
