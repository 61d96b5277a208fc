// `mailplus operator`: flags → startOperator + the probe/metrics server; SIGTERM stops gracefully
// (informers stopped, leader Lease released so a standby takes over at once); losing leadership
// exits non-zero at once (fail-stop, like controller-runtime).
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import {
  DEFAULT_CONFIGMAP_NAME,
  DEFAULT_LEASE_NAME,
  DEFAULT_NAMESPACE,
  DEFAULT_RELAY_SELECTOR,
} from '../../contract/kube.ts';
import { DEFAULT_TENANT_BUDGETS, type TenantBudgets } from '../../operator/compile/budgets.ts';
import { startProbeServer } from '../../operator/http.ts';
import { startOperator } from '../../operator/operator.ts';
import { DEFAULT_RELAY_PORT } from '../../operator/relay-reports.ts';
import { defaultNamespace, loadKubeClient } from '../../platform/kube/client.ts';
import { createLogger } from '../../platform/log.ts';
import { CliError } from '../errors.ts';
import { type HostPort, parseByteSize, parseDurationMs, parseFlags, parseHostPort, str } from '../flags.ts';

const help = `Usage: mailplus operator [options]

Reconciles TenantPolicy and MailRoute resources into the relay fleet's config: compiles them,
publishes the result to a ConfigMap (server-side apply), and writes each resource's status
(Accepted, ResolvedRefs, Programmed, Ready) and Events. Relays follow the ConfigMap with
mailplus relay --configmap; the operator asks each ready relay pod which config it serves
(GET /config on its admin port) for Programmed. Relays need no write access to the API.

Options:
  --kubeconfig FILE               kubeconfig (default: KUBECONFIG, ~/.kube/config, or in-cluster)
  --namespace NS                  operator namespace: ConfigMap, leader Lease, relay pods
                                  (default: the pod's namespace, else mailplus-system)
  --configmap NAME                relay-config ConfigMap (default mailplus-relay-config)
  --leader-elect[=true|false]     run leader election on a Lease (default true; --no-leader-elect)
  --lease-name NAME               leader Lease name (default mailplus-operator)
  --identity ID                   leader identity (default HOSTNAME_random)
  --metrics-listen HOST:PORT      /metrics /healthz /readyz (default :8080)
  --relay-selector SEL            label selector of the relay pods in --namespace
                                  (default app.kubernetes.io/component=relay)
  --relay-port NAME|NUMBER        relay admin port: container port name or number (default admin)
  --relay-scrape-interval DUR     how often each relay is asked for its config hash (default 10s;
                                  after a publish, every 250ms until it serves the new one)
  --relay-scrape-timeout DUR      deadline of one such request (default 2s)
  --resync DURATION               level-triggered full resync and informer staleness check (default 10m)
  --max-concurrent-reconciles N   status writers in parallel (default 4)
  --batch-window DURATION         at most one compile starts per window: a burst compiles about
                                  once per window, a lone change at once (default 100ms)
  --config-shards N               spread tenants over N shard ConfigMaps (CONFIGMAP-shard-0..N-1)
                                  named by an index in CONFIGMAP; fixed at install time, the
                                  relays' RBAC must name every shard (default 1: one ConfigMap)
  --tenant-max-routes N           MailRoutes published per tenant (default 1000)
  --tenant-max-patterns N         recipient + sender patterns per tenant (default 10000)
  --tenant-max-config-bytes SIZE  JSON bytes of a tenant's relay config (default 512Ki)
                                  A tenant over a budget keeps its previously published config and
                                  its resources say Accepted=False, reason TenantBudgetExceeded.
`;

export interface OperatorFlags {
  kubeconfig?: string;
  namespace?: string;
  configMapName: string;
  leaderElect: boolean;
  leaseName: string;
  identity: string;
  metricsListen: HostPort;
  relaySelector: string;
  relayPort: string | number;
  relayScrapeIntervalMs: number;
  relayScrapeTimeoutMs: number;
  resyncMs: number;
  maxConcurrentReconciles: number;
  batchWindowMs: number;
  configShards: number;
  tenantBudgets: TenantBudgets;
}

