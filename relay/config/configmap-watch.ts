// Feeds the relay from ONE ConfigMap through the Kubernetes API instead of a mounted volume
// (kubelet volume updates lag by a minute or more): LIST it with fieldSelector=metadata.name=NAME,
// then watch from the LIST's resourceVersion, decode data or gzip binaryData and hand it to the
// same parse → applyConfig path as the file watcher. One watchConfigMap() per ConfigMap: it holds
// no state shared with another instance.
//
// Watches end (server timeouts, API-server restarts, 410 Gone). A timeout re-watches from the last
// resourceVersion seen (event or bookmark). A 410 or an error re-LISTs, and always after a
// jittered backoff (WATCH_RETRY): never from the object's own resourceVersion, which a restarted
// API server's watch cache no longer serves (that 410 → GET → watch → 410 cycle spun ~55 times a
// second), and never without a pause. A LIST also happens every resyncMs. A deleted ConfigMap or
// an invalid config keeps the last good config.
//
// RBAC: get, list, watch on configmaps with resourceNames: [NAME] in that namespace (a
// list/watch whose fieldSelector pins metadata.name is authorised against resourceNames).
import * as k8s from '@kubernetes/client-node';
import { type ConfigMapLike, decodeRelayConfigMap } from '../../contract/config/configmap.ts';
import type { RelayConfig } from '../../contract/config/types.gen.ts';
import { Backoff, type BackoffPolicy, WATCH_RETRY } from '../../platform/backoff.ts';
import type { Logger } from '../../platform/log.ts';
import type { ConfigTarget, FileWatcher } from './file-watch.ts';

export interface ConfigMapWatchOptions {
  kc: k8s.KubeConfig;
  namespace: string;
  name: string;
  logger: Logger;
  /** Re-LIST the ConfigMap this often even when the watch is healthy (default 5 min). */
  resyncMs?: number;
  /** Server-side watch timeout, randomised ±20 % (default 25 s: below client-node's 30 s inactivity abort). */
  watchTimeoutSeconds?: number;
  /** Retry policy after errors and 410 Gone (default WATCH_RETRY). */
  backoff?: BackoffPolicy;
  /** Watch health (RelayMetrics.configWatch()). */
  metrics?: ConfigMapWatchMetrics;
  /** Called after each successful apply. */
  onApplied?(hash: string): void;
}

/** What a ConfigMap watch reports about its own health. */
export interface ConfigMapWatchMetrics {
  /** The relay knows it holds the ConfigMap's current version (LIST, event, bookmark, clean watch end). */
  synced(): void;
  /** A LIST answered. */
  relisted(): void;
  /** A watch is started again after an error or 410 Gone. */
  restarted(): void;
  /** A LIST or watch failed (not 410 Gone). */
  failed(): void;
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(resolve, ms);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        resolve();
      },
      { once: true },
    );
  });

function statusOf(err: unknown): number | undefined {
  if (err instanceof k8s.ApiException) return err.code;
  const e = err as { statusCode?: unknown; code?: unknown } | undefined;
  if (typeof e?.statusCode === 'number') return e.statusCode;
  return typeof e?.code === 'number' ? e.code : undefined;
}

interface WatchOutcome {
  /** ADDED/MODIFIED/DELETED/BOOKMARK events received. */
  events: number;
  gone: boolean;
  ms: number;
}

