// /metrics, /healthz (the event loop answers), /readyz (every informer has synced).
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { createProbeServer } from '../platform/probe-http.ts';

export interface ProbeSource {
  registry: Registry;
  ready(): boolean;
}

export async function startProbeServer(
  source: ProbeSource,
  listen: { host: string; port: number },
): Promise<{ address: AddressInfo; close(): Promise<void> }> {
  const server = createProbeServer({
    registry: source.registry,
    ready: () => source.ready(),
    notReadyText: 'not ready: informers not synced',
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    address: server.address() as AddressInfo,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
