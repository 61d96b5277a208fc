// The operator's view of the cluster: one informer per kind it reads (TenantPolicies, MailRoutes,
// Services, relay pods, and the ConfigMaps it publishes), and the sorting of their changes into
// "the compile input changed" and "only a status changed" (our own status writes come back as
// updates: they change nothing the compile reads, and only that object's status may need another
// look; a sweep over every object per status write would be quadratic in objects, and a change
// would wait behind the sweeps of a status-write burst).

import { isDeepStrictEqual } from 'node:util';
import { MAILPLUS_GROUP as GROUP, MAILPLUS_VERSION as VERSION } from '../contract/kube.ts';
import type { KubeClient } from '../platform/kube/client.ts';
import type { ConfigMap, Pod, ServiceObject } from '../platform/kube/objects.ts';
import type { Logger } from '../platform/log.ts';
import type { MailRoute, TenantPolicy } from './api/types.gen.ts';
import type { CompileCache } from './compile/compile.ts';
import { compactResource, Interner } from './kube/compact.ts';
import { type InformerLifecycle, listPaginated, ResilientInformer } from './kube/informer.ts';
import type { OperatorMetrics } from './metrics.ts';
import { resourceKey, type Service } from './resources/types.ts';
import type { MailPlusKind } from './status/writer.ts';

export type MailPlusObject = TenantPolicy | MailRoute;
type Verb = 'add' | 'update' | 'delete';

export interface WatchedResourcesOptions {
  client: KubeClient;
  namespace: string;
  relaySelector: string;
  metrics: OperatorMetrics;
  logger: Logger;
  resyncMs: number;
  staleAfterMs?: number;
  /** Informer objects are replaced on change, never mutated: unchanged ones are not compiled again. */
  compileCache: CompileCache;
  /** Something the compile reads changed (or a periodic resync): compile again. */
  onInputChange(): void;
  /** Only the status of `key` changed (typically our own write): look at that status alone. */
  onStatusChange(key: string, obj: MailPlusObject): void;
  /** A TenantPolicy or MailRoute was added, replaced or removed; `before`: the object cached before. */
  onObjectChange?(key: string, before: MailPlusObject | undefined): void;
  /** The relay pods changed: the relays to ask and Programmed may change (no recompile). */
  onRelayChange(): void;
}

/**
 * Whether the compile reads the same of both versions of an object: everything in its metadata it
 * reads (its spec moves `generation`). Compared field by field: a text of these per object, kept
 * for the next event, was ~15 MB at 100k MailRoutes.
 */
function sameCompileInputs(a: MailPlusObject, b: MailPlusObject): boolean {
  const x = a.metadata;
  const y = b.metadata;
  return (
    x.uid === y.uid &&
    x.generation === y.generation &&
    x.creationTimestamp === y.creationTimestamp &&
    x.deletionTimestamp === y.deletionTimestamp &&
    isDeepStrictEqual(x.labels, y.labels) &&
    isDeepStrictEqual(x.annotations, y.annotations)
  );
}

function toService(s: ServiceObject): Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name: s.metadata?.name ?? '',
      namespace: s.metadata?.namespace,
      generation: s.metadata?.generation,
      resourceVersion: s.metadata?.resourceVersion,
    },
    spec: {
      clusterIP: s.spec?.clusterIP,
      ports: (s.spec?.ports ?? []).map((p) => ({
        name: p.name,
        port: p.port,
        protocol: p.protocol,
        targetPort: p.targetPort,
      })),
    },
  };
}

/** `namespace/name` of every Service some MailRoute forwards to. */
export function referencedServices(routes: MailRoute[]): Set<string> {
  const out = new Set<string>();
  for (const r of routes) {
    for (const u of r.spec?.forward?.upstreams ?? []) {
      if (u.service?.name) out.add(`${r.metadata.namespace}/${u.service.name}`);
    }
  }
  return out;
}

// A LIST on a connection that went dark after its TLS handshake would otherwise wait for the HTTP
// client's own timeout (minutes) while the informer and its staleness check wait on it. The
// deadline is per page: the Mail-Plus kinds and Services are listed in pages (listPaginated).
const LIST_DEADLINE_MS = 60_000;

export class WatchedResources {
  readonly tenantPolicies: ResilientInformer<TenantPolicy>;
  readonly mailRoutes: ResilientInformer<MailRoute>;
  readonly services: ResilientInformer<ServiceObject>;
  readonly relayPods: ResilientInformer<Pod>;
  /**
   * Services some MailRoute names, as of the last compile (only their changes matter); undefined
   * before the first compile, when every Service change does.
   */
  referenced: Set<string> | undefined;
  /** Shares the strings the cached TenantPolicies and MailRoutes repeat (kube/compact.ts). */
  private readonly interner = new Interner();
  private readonly o: WatchedResourcesOptions;

