// The relay tells the operator what it serves without any broad RBAC: it keeps its own
// coordination.k8s.io/v1 Lease `mailplus-relay-<id>` (holderIdentity = relay id, renewed every
// 10 s, leaseDurationSeconds 30, annotation mailplus.io/config-hash = the hash it loaded). The
// operator watches these Leases: live relays are those renewed within their duration, and a
// resource is Programmed when every live relay serves a config containing its generation.
// RBAC: leases get, create, update in the Lease's namespace.
import * as k8s from '@kubernetes/client-node';
import { CONFIG_HASH_ANNOTATION } from './config-configmap-watch.ts';
import type { Logger } from './observability/log.ts';

export const REPORT_COMPONENT_LABEL = 'app.kubernetes.io/component';
export const REPORT_COMPONENT = 'relay-report';
export const FLEET_LABEL = 'mailplus.io/fleet';

/** A DNS-1123 Lease name for a relay id (pod or host name). */
export function reportLeaseName(id: string): string {
  const clean = id
    .toLowerCase()
    .replace(/[^a-z0-9.-]+/g, '-')
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '');
  return `mailplus-relay-${clean || 'unnamed'}`.slice(0, 253).replace(/[^a-z0-9]+$/, '');
}

export interface ReportLeaseOptions {
  kc: k8s.KubeConfig;
  namespace: string;
  id: string;
  /** The ConfigMap name this relay follows (label mailplus.io/fleet). */
  fleet: string;
  /** Hash of the config the relay serves now (null: none yet). */
  hash(): string | null;
  logger: Logger;
  renewMs?: number;
  leaseDurationSeconds?: number;
}

export interface ReportLease {
  /** Renew now (after a config was applied: the operator learns within milliseconds). */
  renewNow(): void;
  /** Stops renewing and marks the Lease expired (leaseDurationSeconds 1) so the relay stops counting. */
  close(): Promise<void>;
}

const microNow = () => new k8s.V1MicroTime(Date.now());

function statusOf(err: unknown): number | undefined {
  return err instanceof k8s.ApiException ? err.code : undefined;
}

export function startReportLease(opts: ReportLeaseOptions): ReportLease {
  const api = opts.kc.makeApiClient(k8s.CoordinationV1Api);
  const { namespace, id, logger } = opts;
  const name = reportLeaseName(id);
  const renewMs = opts.renewMs ?? 10_000;
  const duration = opts.leaseDurationSeconds ?? 30;
  let lease: k8s.V1Lease | undefined;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let inFlight: Promise<void> | undefined;
  let again = false;
  let lastError = '';

  const body = (hash: string | null, durationSeconds = duration): k8s.V1Lease => {
    const annotations = { ...lease?.metadata?.annotations };
    if (hash) annotations[CONFIG_HASH_ANNOTATION] = hash;
    else delete annotations[CONFIG_HASH_ANNOTATION];
    return {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: {
        ...lease?.metadata,
        name,
        namespace,
        labels: {
          ...lease?.metadata?.labels,
          [REPORT_COMPONENT_LABEL]: REPORT_COMPONENT,
          [FLEET_LABEL]: opts.fleet,
        },
        annotations,
      },
      spec: {
        holderIdentity: id,
        leaseDurationSeconds: durationSeconds,
        acquireTime: (lease?.spec?.acquireTime as k8s.V1MicroTime | undefined) ?? microNow(),
        renewTime: microNow(),
      },
    };
  };

  const renewOnce = async (durationSeconds?: number) => {
    const hash = opts.hash();
    try {
      if (!lease) {
        try {
          lease = await api.readNamespacedLease({ name, namespace });
        } catch (err) {
          if (statusOf(err) !== 404) throw err;
          lease = await api.createNamespacedLease({ namespace, body: body(hash, durationSeconds) });
          if (lastError) logger.info('relay report lease recovered', { lease: `${namespace}/${name}` });
          lastError = '';
          return;
        }
      }
      lease = await api.replaceNamespacedLease({ name, namespace, body: body(hash, durationSeconds) });
      if (lastError) logger.info('relay report lease recovered', { lease: `${namespace}/${name}` });
      lastError = '';
    } catch (err) {
      // 409: someone else wrote it (a previous incarnation): re-read next time
      lease = undefined;
      const text = err instanceof k8s.ApiException ? `HTTP ${err.code}` : (err as Error).message;
      if (text !== lastError) {
        logger.warn('relay report lease renewal failed', {
          lease: `${namespace}/${name}`,
          error: text,
          hint:
            statusOf(err) === 403
              ? `the relay needs get, create, update on leases in namespace ${namespace}`
              : undefined,
        });
      }
      lastError = text;
    }
  };

  const run = () => {
    if (closed) return;
    if (inFlight) {
      again = true;
      return;
    }
    clearTimeout(timer);
    inFlight = renewOnce().finally(() => {
      inFlight = undefined;
      if (again && !closed) {
        again = false;
        run();
        return;
      }
      if (!closed) {
        timer = setTimeout(run, renewMs);
        timer.unref();
      }
    });
  };
  run();

  return {
    renewNow: run,
    async close() {
      closed = true;
      clearTimeout(timer);
      await inFlight;
      if (lease) await renewOnce(1);
    },
  };
}
