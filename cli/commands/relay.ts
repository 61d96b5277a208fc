import { readFileSync } from 'node:fs';
import { parseRelayConfig } from '../../contract/config/load.ts';
import type { RelayConfig } from '../../contract/config/types.gen.ts';
import { watchConfigFile } from '../../relay/config/file-watch.ts';
import { buildRoutingTable } from '../../relay/routing/table.ts';
import { CliError } from '../errors.ts';
import { parseFlags, str } from '../flags.ts';
import { readRelayFlags, relayFlagHelp, relayFlagSpec } from '../relay-flags.ts';
import { startRelayFromFlags, untilStopped } from '../run-relay.ts';

const help = `Usage: mailplus relay --config FILE [relay options]
       mailplus relay --configmap NAMESPACE/NAME [--kubeconfig FILE] [relay options]

Runs the SMTP relay from a relay config: a file (what mailplus render -o json produces) or the
ConfigMap the operator publishes. A --config file that is missing or invalid at start-up is an
error (exit 1). Either source is followed: a valid new version applies to new
transactions at once (file: within a second; ConfigMap: through an API watch, no kubelet delay),
transactions in flight finish on the config they started with, and an invalid version is refused
(logged, metric mailplus_relay_config_last_reload_successful=0) while the last good one stays.
When the operator shards the config (--config-shards), NAME holds an index and the relay follows
every shard ConfigMap it names (NAME-shard-<n>), serving their union once all match the index.
With --configmap the relay only reads the API (its ConfigMap): it writes nothing there. The
operator learns which config it serves from its admin endpoint (GET /config) for Programmed.

Options:
  --config FILE                 relay-config JSON
  --configmap NAMESPACE/NAME    follow this ConfigMap through the Kubernetes API instead
  --kubeconfig FILE             kubeconfig for --configmap (default: KUBECONFIG, ~/.kube/config,
                                or the pod's service account)
${relayFlagHelp}`;

export interface ConfigMapRef {
  namespace: string;
  name: string;
}

export function parseConfigMapRef(value: string, flag = '--configmap'): ConfigMapRef {
  const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$/.exec(value);
  if (!m)
    throw new CliError(
      `${flag} ${value}: expected NAMESPACE/NAME (e.g. mailplus-system/mailplus-relay-config)`,
    );
  return { namespace: m[1], name: m[3] };
}

/** The config file the relay starts from, fully checked (schema, hash, routing table). */
export function readStartupConfig(file: string): RelayConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CliError(
      `--config ${file}: cannot read it (${code ?? (err as Error).message}); give the relay-config JSON that mailplus render -o json writes`,
      1,
    );
  }
  try {
    const config = parseRelayConfig(text, file);
    buildRoutingTable(config);
    return config;
  } catch (err) {
    const m = (err as Error).message;
    throw new CliError(m.startsWith(file) ? m : `--config ${file}: ${m}`, 1);
  }
}

export async function runRelay(argv: string[]): Promise<number> {
  const { values, help: shown } = parseFlags(
    argv,
    {
      config: { type: 'string' },
      configmap: { type: 'string' },
      kubeconfig: { type: 'string' },
      ...relayFlagSpec,
    },
    help,
  );
  if (shown) return 0;
  const file = str(values.config);
  const cmFlag = str(values.configmap);
  if (file && cmFlag)
    throw new CliError('--config and --configmap are mutually exclusive: pick one config source');
  if (!file && !cmFlag)
    throw new CliError(`--config FILE or --configmap NAMESPACE/NAME is required\n\n${help}`);
  if (file && values.kubeconfig !== undefined)
    throw new CliError('--kubeconfig only applies with --configmap');
  const cm = cmFlag ? parseConfigMapRef(cmFlag) : undefined;
  const flags = readRelayFlags(values);

  // Kubernetes client code loads only for --configmap.
  let client: import('../../platform/kube/client.ts').KubeClient | undefined;
  if (cm) {
    const { loadKubeClient } = await import('../../platform/kube/client.ts');
    try {
      client = loadKubeClient(str(values.kubeconfig));
    } catch (err) {
      throw new CliError((err as Error).message, 1);
    }
  }

  // At start-up there is no last good config to fall back on: a missing or broken file is an
  // error now, not a relay that answers 451 to everyone (later changes are followed and refused).
  if (file) readStartupConfig(file);
  const relay = await startRelayFromFlags(flags);
  if (file) {
    relay.own(watchConfigFile(file, relay));
  } else if (cm && client) {
    const { followRelayConfig } = await import('../../relay/config/configmap-set.ts');
    relay.own(
      followRelayConfig(relay, {
        client,
        namespace: cm.namespace,
        name: cm.name,
        logger: relay.logger,
        metrics: relay.metrics.configWatch(cm.name),
      }),
    );
  }
  const { smtp, admin } = relay.address();
  relay.logger.info('relay listening', {
    smtp: `${smtp.address}:${smtp.port}`,
    admin: admin ? `${admin.address}:${admin.port}` : null,
    config: file ?? `configmap/${cm?.namespace}/${cm?.name}`,
  });
  return untilStopped(relay, flags.drainTimeoutMs);
}
