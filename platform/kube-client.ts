// The thin edge over @kubernetes/client-node 2.x: kubeconfig loading, error codes, per-request
// options (patch content type, abort signal, timeout) as promise middleware.
import { readFileSync } from 'node:fs';
import * as k8s from '@kubernetes/client-node';

export { k8s };

/** --kubeconfig FILE, else KUBECONFIG / ~/.kube/config, else the in-cluster service account. */
export function loadKubeConfig(file?: string): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  if (file) kc.loadFromFile(file);
  else kc.loadFromDefault();
  if (!kc.getCurrentCluster()) {
    throw new Error(
      file
        ? `kubeconfig ${file} has no current cluster; set current-context`
        : 'no kubeconfig found: pass --kubeconfig FILE, set KUBECONFIG, or run in a pod with a service account',
    );
  }
  return kc;
}

const SA_NAMESPACE_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

/** The pod's namespace (service account), else the kubeconfig context's namespace, else fallback. */
export function defaultNamespace(kc: k8s.KubeConfig | undefined, fallback: string): string {
  try {
    const ns = readFileSync(SA_NAMESPACE_FILE, 'utf8').trim();
    if (ns) return ns;
  } catch {
    // not in a pod
  }
  const ctx = kc?.getContextObject(kc.getCurrentContext());
  return ctx?.namespace || fallback;
}

/** HTTP status of a failed API call (ApiException.code, or a watch error's statusCode). */
export function apiStatus(err: unknown): number | undefined {
  if (err instanceof k8s.ApiException) return err.code;
  const e = err as { code?: unknown; statusCode?: unknown } | undefined;
  if (typeof e?.statusCode === 'number') return e.statusCode;
  if (typeof e?.code === 'number') return e.code;
  return undefined;
}

/** A short description of an API error: the v1 Status message when there is one. */
export function apiErrorText(err: unknown): string {
  if (err instanceof k8s.ApiException) {
    let msg = '';
    try {
      const body = typeof err.body === 'string' ? JSON.parse(err.body) : err.body;
      msg = body?.message ?? '';
    } catch {
      msg = String(err.body ?? '').slice(0, 300);
    }
    return `HTTP ${err.code}${msg ? `: ${msg}` : ''}`;
  }
  return (err as Error)?.message ?? String(err);
}

export interface RequestOptions {
  /** A k8s.PatchStrategy content type (CRDs refuse strategic merge patch: 415). */
  contentType?: string;
  /** Aborts the request (leadership lost, shutdown). */
  signal?: AbortSignal;
  /** Per-request deadline (default 30 s). */
  timeoutMs?: number;
}

type Options = NonNullable<Parameters<k8s.CoreV1Api['readNamespacedConfigMap']>[1]>;

/** ConfigurationOptions for one call: content type header, abort signal + timeout. */
export function requestOptions(opts: RequestOptions = {}): Options {
  const signals = [AbortSignal.timeout(opts.timeoutMs ?? 30_000)];
  if (opts.signal) signals.push(opts.signal);
  const signal = AbortSignal.any(signals);
  // The object-parameter API runs middleware in its Observable flavour (client-node's rxjs stub)
  const middleware = {
    pre: (ctx: { setHeaderParam(k: string, v: string): void; setSignal(s: AbortSignal): void }) => {
      if (opts.contentType) ctx.setHeaderParam('Content-Type', opts.contentType);
      ctx.setSignal(signal);
      return new k8s.Observable(Promise.resolve(ctx));
    },
    post: (res: unknown) => new k8s.Observable(Promise.resolve(res)),
  };
  return { middleware: [middleware], middlewareMergeStrategy: 'append' } as unknown as Options;
}

/** Lease and Event times are MicroTime: the server refuses millisecond precision. */
export function microTime(d: Date = new Date()): k8s.V1MicroTime {
  return new k8s.V1MicroTime(d.getTime());
}

/** A MicroTime read back (a string in 2.x, or a Date) as ms since the epoch. */
export function timeMs(v: unknown): number {
  if (v instanceof Date) return v.getTime();
  if (typeof v === 'string') return Date.parse(v);
  return Number.NaN;
}
