// A Kubernetes API client of the size Mail-Plus needs: JSON requests (GET, POST, PUT, PATCH with
// the content type the call asks for) and watches as newline-delimited JSON events, over node:https
// with keep-alive. Objects stay the JSON the API server sent (timestamps are strings).
//
// Connections: a request's is kept alive for 2 s after it (a status-write burst reuses them instead
// of a TLS handshake per write; one that went dark is not kept long, and a request on it fails at its
// deadline). A watch always opens its own. Every request has a deadline (default 30 s) and a 10 s
// connect timeout, so a blackholed API server fails a request instead of hanging it. A watch has no
// deadline; it ends when the server closes it (timeoutSeconds), when its signal aborts, or after
// `idleMs` without a byte.

import { readFileSync } from 'node:fs';
import type { Agent as HttpAgent, IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { http } from '../node-http.ts';
import { type Credentials, type KubeConnection, loadConnection, runExecPlugin, SA_DIR } from './config.ts';

const CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_TIMEOUT_MS = 30_000;

/** Content types of a PATCH (CRDs refuse strategic merge patch: 415). */
export const PATCH = {
  merge: 'application/merge-patch+json',
  json: 'application/json-patch+json',
  apply: 'application/apply-patch+yaml',
} as const;

/** A v1 Status the API server answered with (or an HTTP error without one). */
export class KubeApiError extends Error {
  readonly code: number;
  readonly reason?: string;
  readonly body: string;
  /** The Status message ('' for JSON without one), or the start of a body that is not JSON. */
  readonly detail: string;
  constructor(code: number, body: string, what: string) {
    let status: { message?: string; reason?: string } | undefined;
    let json = true;
    try {
      status = JSON.parse(body);
    } catch {
      json = false;
    }
    const text = status?.message ?? body.slice(0, 300);
    super(`${what}: HTTP ${code}${text ? `: ${text}` : ''}`);
    this.name = 'KubeApiError';
    this.code = code;
    this.reason = status?.reason;
    this.body = body;
    this.detail = json ? (status?.message ?? '') : body.slice(0, 300);
  }
}

/** HTTP status of a failed API call (a KubeApiError, or an error carrying a numeric code). */
export function apiStatus(err: unknown): number | undefined {
  if (err instanceof KubeApiError) return err.code;
  const e = err as { code?: unknown; statusCode?: unknown } | undefined;
  if (typeof e?.statusCode === 'number') return e.statusCode;
  if (typeof e?.code === 'number') return e.code;
  return undefined;
}

/** A short description of an API error: the v1 Status message when there is one. */
export function apiErrorText(err: unknown): string {
  if (err instanceof KubeApiError) return `HTTP ${err.code}${err.detail ? `: ${err.detail}` : ''}`;
  return (err as Error)?.message ?? String(err);
}

/** Lease and Event times are MicroTime: the server refuses millisecond precision. */
export function microTime(d: Date = new Date()): string {
  return d.toISOString().replace(/Z$/, '000Z');
}

/** A MicroTime or Time read back (a string, or a Date) as ms since the epoch. */
export function timeMs(v: unknown): number {
  if (v instanceof Date) return v.getTime();
  if (typeof v === 'string') return Date.parse(v);
  return Number.NaN;
}

export type Query = Record<string, string | number | boolean | undefined>;

export interface RequestOptions {
  query?: Query;
  /** Sent as JSON. */
  body?: unknown;
  /** Content-Type of the body (default application/json; PATCH.* for patches). */
  contentType?: string;
  /** Aborts the request (leadership lost, shutdown). */
  signal?: AbortSignal;
  /** Deadline of the whole request (default 30 s). */
  timeoutMs?: number;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export interface WatchOptions {
  query?: Query;
  signal?: AbortSignal;
  /** The watch is dropped after this long without a byte from the server. */
  idleMs?: number;
  /** The server answered 200: events follow. */
  onOpen?(): void;
}

function withQuery(path: string, query: Query | undefined): string {
  if (!query) return path;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `${path}${path.includes('?') ? '&' : '?'}${s}` : path;
}

export class KubeClient {
  readonly connection: KubeConnection;
  private readonly url: URL;
  private readonly agent: HttpAgent;
  /** Watches: a connection of their own each, never one from the pool (see watch()). */
  private readonly watchAgent: HttpAgent;
  private execCreds: { creds: Credentials; expiresAt: number } | undefined;
  private execRunning: Promise<{ creds: Credentials; expiresAt: number }> | undefined;
  private execAgents: { pooled: HttpAgent; fresh: HttpAgent } | undefined;

  constructor(connection: KubeConnection) {
    this.connection = connection;
    this.url = new URL(connection.server);
    this.agent = this.makeAgent(connection.cert, connection.key, true);
    this.watchAgent = this.makeAgent(connection.cert, connection.key, false);
  }

  /** The namespace of the kubeconfig context or service account, if any. */
  get namespace(): string | undefined {
    return this.connection.namespace;
  }

  private makeAgent(cert: string | undefined, key: string | undefined, keepAlive: boolean): HttpAgent {
    const opts = { keepAlive, timeout: 2000, scheduling: 'lifo' as const };
    if (this.url.protocol === 'http:') return new http.Agent(opts);
    const c = this.connection;
    return new HttpsAgent({
      ...opts,
      ca: c.ca,
      cert,
      key,
      rejectUnauthorized: !c.insecureSkipTLSVerify,
      servername: c.tlsServerName,
    });
  }

  /** Headers and agent for the next request (exec credentials refreshed when they expire). */
  private async auth(
    fresh: boolean,
    forceRefresh = false,
  ): Promise<{ headers: Record<string, string>; agent: HttpAgent }> {
    const c = this.connection;
    const headers: Record<string, string> = {};
    let agent = fresh ? this.watchAgent : this.agent;
    if (c.exec) {
      const stale = !this.execCreds || this.execCreds.expiresAt - Date.now() < 60_000;
      if (forceRefresh || stale) {
        this.execRunning ??= runExecPlugin(c.exec).finally(() => {
          this.execRunning = undefined;
        });
        const got = await this.execRunning;
        if (got !== this.execCreds) {
          this.execCreds = got;
          this.execAgents?.pooled.destroy();
          this.execAgents?.fresh.destroy();
          this.execAgents = got.creds.cert
            ? {
                pooled: this.makeAgent(got.creds.cert, got.creds.key, true),
                fresh: this.makeAgent(got.creds.cert, got.creds.key, false),
              }
            : undefined;
        }
      }
      const creds = this.execCreds?.creds;
      if (creds?.token) headers.Authorization = `Bearer ${creds.token}`;
      if (this.execAgents) agent = fresh ? this.execAgents.fresh : this.execAgents.pooled;
    } else if (c.token) headers.Authorization = `Bearer ${c.token}`;
    else if (c.tokenFile) headers.Authorization = `Bearer ${readFileSync(c.tokenFile, 'utf8').trim()}`;
    else if (c.username !== undefined)
      headers.Authorization = `Basic ${Buffer.from(`${c.username}:${c.password ?? ''}`).toString('base64')}`;
    return { headers, agent };
  }

  private async open(
    method: string,
    path: string,
    opts: {
      body?: string;
      contentType?: string;
      signal?: AbortSignal;
      idleMs?: number;
      /** Set when the idle timeout dropped the connection (the stream itself only says "aborted"). */
      idle?: { error?: Error };
      /** A new connection, not one from the pool. */
      fresh?: boolean;
    },
    retryAuth = true,
  ): Promise<IncomingMessage> {
    const { headers, agent } = await this.auth(opts.fresh === true);
    headers.Accept = 'application/json';
    if (opts.body !== undefined) {
      headers['Content-Type'] = opts.contentType ?? 'application/json';
      headers['Content-Length'] = String(Buffer.byteLength(opts.body));
    }
    const { signal } = opts;
    const res = await new Promise<IncomingMessage>((resolveRes, reject) => {
      const send = this.url.protocol === 'http:' ? http.request : httpsRequest;
      const req = send(
        {
          protocol: this.url.protocol,
          hostname: this.url.hostname.replace(/^\[|\]$/g, ''),
          port: this.url.port || (this.url.protocol === 'http:' ? 80 : 443),
          path: `${this.url.pathname === '/' ? '' : this.url.pathname}${path}`,
          method,
          headers,
          agent,
          signal,
        },
        resolveRes,
      );
      req.on('error', reject);
      // connect timeout: a fresh socket must be connected (and TLS done) within 10 s
      req.on('socket', (socket) => {
        if (!(socket as { connecting?: boolean }).connecting) return;
        const t = setTimeout(
          () =>
            req.destroy(new Error(`connecting to ${this.url.host} timed out after ${CONNECT_TIMEOUT_MS} ms`)),
          CONNECT_TIMEOUT_MS,
        );
        socket.once(this.url.protocol === 'http:' ? 'connect' : 'secureConnect', () => clearTimeout(t));
        socket.once('close', () => clearTimeout(t));
      });
      if (opts.idleMs) {
        req.setTimeout(opts.idleMs, () => {
          const err = new Error(`no data from ${this.url.host} for ${opts.idleMs} ms`);
          err.name = 'TimeoutError';
          if (opts.idle) opts.idle.error = err;
          req.destroy(err);
        });
      }
      req.end(opts.body);
    });
    if (res.statusCode === 401 && retryAuth && this.connection.exec) {
      res.resume();
      await this.auth(opts.fresh === true, true);
      return this.open(method, path, opts, false);
    }
    return res;
  }

  /** One API call; the parsed JSON answer, or a KubeApiError for an HTTP error. */
  async request<T = unknown>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const full = withQuery(path, opts.query);
    const body = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    // One controller for the deadline and the caller's signal, its timer cleared when the call ends:
    // AbortSignal.timeout and AbortSignal.any kept a timer, two signals and their links alive for
    // the whole deadline after every call (about 6,000 of each at 200 status writes a second).
    const ms = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const ctl = new AbortController();
    // made when the deadline passes, not for every call (its message and stack are garbage otherwise)
    let timeout: Error | undefined;
    const timer = setTimeout(() => {
      timeout = new Error(`${method} ${path}: no answer from ${this.url.host} within ${ms} ms`);
      timeout.name = 'TimeoutError';
      ctl.abort(timeout);
    }, ms);
    const caller = opts.signal;
    const onAbort = () => ctl.abort(caller?.reason);
    if (caller?.aborted) onAbort();
    else caller?.addEventListener('abort', onAbort, { once: true });
    try {
      const res = await this.open(method, full, { body, contentType: opts.contentType, signal: ctl.signal });
      const chunks: Buffer[] = [];
      for await (const chunk of res) chunks.push(chunk as Buffer);
      const text = Buffer.concat(chunks).toString('utf8');
      const code = res.statusCode ?? 0;
      if (code < 200 || code >= 300) throw new KubeApiError(code, text, `${method} ${path}`);
      return (text ? JSON.parse(text) : undefined) as T;
    } catch (err) {
      throw timeout !== undefined && ctl.signal.reason === timeout ? timeout : err;
    } finally {
      clearTimeout(timer);
      caller?.removeEventListener('abort', onAbort);
    }
  }

  get<T = unknown>(path: string, opts?: RequestOptions): Promise<T> {
    return this.request<T>('GET', path, opts);
  }

  /**
   * A watch: `onEvent` for every event, in order. Resolves when the server ends the stream;
   * rejects with a KubeApiError when it refuses the watch (410 Gone among them), or with the
   * network error that broke it.
   */
  async watch(
    path: string,
    onEvent: (type: WatchEventType, object: unknown) => void,
    opts: WatchOptions = {},
  ): Promise<void> {
    const full = withQuery(path, { ...opts.query, watch: true });
    const idle: { error?: Error } = {};
    try {
      await this.streamEvents(full, path, onEvent, opts, idle);
    } catch (err) {
      throw idle.error ?? err;
    }
  }

  private async streamEvents(
    full: string,
    path: string,
    onEvent: (type: WatchEventType, object: unknown) => void,
    opts: WatchOptions,
    idle: { error?: Error },
  ): Promise<void> {
    // its own connection: a pooled one that went dark (a firewall now dropping our packets) would
    // swallow the request and leave the watch waiting for a first byte that never comes
    const res = await this.open('GET', full, { signal: opts.signal, idleMs: opts.idleMs, idle, fresh: true });
    const code = res.statusCode ?? 0;
    if (code !== 200) {
      const chunks: Buffer[] = [];
      for await (const chunk of res) chunks.push(chunk as Buffer);
      throw new KubeApiError(code, Buffer.concat(chunks).toString('utf8'), `watch ${path}`);
    }
    opts.onOpen?.();
    res.setEncoding('utf8');
    // 'data' handlers, not for-await: an idle watch would keep its last chunk (a whole ConfigMap
    // event) referenced from the suspended loop, one per watch
    await new Promise<void>((resolve, reject) => {
      let pending = '';
      const emit = (line: string) => {
        if (!line.trim()) return;
        const ev = JSON.parse(line) as { type: WatchEventType; object: unknown };
        onEvent(ev.type, ev.object);
      };
      res.on('data', (chunk: string) => {
        try {
          pending += chunk;
          let nl = pending.indexOf('\n');
          while (nl >= 0) {
            const line = pending.slice(0, nl);
            pending = pending.slice(nl + 1);
            emit(line);
            nl = pending.indexOf('\n');
          }
        } catch (err) {
          res.destroy();
          reject(err);
        }
      });
      res.on('end', () => {
        try {
          emit(pending);
          resolve();
        } catch (err) {
          reject(err);
        }
      });
      res.on('error', reject);
      res.on('close', () => {
        if (!res.complete) reject(new Error(`watch ${path}: connection closed`));
      });
    });
  }

  /** Closes pooled connections (open watches end through their signals). */
  close(): void {
    this.agent.destroy();
    this.watchAgent.destroy();
    this.execAgents?.pooled.destroy();
    this.execAgents?.fresh.destroy();
  }
}

/** --kubeconfig FILE, else KUBECONFIG / ~/.kube/config, else the in-cluster service account. */
export function loadKubeClient(file?: string): KubeClient {
  return new KubeClient(loadConnection(file));
}

/** The pod's namespace (service account), else the kubeconfig context's namespace, else fallback. */
export function defaultNamespace(client: KubeClient | undefined, fallback: string): string {
  try {
    const ns = readFileSync(join(SA_DIR, 'namespace'), 'utf8').trim();
    if (ns) return ns;
  } catch {
    // not in a pod
  }
  return client?.namespace || fallback;
}