function wholeNumber(value: string | undefined, flag: string, def: number, max: number): number {
  if (value === undefined) return def;
  const n = Number(value);
  if (!/^[0-9]+$/.test(value) || n < 1 || n > max)
    throw new CliError(`${flag} ${value}: must be a whole number from 1 to ${max}`);
  return n;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

/** Takes --leader-elect[=true|false] and --no-leader-elect out of argv (parseArgs has no =false form). */
function leaderElectFlag(argv: string[]): { leaderElect: boolean; rest: string[] } {
  let leaderElect = true;
  const rest: string[] = [];
  for (const a of argv) {
    if (/^--relay-lease-(selector|namespace)\b/.test(a)) {
      throw new CliError(
        `${a.split('=')[0]} was removed: relays no longer write report Leases; the operator reads each relay pod's /config (see --relay-selector, --relay-port)`,
      );
    }
    const m = /^--(no-)?leader-elect(?:=(.*))?$/.exec(a);
    if (!m) {
      rest.push(a);
      continue;
    }
    if (m[1]) leaderElect = false;
    else if (m[2] === undefined || m[2] === 'true') leaderElect = true;
    else if (m[2] === 'false') leaderElect = false;
    else throw new CliError(`--leader-elect=${m[2]}: use true or false`);
  }
  return { leaderElect, rest };
}

const OPTIONS = {
  kubeconfig: { type: 'string' },
  namespace: { type: 'string' },
  configmap: { type: 'string' },
  'lease-name': { type: 'string' },
  identity: { type: 'string' },
  'metrics-listen': { type: 'string' },
  'relay-selector': { type: 'string' },
  'relay-port': { type: 'string' },
  'relay-scrape-interval': { type: 'string' },
  'relay-scrape-timeout': { type: 'string' },
  resync: { type: 'string' },
  'max-concurrent-reconciles': { type: 'string' },
  'batch-window': { type: 'string' },
  'config-shards': { type: 'string' },
  'tenant-max-routes': { type: 'string' },
  'tenant-max-patterns': { type: 'string' },
  'tenant-max-config-bytes': { type: 'string' },
} as const;

type Values = Partial<Record<keyof typeof OPTIONS, string | boolean | string[]>>;

/** --namespace, --configmap, --lease-name: Kubernetes names, checked before anything is contacted. */
function nameFlags(values: Values): Pick<OperatorFlags, 'namespace' | 'configMapName' | 'leaseName'> {
  const configMapName = str(values.configmap) ?? DEFAULT_CONFIGMAP_NAME;
  if (!DNS_SUBDOMAIN.test(configMapName))
    throw new CliError(`--configmap ${configMapName}: not a valid ConfigMap name (lower-case DNS subdomain)`);
  const namespace = str(values.namespace);
  if (namespace !== undefined && !DNS_LABEL.test(namespace))
    throw new CliError(`--namespace ${namespace}: not a valid namespace name`);
  const leaseName = str(values['lease-name']) ?? DEFAULT_LEASE_NAME;
  if (!DNS_SUBDOMAIN.test(leaseName)) throw new CliError(`--lease-name ${leaseName}: not a valid Lease name`);
  return { namespace, configMapName, leaseName };
}

/** --relay-selector, --relay-port, --relay-scrape-interval, --relay-scrape-timeout. */
function relayFlags(
  values: Values,
): Pick<OperatorFlags, 'relaySelector' | 'relayPort' | 'relayScrapeIntervalMs' | 'relayScrapeTimeoutMs'> {
  const relaySelector = str(values['relay-selector']) ?? DEFAULT_RELAY_SELECTOR;
  if (relaySelector.trim() === '')
    throw new CliError(
      '--relay-selector must not be empty: it would make every pod of the namespace a relay',
    );
  const portText = str(values['relay-port']) ?? DEFAULT_RELAY_PORT;
  const relayPort = /^\d+$/.test(portText) ? Number(portText) : portText;
  if (typeof relayPort === 'number' ? relayPort < 1 || relayPort > 65535 : !DNS_LABEL.test(relayPort))
    throw new CliError(`--relay-port ${portText}: use a port number (1-65535) or a container port name`);
  const relayScrapeIntervalMs = parseDurationMs(
    str(values['relay-scrape-interval']) ?? '10s',
    '--relay-scrape-interval',
  );
  const relayScrapeTimeoutMs = parseDurationMs(
    str(values['relay-scrape-timeout']) ?? '2s',
    '--relay-scrape-timeout',
  );
  if (relayScrapeIntervalMs < 1000) throw new CliError('--relay-scrape-interval must be at least 1s');
  if (relayScrapeTimeoutMs < 100 || relayScrapeTimeoutMs > relayScrapeIntervalMs)
    throw new CliError('--relay-scrape-timeout must be at least 100ms and at most --relay-scrape-interval');
  return { relaySelector, relayPort, relayScrapeIntervalMs, relayScrapeTimeoutMs };
}

/** --tenant-max-routes, --tenant-max-patterns, --tenant-max-config-bytes. */
function tenantBudgetFlags(values: Values): TenantBudgets {
  return {
    maxRoutes: wholeNumber(
      str(values['tenant-max-routes']),
      '--tenant-max-routes',
      DEFAULT_TENANT_BUDGETS.maxRoutes,
      10_000_000,
    ),
    maxPatterns: wholeNumber(
      str(values['tenant-max-patterns']),
      '--tenant-max-patterns',
      DEFAULT_TENANT_BUDGETS.maxPatterns,
      100_000_000,
    ),
    maxBytes:
      str(values['tenant-max-config-bytes']) === undefined
        ? DEFAULT_TENANT_BUDGETS.maxBytes
        : parseByteSize(str(values['tenant-max-config-bytes']) as string, '--tenant-max-config-bytes'),
  };
}

/** Parses the operator's flags; throws CliError naming the flag. Returns undefined for --help. */
export function parseOperatorFlags(argv: string[]): OperatorFlags | undefined {
  const { leaderElect, rest } = leaderElectFlag(argv);
  const { values, help: shown } = parseFlags(rest, OPTIONS, help);
  if (shown) return undefined;
  const names = nameFlags(values);
  const workers = Number(str(values['max-concurrent-reconciles']) ?? '4');
  if (!Number.isInteger(workers) || workers < 1 || workers > 64)
    throw new CliError('--max-concurrent-reconciles must be a whole number from 1 to 64');
  const resyncMs = parseDurationMs(str(values.resync) ?? '10m', '--resync');
  const relay = relayFlags(values);
  if (resyncMs < 1000) throw new CliError('--resync must be at least 1s');
  return {
    kubeconfig: str(values.kubeconfig),
    ...names,
    leaderElect,
    identity: str(values.identity) ?? `${hostname()}_${randomUUID().slice(0, 8)}`,
    metricsListen: parseHostPort(str(values['metrics-listen']) ?? ':8080', '--metrics-listen'),
    ...relay,
    resyncMs,
    maxConcurrentReconciles: workers,
    batchWindowMs: parseDurationMs(str(values['batch-window']) ?? '100ms', '--batch-window'),
    configShards: wholeNumber(str(values['config-shards']), '--config-shards', 1, 1024),
    tenantBudgets: tenantBudgetFlags(values),
  };
}

export async function runOperator(argv: string[]): Promise<number> {
  const flags = parseOperatorFlags(argv);
  if (!flags) return 0;
  const logger = createLogger();
  let client: ReturnType<typeof loadKubeClient>;
  try {
    client = loadKubeClient(flags.kubeconfig);
  } catch (err) {
    throw new CliError((err as Error).message, 1);
  }
  const namespace =
    flags.namespace ?? defaultNamespace(flags.kubeconfig ? client : undefined, DEFAULT_NAMESPACE);
  const operator = await startOperator({
    client,
    namespace,
    configMapName: flags.configMapName,
    identity: flags.identity,
    leaderElect: flags.leaderElect,
    leaseName: flags.leaseName,
    relaySelector: flags.relaySelector,
    relayPort: flags.relayPort,
    relayScrape: { intervalMs: flags.relayScrapeIntervalMs, timeoutMs: flags.relayScrapeTimeoutMs },
    resyncMs: flags.resyncMs,
    maxConcurrentReconciles: flags.maxConcurrentReconciles,
    batchWindowMs: flags.batchWindowMs,
    configShards: flags.configShards,
    tenantBudgets: flags.tenantBudgets,
    logger,
    onLeadershipLost: () => {
      // fail-stop: in-flight writes are already aborted; a fresh process starts as a follower
      logger.error('exiting: leadership lost', { identity: flags.identity });
      setImmediate(() => process.exit(1));
    },
  });
  let probes: Awaited<ReturnType<typeof startProbeServer>>;
  try {
    probes = await startProbeServer(
      { registry: operator.metrics.registry, ready: operator.ready },
      flags.metricsListen,
    );
  } catch (err) {
    await operator.stop();
    throw new CliError(`--metrics-listen: cannot listen: ${(err as Error).message}`, 1);
  }
  logger.info('operator started', {
    identity: flags.identity,
    namespace,
    configmap: flags.configMapName,
    configShards: flags.configShards,
    leaderElect: flags.leaderElect,
    metrics: `${probes.address.address}:${probes.address.port}`,
  });
  return new Promise((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) {
        logger.warn('second signal, exiting now', { signal });
        process.exit(1);
      }
      stopping = true;
      logger.info('stopping', { signal });
      void operator
        .stop()
        .then(() => probes.close())
        .then(() => resolve(0));
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}
