// The relay config the benchmark serves: tenant `bench` owns `bench.test`, one route
// `*@bench.test` forwarding to the sink without TLS. Shape: relay/config/schema.json.
import { createHash } from 'node:crypto';

export interface BenchRelayConfig {
  apiVersion: 'relay.mailplus.io/v1alpha1';
  kind: 'RelayConfig';
  hash: string;
  tenants: unknown[];
}

export function benchRelayConfig(sinkPort: number, sinkHost = '127.0.0.1'): BenchRelayConfig {
  const doc = {
    apiVersion: 'relay.mailplus.io/v1alpha1' as const,
    kind: 'RelayConfig' as const,
    tenants: [
      {
        name: 'bench',
        policy: 'bench/bench',
        domains: ['bench.test'],
        clientCIDRs: [],
        requireTLS: false,
        limits: { maxMessageSize: 64 * 1024 * 1024 },
        routes: [
          {
            name: 'bench/all',
            priority: 0,
            recipients: ['*@bench.test'],
            senders: [],
            action: {
              forward: { upstreams: [{ host: sinkHost, port: sinkPort, tls: 'none', verify: false }] },
            },
          },
        ],
      },
    ],
  };
  return { ...doc, hash: localHashConfig(doc) };
}

/**
 * TEMPORARY, local to the benchmark: replace with the shared `hashConfig` from relay/config/
 * once it exists. sha256 over the canonical JSON (object keys sorted recursively, no
 * whitespace) of the document without `hash`.
 */
export function localHashConfig(docWithoutHash: object): string {
  return `sha256:${createHash('sha256').update(canonicalJson(docWithoutHash)).digest('hex')}`;
}

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}