  constructor(o: WatchedResourcesOptions) {
    this.o = o;
    this.tenantPolicies = this.mailPlusInformer<TenantPolicy>('TenantPolicy', 'tenantpolicies');
    this.mailRoutes = this.mailPlusInformer<MailRoute>('MailRoute', 'mailroutes');
    this.services = new ResilientInformer<ServiceObject>({
      ...this.common(),
      kind: 'Service',
      path: '/api/v1/services',
      list: (each) => listPaginated((page) => this.list('/api/v1/services', page), undefined, each),
      onChange: (_verb, s) => {
        if (!this.referenced || this.referenced.has(`${s.metadata?.namespace}/${s.metadata?.name}`))
          o.onInputChange();
      },
    });
    const { namespace, relaySelector } = o;
    const pods = `/api/v1/namespaces/${namespace}/pods`;
    this.relayPods = new ResilientInformer<Pod>({
      ...this.common(),
      kind: 'Pod',
      path: pods,
      labelSelector: relaySelector,
      list: () => this.list(pods, { labelSelector: relaySelector }),
      onChange: () => o.onRelayChange(),
    });
  }

  /** The informers of the compile's inputs and the relay pods. */
  get informers(): InformerLifecycle[] {
    return [this.tenantPolicies, this.mailRoutes, this.services, this.relayPods];
  }

  /** One ConfigMap of the operator's namespace, by a name-pinned informer (RBAC names each). */
  configMapInformer(
    name: string,
    onChange: (verb: Verb, cm: ConfigMap) => void,
  ): ResilientInformer<ConfigMap> {
    const path = `/api/v1/namespaces/${this.o.namespace}/configmaps`;
    const fieldSelector = `metadata.name=${name}`;
    return new ResilientInformer<ConfigMap>({
      ...this.common(),
      kind: 'ConfigMap',
      path,
      fieldSelector,
      list: () => this.list(path, { fieldSelector }),
      onChange,
    });
  }

  /** The compile's inputs as the caches hold them now. */
  compileInputs(): { tenantPolicies: TenantPolicy[]; mailRoutes: MailRoute[]; services: Service[] } {
    return {
      tenantPolicies: this.tenantPolicies.list(),
      mailRoutes: this.mailRoutes.list(),
      services: this.services.list().map(toService),
    };
  }

  /** The cached object of a status key `Kind/namespace/name`. */
  objectOf(key: string): { kind: MailPlusKind; obj: MailPlusObject | undefined } {
    const [kind, ns, name] = key.split('/');
    const inf = kind === 'TenantPolicy' ? this.tenantPolicies : this.mailRoutes;
    return { kind: kind as MailPlusKind, obj: inf.get(name, ns) as MailPlusObject | undefined };
  }

  private common() {
    const { client, metrics, logger, resyncMs, staleAfterMs } = this.o;
    return { client, metrics, logger, resyncMs, staleAfterMs };
  }

  /** One LIST request (or page of one). */
  private list<T>(path: string, query: Record<string, string | number | undefined>): Promise<T> {
    return this.o.client.get<T>(path, { query, timeoutMs: LIST_DEADLINE_MS });
  }

  private mailPlusInformer<T extends MailPlusObject>(kind: MailPlusKind, plural: string) {
    return new ResilientInformer<T>({
      ...this.common(),
      kind,
      path: `/apis/${GROUP}/${VERSION}/${plural}`,
      list: (each) =>
        listPaginated((page) => this.list(`/apis/${GROUP}/${VERSION}/${plural}`, page), undefined, each),
      onChange: (verb, obj, before) => this.onResourceChange(kind, verb, obj, before),
      onResync: () => this.o.onInputChange(),
      // the cached record it replaces shares what did not change (kube/compact.ts)
      compact: (obj, previous) => compactResource(obj, this.interner, previous),
    });
  }

  /** `before`: the informer's cached object the change replaced (its one cache: no second map). */
  private onResourceChange(
    kind: MailPlusKind,
    verb: Verb,
    obj: MailPlusObject,
    before: MailPlusObject | undefined,
  ): void {
    const md = obj.metadata;
    const key = resourceKey(kind, md.namespace, md.name);
    this.o.onObjectChange?.(key, before);
    if (verb === 'update' && before && sameCompileInputs(before, obj)) {
      this.o.compileCache.sameAs(obj, before);
      this.o.onStatusChange(key, obj);
      return;
    }
    this.o.onInputChange();
  }
}
