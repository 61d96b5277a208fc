import type { Server } from 'node:http';
import type { Registry } from 'prom-client';
import { http } from './node-http.ts';

/** What the probe endpoints of a Mail-Plus process (relay or operator) serve. */
export interface ProbeSource {
  registry: Registry;
  /** Ready for traffic (relay: a config is loaded and not draining; operator: informers synced). */
  ready(): boolean;
  /** Text of the 503 when not ready. */
  notReadyText?: string;
  /** Extra JSON endpoints, path → body. */
  json?: Record<string, () => unknown>;
}

/**
 * An HTTP server with /metrics (Prometheus), /healthz (200 while the event loop answers),
 * /readyz, and the source's JSON endpoints.
 */
export function createProbeServer(source: ProbeSource): Server {
  return http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'method not allowed\n');
    if (url === '/metrics') {
      source.registry.metrics().then(
        (text) => send(200, source.registry.contentType, text),
        (err: Error) => send(500, 'text/plain', `metrics failed: ${err.message}\n`),
      );
      return;
    }
    if (url === '/healthz') return send(200, 'text/plain', 'ok\n');
    if (url === '/readyz') {
      return source.ready()
        ? send(200, 'text/plain', 'ready\n')
        : send(503, 'text/plain', `${source.notReadyText ?? 'not ready'}\n`);
    }
    const json = source.json?.[url];
    if (json) return send(200, 'application/json', `${JSON.stringify(json())}\n`);
    return send(404, 'text/plain', 'not found\n');
  });
}
