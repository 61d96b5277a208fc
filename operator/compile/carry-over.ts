// The last valid version of a resource, read from the relay config published before (what relays
// serve). A resource whose new generation is invalid keeps that version in force, as a Deployment
// keeps serving its old ReplicaSet: the published config is the operator's own output, survives
// operator restarts (it is read back from the ConfigMap) and needs no extra writes. Pure.
import type { RelayConfig, Route, Tenant } from '../../contract/config/types.gen.ts';
import { resourceKey } from '../resources/types.ts';

/**
 * The generation of `kind/namespace/name` that `previous` serves, when it is older than
 * `generation`: the last valid version that stays in force. Undefined when `previous` does not
 * serve the resource, or serves a generation that is not older (then it was another object of
 * the same name: generations only grow, so a deleted and recreated resource never inherits).
 */
export function generationInForce(
  previous: RelayConfig | undefined,
  kind: 'TenantPolicy' | 'MailRoute',
  namespace: string,
  name: string,
  generation: number | undefined,
): number | undefined {
  const served = previous?.sources?.[resourceKey(kind, namespace, name)];
  if (served === undefined || generation === undefined || served >= generation) return undefined;
  return served;
}

/** The previously published tenant compiled from TenantPolicy namespace/name. */
export function previousTenant(
  previous: RelayConfig | undefined,
  namespace: string,
  name: string,
): Tenant | undefined {
  return previous?.tenants.find((t) => t.name === namespace && t.policy === `${namespace}/${name}`);
}

/** The previously published route compiled from MailRoute namespace/name. */
export function previousRoute(
  previous: RelayConfig | undefined,
  namespace: string,
  name: string,
): Route | undefined {
  const routeName = `${namespace}/${name}`;
  return previous?.tenants.find((t) => t.name === namespace)?.routes.find((r) => r.name === routeName);
}

/**
 * A tenant's whole previously published section with the `sources` entries it was compiled from
 * (every key of its namespace), to keep a tenant's last published state in force as one unit.
 */
export function previousTenantSection(
  previous: RelayConfig | undefined,
  namespace: string,
): { tenant: Tenant; sources: Record<string, number> } | undefined {
  const tenant = previous?.tenants.find((t) => t.name === namespace);
  if (!tenant) return undefined;
  const sources: Record<string, number> = {};
  for (const [key, generation] of Object.entries(previous?.sources ?? {})) {
    if (key.split('/')[1] === namespace) sources[key] = generation;
  }
  return { tenant, sources };
}