export function watchConfigMap(relay: ConfigTarget, opts: ConfigMapWatchOptions): FileWatcher {
  const { kc, namespace, name, logger, metrics } = opts;
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const where = `${namespace}/${name}`;
  const stop = new AbortController();
  const resyncMs = opts.resyncMs ?? 5 * 60_000;
  const backoff = new Backoff(opts.backoff ?? WATCH_RETRY);
  // where the next watch starts: a LIST's resourceVersion, then the last event's or bookmark's
  let rv = '';
  let appliedRv = '';
  let lastList = 0;
  let currentWatch: AbortController | undefined;
  let missingLogged = false;

  const apply = (cm: ConfigMapLike) => {
    const objRv = cm.metadata?.resourceVersion ?? '';
    if (objRv !== '' && objRv === appliedRv) return;
    appliedRv = objRv;
    const source = `configmap/${where}`;
    let config: RelayConfig;
    try {
      config = decodeRelayConfigMap(cm);
    } catch (err) {
      relay.reportConfigError(err as Error, source);
      return;
    }
    const r = relay.applyConfig(config, source);
    if (r.ok) opts.onApplied?.(config.hash);
  };

  const list = async () => {
    lastList = Date.now();
    const res = await core.listNamespacedConfigMap({ namespace, fieldSelector: `metadata.name=${name}` });
    metrics?.relisted();
    metrics?.synced();
    const cm = res.items.find((i) => i.metadata?.name === name);
    if (cm) {
      missingLogged = false;
      apply(cm);
    } else if (!missingLogged) {
      logger.warn('relay config ConfigMap not found; waiting for the operator to publish it', {
        configmap: where,
      });
      missingLogged = true;
    }
    // the collection's resourceVersion, not the object's: the object's may be older than anything
    // the API server can still watch from (a restarted server's watch cache starts at "now")
    rv = res.metadata?.resourceVersion ?? '';
  };

  const watchOnce = (): Promise<WatchOutcome> =>
    new Promise((resolve, reject) => {
      const started = Date.now();
      let events = 0;
      let gone = false;
      const base = opts.watchTimeoutSeconds ?? 25;
      const timeoutSeconds = Math.max(1, Math.round(base * (0.8 + Math.random() * 0.4)));
      new k8s.Watch(kc)
        .watch(
          `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps`,
          {
            fieldSelector: `metadata.name=${name}`,
            resourceVersion: rv,
            allowWatchBookmarks: true,
            timeoutSeconds,
          },
          (type: string, obj: ConfigMapLike & { code?: number; message?: string }) => {
            if (type === 'ERROR') {
              if (obj.code === 410) gone = true;
              else
                logger.warn('configmap watch error event', {
                  configmap: where,
                  code: obj.code,
                  error: obj.message,
                });
              return;
            }
            events++;
            metrics?.synced();
            if (obj.metadata?.resourceVersion) rv = obj.metadata.resourceVersion;
            if (type === 'ADDED' || type === 'MODIFIED') apply(obj);
            else if (type === 'DELETED') {
              appliedRv = '';
              logger.warn('relay config ConfigMap deleted; keeping the last good config', {
                configmap: where,
              });
            }
          },
          (err: unknown) => {
            currentWatch = undefined;
            const ms = Date.now() - started;
            if (err && !stop.signal.aborted && (err as Error).name !== 'TimeoutError') {
              if (statusOf(err) === 410) return resolve({ events, gone: true, ms });
              return reject(err);
            }
            resolve({ events, gone, ms });
          },
        )
        .then((ac) => {
          currentWatch = ac;
          if (stop.signal.aborted) ac.abort();
        }, reject);
    });

  const loop = async () => {
    while (!stop.signal.aborted) {
      try {
        if (rv === '' || Date.now() - lastList >= resyncMs) await list();
        if (stop.signal.aborted) return;
        const r = await watchOnce();
        if (stop.signal.aborted) return;
        if (r.gone) {
          // resume from a fresh LIST, after a pause: a 410 that follows a LIST at once must not loop
          rv = '';
          const delayMs = backoff.next();
          metrics?.restarted();
          logger.info('configmap watch expired (410 Gone); re-reading', { configmap: where, delayMs });
          await sleep(delayMs, stop.signal);
        } else if (r.events === 0 && r.ms < 1000) {
          // the server ends watches at once (tiny --min-request-timeout, a proxy): do not spin
          await sleep(backoff.next(), stop.signal);
        } else {
          // a watch that ran its course: up to date until its end
          metrics?.synced();
          backoff.reset();
        }
      } catch (err) {
        if (stop.signal.aborted) return;
        const delay = backoff.next();
        const code = statusOf(err);
        metrics?.failed();
        metrics?.restarted();
        logger.warn('configmap watch failed; retrying', {
          configmap: where,
          status: code,
          error: (err as Error).message,
          hint:
            code === 403
              ? `the relay needs get, list, watch on configmaps resourceNames [${name}] in namespace ${namespace}`
              : undefined,
          delayMs: delay,
        });
        rv = '';
        await sleep(delay, stop.signal);
      }
    }
  };
  void loop();

  return {
    close() {
      stop.abort();
      currentWatch?.abort();
    },
  };
}
