import http from 'node:http';
import type { Registry } from 'prom-client';

export interface AdminSource {
  registry: Registry;
  /** A config is loaded and the relay is not draining. */
  ready(): boolean;
  config(): { hash: string | null; generation: number; loadedAt: string | null };
}

/**
 * /metrics (Prometheus), /healthz (200 while the event loop answers), /readyz (200 only with a
 * config loaded and not draining), /config ({hash, generation, loadedAt}: what the operator reads
 * to learn which config a relay serves).
 */
export function createAdminServer(source: AdminSource): http.Server {
  return http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'method not allowed\n');
    switch (url) {
      case '/metrics':
        source.registry.metrics().then(
          (text) => send(200, source.registry.contentType, text),
          (err: Error) => send(500, 'text/plain', `metrics failed: ${err.message}\n`),
        );
        return;
      case '/healthz':
        return send(200, 'text/plain', 'ok\n');
      case '/readyz':
        return source.ready() ? send(200, 'text/plain', 'ready\n') : send(503, 'text/plain', 'not ready\n');
      case '/config':
        return send(200, 'application/json', `${JSON.stringify(source.config())}\n`);
      default:
        return send(404, 'text/plain', 'not found\n');
    }
  });
}
