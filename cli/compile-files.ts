import type { RelayConfig } from '../contract/config/types.gen.ts';
import type { MailRoute, TenantPolicy } from '../operator/api/types.gen.ts';
import { compile } from '../operator/compile/compile.ts';
import { isWarning, type ResourceStatus } from '../operator/conditions/resource-status.ts';
import { loadResourceFiles } from '../operator/resources/load.ts';
import {
  type LoadedResource,
  type ResourceError,
  resourceLabel,
  type Service,
} from '../operator/resources/types.ts';
import { validateResources } from '../operator/resources/validate.ts';
import { CliError } from './errors.ts';

export interface FileProblem extends ResourceError {
  /** 'error' stops a file from being used; 'warning' is a status that is not Ready or flags a conflict. */
  severity: 'error' | 'warning';
}

export interface CompiledFiles {
  config: RelayConfig;
  statuses: ReadonlyMap<string, ResourceStatus>;
  resources: LoadedResource[];
  /** Load and schema errors, then compile findings (resources that are not Ready). */
  problems: FileProblem[];
}

/** Reads -f paths (files, multi-document files, directories), validates and compiles them. */
export async function compileFiles(paths: string[]): Promise<CompiledFiles> {
  if (paths.length === 0) throw new CliError('no input: give -f FILE or -f DIRECTORY (repeatable)');
  const { resources, errors } = await loadResourceFiles(paths);
  const problems: FileProblem[] = [
    ...errors.map((e) => ({ ...e, severity: 'error' as const })),
    ...validateResources(resources).map((e) => ({ ...e, severity: 'error' as const })),
  ];
  const of = <T>(kind: string) => resources.filter((r) => r.kind === kind).map((r) => r.object as T);
  // The clock is an input of the pure compile: troubleshooting consents are valid only until
  // their expiry. Document order stands in for creation time (the same owner as in a cluster
  // where the resources were created in this order).
  const { config, statuses } = compile(
    {
      tenantPolicies: of<TenantPolicy>('TenantPolicy'),
      mailRoutes: of<MailRoute>('MailRoute'),
      services: of<Service>('Service'),
    },
    { now: Date.now(), documentOrder: true },
  );
  const reported = new Set(problems.map((p) => p.resource));
  for (const r of resources) {
    if (r.kind === 'Service') continue;
    const label = resourceLabel(r.kind, r.namespace, r.name);
    const status = statuses.get(`${r.kind}/${r.namespace}/${r.name}`);
    if (!status || reported.has(label)) continue;
    for (const c of status.conditions) {
      if (c.type === 'Ready') continue;
      const bad = c.status !== 'True';
      // Accepted=True with a warning reason is worth showing (e.g. Conflicted).
      if (!bad && !isWarning(c)) continue;
      problems.push({
        file: r.file,
        resource: label,
        field: `status.conditions[${c.type}]`,
        message: `${c.reason}: ${c.message}`,
        severity: bad && c.type === 'Accepted' ? 'error' : 'warning',
      });
    }
  }
  return { config, statuses, resources, problems };
}
