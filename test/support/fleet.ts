// Synthetic tenants and routes for compile/publish tests and benchmarks: `tenants` TenantPolicies
// (tenant-<t> owning t<t>.example.com and its subdomains) and `routes` MailRoutes spread over them
// round-robin, each with `patterns` recipient patterns. Their specs are as the API server serves
// them, with the CRD defaults filled in: the operator's compile keeps a defaulted copy of a spec
// that lacks one, which a benchmark's memory would then count though a cluster never has it.
import { createHash } from 'node:crypto';
import type { MailRoute, TenantPolicy } from '../../operator/api/types.gen.ts';

export interface Fleet {
  tenantPolicies: TenantPolicy[];
  mailRoutes: MailRoute[];
}

export function fleet(routes: number, tenants: number, patterns = 2): Fleet {
  const tenantPolicies: TenantPolicy[] = [];
  const mailRoutes: MailRoute[] = [];
  for (let t = 0; t < tenants; t++)
    tenantPolicies.push(tenantPolicy(`tenant-${t}`, [`t${t}.example.com`, `*.t${t}.example.com`]));
  for (let r = 0; r < routes; r++) {
    const t = r % tenants;
    mailRoutes.push(mailRoute(`tenant-${t}`, `route-${r}`, routePatterns(r, `t${t}.example.com`, patterns)));
  }
  return { tenantPolicies, mailRoutes };
}

export function tenantPolicy(namespace: string, domains: string[], generation = 1): TenantPolicy {
  return {
    apiVersion: 'mailplus.io/v1alpha1',
    kind: 'TenantPolicy',
    metadata: { name: 'policy', namespace, generation, creationTimestamp: '2026-01-01T00:00:00Z' },
    spec: { domains, requireTLS: false },
  };
}

/** `n` distinct recipient patterns of route `r` under `domain`: user<r>@domain, then *@r<r>-<i>.domain. */
export function routePatterns(r: number, domain: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => (i === 0 ? `user${r}@${domain}` : `*@r${r}-${i}.${domain}`));
}

/**
 * Like routePatterns, but addresses that do not compress (a hostile tenant's flood: 300 routes of
 * 100 take well over 1 MiB gzipped): user<r>@domain, then <40 hex>@<24 hex>.domain.
 */
export function incompressiblePatterns(r: number, domain: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => {
    if (i === 0) return `user${r}@${domain}`;
    const h = createHash('sha256').update(`${r}/${i}`).digest('hex');
    return `${h.slice(0, 40)}@${h.slice(40)}.${domain}`;
  });
}

export function mailRoute(namespace: string, name: string, recipients: string[], generation = 1): MailRoute {
  const host = `mx.${namespace}.example.net`;
  return {
    apiVersion: 'mailplus.io/v1alpha1',
    kind: 'MailRoute',
    metadata: { name, namespace, generation, creationTimestamp: '2026-01-01T00:00:00Z' },
    spec: {
      priority: 100,
      match: { recipients },
      forward: { upstreams: [{ host, port: 25, tls: 'opportunistic', insecureSkipVerify: false }] },
    },
  };
}
