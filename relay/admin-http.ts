import type http from 'node:http';
import type { Registry } from 'prom-client';
import { createProbeServer } from '../platform/probe-http.ts';

export interface AdminSource {
  registry: Registry;
  /** A config is loaded and the relay is not draining. */
  ready(): boolean;
  config(): { hash: string | null; generation: number; loadedAt: string | null };
}

/**
 * The relay's admin server: the probes plus /config ({hash, generation, loadedAt}: which config
 * this relay serves). The operator reads /config of every ready relay pod for its Programmed
 * condition, so the relay needs no write access to the Kubernetes API.
 */
export function createAdminServer(source: AdminSource): http.Server {
  return createProbeServer({
    registry: source.registry,
    ready: () => source.ready(),
    json: { '/config': () => source.config() },
  });
}
