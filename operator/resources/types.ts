import type { MailRoute, ObjectMeta, TenantPolicy } from '../api/types.gen.ts';

/** The subset of a core v1 Service the compile step reads (service upstreams). */
export interface Service {
  apiVersion: 'v1';
  kind: 'Service';
  metadata: ObjectMeta;
  spec?: {
    clusterIP?: string;
    ports?: Array<{ name?: string; port: number; protocol?: string; targetPort?: number | string }>;
  };
}

export type ResourceKind = 'TenantPolicy' | 'MailRoute' | 'Service';

/** A resource read from a file; object is the parsed document, not yet validated. */
export interface LoadedResource {
  kind: ResourceKind;
  apiVersion: string;
  /** metadata.namespace, 'default' when absent. */
  namespace: string;
  name: string;
  object: TenantPolicy | MailRoute | Service;
  /** File it came from (as given on the command line or found in a directory). */
  file?: string;
  /** 0-based index of the YAML document in its file. */
  document?: number;
}

export interface ResourceError {
  file?: string;
  /** 'MailRoute team-a/billing'; '' for file-level errors (YAML syntax). */
  resource: string;
  /** 'spec.match.recipients[2]'; '' when the error concerns the whole resource or file. */
  field: string;
  message: string;
}

/** FILE: KIND NS/NAME: FIELD: MESSAGE (parts that are absent are left out). */
export function formatResourceError(e: ResourceError): string {
  return [e.file, e.resource, e.field, e.message].filter((p) => p !== undefined && p !== '').join(': ');
}

/** 'Kind/namespace/name', the key of statuses and RelayConfig.sources. */
export function resourceKey(kind: string, namespace: string | undefined, name: string): string {
  // one flat string (a template literal makes a tree of string pieces, kept for 100k keys)
  return [kind, namespace ?? 'default', name].join('/');
}

/** 'MailRoute team-a/billing' as used in messages. */
export function resourceLabel(kind: string, namespace: string | undefined, name: string): string {
  return `${kind} ${namespace ?? 'default'}/${name}`;
}
