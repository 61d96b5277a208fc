// The relay config the benchmark serves: tenant `bench` owns `bench.test`, one route
// `*@bench.test` forwarding to the sink without TLS; in the verifying cells the tenant's sender
// authentication is on, as TenantPolicy spec.authentication compiles it with its defaults.
// Shape: contract/config/schema.json.
import { hashConfig } from '../../contract/config/hash.ts';

export interface BenchRelayConfig {
  apiVersion: 'relay.mailplus.io/v1alpha1';
  kind: 'RelayConfig';
  hash: string;
  tenants: unknown[];
}

/** TenantPolicy spec.authentication's default hold cap (256 KiB), as the operator compiles it. */
export const AUTH_HOLD_BYTES = 262_144;

export function benchRelayConfig(
  sinkPort: number,
  sinkHost = '127.0.0.1',
  authentication?: 'annotate' | 'enforce',
): BenchRelayConfig {
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
        ...(authentication
          ? {
              authentication: {
                mode: authentication,
                authservId: 'mailplus-sut.test',
                holdBytes: AUTH_HOLD_BYTES,
                rejectQuarantine: false,
                deferOnLookupFailure: true,
              },
            }
          : {}),
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
  return { ...doc, hash: hashConfig(doc) };
}
