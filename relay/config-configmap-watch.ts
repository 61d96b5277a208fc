// Feeds the relay from ONE ConfigMap through the Kubernetes API instead of a mounted volume
// (kubelet volume updates lag by a minute or more): GET it, then watch it with
// fieldSelector=metadata.name=NAME from its resourceVersion, decode data or gzip binaryData and
// hand it to the same parse → applyConfig path as the file watcher. Watches end (server timeouts,
// API-server restarts, 410 Gone): re-watch from the last resourceVersion, re-GET after a 410 or
// an error (with backoff 1 s → 30 s), and re-GET periodically anyway. A deleted ConfigMap or an
// invalid config keeps the last good config.
//
// RBAC: get, list, watch on configmaps with resourceNames: [NAME] in that namespace (a
// list/watch whose fieldSelector pins metadata.name is authorised against resourceNames).
import { gunzipSync } from 'node:zlib';
import * as k8s from '@kubernetes/client-node';
import { parseRelayConfig } from './config/load.ts';
import type { RelayConfig } from './config/types.gen.ts';
import type { ConfigTarget, FileWatcher } from './config-file-watch.ts';
import type { Logger } from './observability/log.ts';

export const CONFIG_KEY = 'relay-config.json';
export const CONFIG_GZ_KEY = 'relay-config.json.gz';
export const CONFIG_HASH_ANNOTATION = 'mailplus.io/config-hash';

interface ConfigMapLike {
  metadata?: { name?: string; namespace?: string; resourceVersion?: string };
  data?: Record<string, string>;
  binaryData?: Record<string, string>;
}

/** The relay-config JSON text held by a ConfigMap (gzip binaryData preferred). Throws naming the keys. */
export function relayConfigText(cm: ConfigMapLike): string {
  const where = `ConfigMap ${cm.metadata?.namespace}/${cm.metadata?.name}`;
  const gz = cm.binaryData?.[CONFIG_GZ_KEY];
  if (gz !== undefined) {
    try {
      return gunzipSync(Buffer.from(gz, 'base64')).toString('utf8');
    } catch (err) {
      throw new Error(`${where}: binaryData["${CONFIG_GZ_KEY}"] is not gzip: ${(err as Error).message}`);
    }
  }
  const text = cm.data?.[CONFIG_KEY];
  if (text !== undefined) return text;
  throw new Error(
    `${where} has neither data["${CONFIG_KEY}"] nor binaryData["${CONFIG_GZ_KEY}"]; is the operator publishing to it?`,
  );
}

/** Decodes and verifies (schema, hash) the relay config in a ConfigMap. Throws RelayConfigError / Error. */
export function decodeRelayConfigMap(cm: ConfigMapLike): RelayConfig {
  const source = `configmap/${cm.metadata?.namespace}/${cm.metadata?.name}`;
  return parseRelayConfig(relayConfigText(cm), source);
}

export interface ConfigMapWatchOptions {
  kc: k8s.KubeConfig;
  namespace: string;
  name: string;
  logger: Logger;
  /** Re-GET the ConfigMap this often even when the watch is healthy (default 5 min). */
  resyncMs?: number;
  /** Server-side watch timeout, randomised ±20 % (default 25 s: below client-node's 30 s inactivity abort). */
  watchTimeoutSeconds?: number;
  backoff?: { baseMs: number; maxMs: number };
  /** Called after each successful apply. */
  onApplied?(hash: string): void;
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

export function watchConfigMap(relay: ConfigTarget, opts: ConfigMapWatchOptions): FileWatcher {
  const { kc, namespace, name, logger } = opts;
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const where = `${namespace}/${name}`;
  const stop = new AbortController();
  const resyncMs = opts.resyncMs ?? 5 * 60_000;
  const baseMs = opts.backoff?.baseMs ?? 1000;
  const maxMs = opts.backoff?.maxMs ?? 30_000;
  let failures = 0;
  let rv = '';
  let appliedRv = '';
  let lastGet = 0;
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

  const getOnce = async () => {
    lastGet = Date.now();
    try {
      const cm = await core.readNamespacedConfigMap({ name, namespace });
      missingLogged = false;
      apply(cm);
      rv = cm.metadata?.resourceVersion ?? '';
    } catch (err) {
      if (statusOf(err) !== 404) throw err;
      if (!missingLogged) {
        logger.warn('relay config ConfigMap not found; waiting for the operator to publish it', {
          configmap: where,
        });
        missingLogged = true;
      }
      // watch from "now" for its creation
      const list = await core.listNamespacedConfigMap({ namespace, fieldSelector: `metadata.name=${name}` });
      rv = list.metadata?.resourceVersion ?? '';
    }
  };

  const watchOnce = (): Promise<{ events: number; gone: boolean }> =>
    new Promise((resolve, reject) => {
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
            events++;
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
            if (err && !stop.signal.aborted && (err as Error).name !== 'TimeoutError') {
              if (statusOf(err) === 410) return resolve({ events, gone: true });
              return reject(err);
            }
            resolve({ events, gone });
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
        if (rv === '' || Date.now() - lastGet >= resyncMs) await getOnce();
        if (stop.signal.aborted) return;
        const started = Date.now();
        const r = await watchOnce();
        failures = 0;
        if (r.gone) {
          logger.info('configmap watch expired (410 Gone); re-reading', { configmap: where });
          rv = '';
        } else if (r.events === 0 && Date.now() - started < 1000) {
          // the server ends watches at once (tiny --min-request-timeout): do not spin
          await sleep(1000, stop.signal);
        }
      } catch (err) {
        if (stop.signal.aborted) return;
        failures++;
        const delay = Math.min(maxMs, baseMs * 2 ** Math.min(failures - 1, 10));
        const code = statusOf(err);
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
