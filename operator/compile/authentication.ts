import type { TenantAuthentication } from '../../contract/config/types.gen.ts';
import type { TenantPolicy } from '../api/types.gen.ts';

/** Default of spec.authentication.holdBytes (the CRD's default, for specs written before it existed). */
export const DEFAULT_HOLD_BYTES = 262_144;

/**
 * spec.authentication (validated by the CRD schema) in the relay's form: defaults filled in, absent
 * when the mode is off so that a tenant without checks costs the relay nothing.
 */
export function compileAuthentication(
  a: TenantPolicy['spec']['authentication'] | undefined,
): TenantAuthentication | undefined {
  if (!a || a.mode === undefined || a.mode === 'none') return undefined;
  return {
    mode: a.mode,
    ...(a.authservId ? { authservId: a.authservId.toLowerCase() } : {}),
    holdBytes: a.holdBytes ?? DEFAULT_HOLD_BYTES,
    rejectQuarantine: a.quarantine === 'reject',
    deferOnLookupFailure: (a.onLookupFailure ?? 'Defer') === 'Defer',
  };
}
