import type { TenantAuthentication } from '../../contract/config/types.gen.ts';
import type { TenantPolicy } from '../api/types.gen.ts';

/**
 * spec.authentication (validated, the CRD's defaults applied by ajv: mode, holdBytes, quarantine,
 * onLookupFailure) in the relay's form: absent when the mode is off so that a tenant without
 * checks costs the relay nothing.
 */
export function compileAuthentication(
  a: TenantPolicy['spec']['authentication'] | undefined,
): TenantAuthentication | undefined {
  if (!a || a.mode === undefined || a.mode === 'none') return undefined;
  return {
    mode: a.mode,
    ...(a.authservId ? { authservId: a.authservId.toLowerCase() } : {}),
    holdBytes: a.holdBytes as number,
    rejectQuarantine: a.quarantine === 'reject',
    deferOnLookupFailure: a.onLookupFailure === 'Defer',
  };
}
