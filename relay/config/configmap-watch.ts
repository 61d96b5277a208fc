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
import { type ConfigMapLike, decodeRelayConfigMap } from '../../contract/config/configmap.ts';
import type { RelayConfig } from '../../contract/config/types.gen.ts';
import { Backoff, type BackoffPolicy, WATCH_RETRY } from '../../platform/backoff.ts';
import { apiStatus, type KubeClient } from '../../platform/kube/client.ts';
import type { Logger } from '../../platform/log.ts';
import type { ConfigTarget, FileWatcher } from './file-watch.ts';

export interface ConfigMapWatchOptions {
  client: KubeClient;
  namespace: string;
  name: string;
  logger: Logger;
  /** Re-LIST the ConfigMap this often even when the watch is healthy (default 5 min). */
  resyncMs?: number;
  /** Server-side watch timeout, randomised ±20 % (default 25 s; dropped 30 s later without a byte). */
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

interface WatchOutcome {
  /** ADDED/MODIFIED/DELETED/BOOKMARK events received. */
  events: number;
  gone: boolean;
  ms: number;
}

/**
 * One ConfigMap's watch. Its state: where the next watch starts (a LIST's resourceVersion, then
 * the last event's or bookmark's), the resourceVersion last applied, when the last LIST ran.
 */
class ConfigMapWatch {
  private rv = '';
  private appliedRv = '';
  private lastList = 0;
  private missingLogged = false;
  private readonly stop = new AbortController();
  private readonly where: string;
  private readonly resyncMs: number;
  private readonly backoff: Backoff;
  private readonly relay: ConfigTarget;
  private readonly opts: ConfigMapWatchOptions;

  constructor(relay: ConfigTarget, opts: ConfigMapWatchOptions) {
    this.relay = relay;
    this.opts = opts;
    this.where = `${opts.namespace}/${opts.name}`;
    this.resyncMs = opts.resyncMs ?? 5 * 60_000;
    this.backoff = new Backoff(opts.backoff ?? WATCH_RETRY);
  }

  private apply(cm: ConfigMapLike): void {
    const objRv = cm.metadata?.resourceVersion ?? '';
    if (objRv !== '' && objRv === this.appliedRv) return;
    this.appliedRv = objRv;
    const source = `configmap/${this.where}`;
    let config: RelayConfig;
    try {
      config = decodeRelayConfigMap(cm);
    } catch (err) {
      this.relay.reportConfigError(err as Error, source);
      return;
    }
    const r = this.relay.applyConfig(config, source);
    if (r.ok) this.opts.onApplied?.(config.hash);
  }

  private async list(): Promise<void> {
    const { namespace, name, metrics } = this.opts;
    this.lastList = Date.now();
    const res = await this.opts.client.get<{
      items: ConfigMapLike[];
      metadata?: { resourceVersion?: string };
    }>(`/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps`, {
      query: { fieldSelector: `metadata.name=${name}` },
      signal: this.stop.signal,
    });
    metrics?.relisted();
    metrics?.synced();
    const cm = res.items.find((i) => i.metadata?.name === name);
    if (cm) {
      this.missingLogged = false;
      this.apply(cm);
    } else if (!this.missingLogged) {
      this.opts.logger.warn('relay config ConfigMap not found; waiting for the operator to publish it', {
        configmap: this.where,
      });
      this.missingLogged = true;
    }
    // the collection's resourceVersion, not the object's: the object's may be older than anything
    // the API server can still watch from (a restarted server's watch cache starts at "now")
    this.rv = res.metadata?.resourceVersion ?? '';
  }

  /** One watch event; returns whether it was a 410 Gone ERROR event. */
  private onEvent(type: string, obj: ConfigMapLike & { code?: number; message?: string }): boolean {
    const { logger, metrics } = this.opts;
    if (type === 'ERROR') {
      if (obj.code === 410) return true;
      logger.warn('configmap watch error event', {
        configmap: this.where,
        code: obj.code,
        error: obj.message,
      });
      return false;
    }
    metrics?.synced();
    if (obj.metadata?.resourceVersion) this.rv = obj.metadata.resourceVersion;
    if (type === 'ADDED' || type === 'MODIFIED') this.apply(obj);
    else if (type === 'DELETED') {
      this.appliedRv = '';
      logger.warn('relay config ConfigMap deleted; keeping the last good config', { configmap: this.where });
    }
    return false;
  }

  private async watchOnce(): Promise<WatchOutcome> {
    const { client, namespace, name } = this.opts;
    const started = Date.now();
    let events = 0;
    let gone = false;
    const base = this.opts.watchTimeoutSeconds ?? 25;
    const timeoutSeconds = Math.max(1, Math.round(base * (0.8 + Math.random() * 0.4)));
    try {
      await client.watch(
        `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps`,
        (type, obj) => {
          if (type !== 'ERROR') events++;
          if (this.onEvent(type, obj as ConfigMapLike & { code?: number; message?: string })) gone = true;
        },
        {
          query: {
            fieldSelector: `metadata.name=${name}`,
            resourceVersion: this.rv,
            allowWatchBookmarks: true,
            timeoutSeconds,
          },
          signal: this.stop.signal,
          idleMs: (timeoutSeconds + 30) * 1000,
        },
      );
    } catch (err) {
      const ms = Date.now() - started;
      // an idle timeout is a failure, not the end of a watch: the server ends a live watch at
      // timeoutSeconds, so nothing for 30 s longer means a dead connection, and counting it as in
      // sync would keep the watch-stale alert from ever firing
      if (this.stop.signal.aborted) return { events, gone, ms };
      if (apiStatus(err) === 410) return { events, gone: true, ms };
      throw err;
    }
    return { events, gone, ms: Date.now() - started };
  }

  /** After a watch ended without an error: re-LIST after a 410, pause after an instant end. */
  private async afterWatch(r: WatchOutcome): Promise<void> {
    if (r.gone) {
      // resume from a fresh LIST, after a pause: a 410 that follows a LIST at once must not loop
      this.rv = '';
      const delayMs = this.backoff.next();
      this.opts.metrics?.restarted();
      this.opts.logger.info('configmap watch expired (410 Gone); re-reading', {
        configmap: this.where,
        delayMs,
      });
      await sleep(delayMs, this.stop.signal);
    } else if (r.events === 0 && r.ms < 1000) {
      // the server ends watches at once (tiny --min-request-timeout, a proxy): do not spin
      await sleep(this.backoff.next(), this.stop.signal);
    } else {
      // a watch that ran its course: up to date until its end
      this.opts.metrics?.synced();
      this.backoff.reset();
    }
  }

  /** After a LIST or watch failed: log (with the RBAC it needs on 403), re-LIST after a backoff. */
  private async afterFailure(err: unknown): Promise<void> {
    const { namespace, name, metrics } = this.opts;
    const delay = this.backoff.next();
    const code = apiStatus(err);
    metrics?.failed();
    metrics?.restarted();
    this.opts.logger.warn('configmap watch failed; retrying', {
      configmap: this.where,
      status: code,
      error: (err as Error).message,
      hint:
        code === 403
          ? `the relay needs get, list, watch on configmaps resourceNames [${name}] in namespace ${namespace}`
          : undefined,
      delayMs: delay,
    });
    this.rv = '';
    await sleep(delay, this.stop.signal);
  }

  async run(): Promise<void> {
    while (!this.stop.signal.aborted) {
      try {
        if (this.rv === '' || Date.now() - this.lastList >= this.resyncMs) await this.list();
        if (this.stop.signal.aborted) return;
        const r = await this.watchOnce();
        if (this.stop.signal.aborted) return;
        await this.afterWatch(r);
      } catch (err) {
        if (this.stop.signal.aborted) return;
        await this.afterFailure(err);
      }
    }
  }

  close(): void {
    this.stop.abort();
  }
}

export function watchConfigMap(relay: ConfigTarget, opts: ConfigMapWatchOptions): FileWatcher {
  const watch = new ConfigMapWatch(relay, opts);
  void watch.run();
  return { close: () => watch.close() };
}
