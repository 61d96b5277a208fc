import { isIP } from 'node:net';
import type { RelayConfig } from '../../contract/config/types.gen.ts';
import { normalizeDomain } from '../../contract/grammar/match.ts';
import { DEFAULT_CONFIGMAP_NAME, DEFAULT_NAMESPACE } from '../../contract/kube.ts';
import { formatResourceError } from '../../operator/resources/types.ts';
import { parseDnsServer } from '../../relay/dns/resolver.ts';
import {
  type EnvelopeExplanation,
  explainEnvelope,
  formatExplanation,
  formatReply,
  REPLIES,
} from '../../relay/routing/decide.ts';
import { buildRoutingTable } from '../../relay/routing/table.ts';
import { joinsTransaction, transactionScope } from '../../relay/routing/transaction-scope.ts';
import { compileFiles } from '../compile-files.ts';
import { CliError } from '../errors.ts';
import { list, parseFlags, str } from '../flags.ts';
import { explainAuthentication, formatAuthentication } from '../route-authentication.ts';
import { explainDnsbl, formatDnsbl } from '../route-dnsbl.ts';

const help = `Usage: mailplus route -f PATH [-f PATH...] --to ADDR [--to ADDR...] [--from ADDR]
                     [--client-ip IP [--dns-server IP[:PORT]]] [--tls] [-o text|json]
       mailplus route --cluster [--kubeconfig FILE] [--configmap NS/NAME] --to ADDR ...

Explains what the relay would do with an envelope, like exim -bt or postmap -q: for each
recipient the owning tenant, the route that wins, the address it is forwarded as when the route
rewrites recipients (forward.rewrite), and its upstreams in the order they are tried, or the exact
SMTP reply the relay would give. Recipients that route to a different upstream set
than the first accepted one are shown with the 452 the relay answers (they go in their own
transaction). Rate limits are per client and time, so they are not simulated.

Options:
  -f, --filename PATH   a file, a multi-document file or a directory (repeatable)
  --cluster             answer from the config the operator published (the live ConfigMap)
                        instead of files
  --kubeconfig FILE     with --cluster (default: KUBECONFIG, ~/.kube/config, or in-cluster)
  --configmap NS/NAME   with --cluster (default mailplus-system/mailplus-relay-config)
  --to ADDR             envelope recipient (repeatable)
  --from ADDR           envelope sender, or <> (default: the null sender <>, said in the output)
  --client-ip IP        the client's address, checked against the tenant's clientCIDRs
                        (default: not checked)
  --dns-server IP[:PORT]
                        with --client-ip: look the client up in the tenants' DNS blocklists
                        (TenantPolicy spec.dnsbl) through this server, as the relay would at RCPT
                        (repeatable; default: the checks are listed, not queried). Relay-wide
                        blocklists (relay --dnsbl-site) are relay flags and not shown
                        and evaluate SPF for --from as the relay would for a tenant with sender
                        authentication (TenantPolicy spec.authentication; DKIM, ARC and DMARC need
                        the message and are listed only)
  --tls                 the session uses TLS (default: plaintext, checked against requireTLS)
  -o, --output FORMAT   text (default) or json
`;

const DEFAULT_CONFIGMAP = `${DEFAULT_NAMESPACE}/${DEFAULT_CONFIGMAP_NAME}`;

export const NULL_SENDER_NOTE =
  'sender: <> (the null sender, because no --from was given; routes with sender patterns see "<>")';

/**
 * --to/--from must be envelope addresses (user@domain, the domain a DNS name or an address literal),
 * so that a mistyped flag is not explained as if it were a domain; "postmaster" alone is a valid
 * recipient (RFC 5321 §4.5.1).
 */
export function checkAddressFlag(flag: string, value: string): void {
  const a = value.trim().replace(/^<(.*)>$/, '$1');
  if (flag === '--to' && a.toLowerCase() === 'postmaster') return;
  const at = a.lastIndexOf('@');
  const domain = a.slice(at + 1);
  const ok = at > 0 && !/[\s<>]/.test(a) && (/^\[[^\]]+\]$/.test(domain) || normalizeDomain(domain).ok);
  if (!ok) throw new CliError(`${flag}: "${value}" is not an address (expected user@example.com)`);
}

/**
 * The relay config the operator published, read (and hash-verified) from the ConfigMap; when it
 * holds a shard index, the union of the shards it names, as a relay serves it.
 */
async function readClusterConfig(kubeconfig: string | undefined, ref: string): Promise<RelayConfig> {
  const { parseConfigMapRef } = await import('./relay.ts');
  const { namespace, name } = parseConfigMapRef(ref);
  const { apiErrorText, loadKubeClient } = await import('../../platform/kube/client.ts');
  const { decodeRelayConfigMap } = await import('../../contract/config/configmap.ts');
  const { isShardOf, mergeShards } = await import('../../contract/config/shards.ts');
  let client: import('../../platform/kube/client.ts').KubeClient;
  try {
    client = loadKubeClient(kubeconfig);
  } catch (err) {
    throw new CliError((err as Error).message, 1);
  }
  const read = async (cmName: string): Promise<RelayConfig> => {
    let cm: import('../../platform/kube/objects.ts').ConfigMap;
    try {
      cm = await client.get(
        `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps/${encodeURIComponent(cmName)}`,
      );
    } catch (err) {
      throw new CliError(`cannot read ConfigMap ${namespace}/${cmName}: ${apiErrorText(err)}`, 1);
    }
    try {
      return decodeRelayConfigMap(cm);
    } catch (err) {
      throw new CliError((err as Error).message, 1);
    }
  };
  const index = await read(name);
  if (!index.shards) return index;
  const docs = new Map<string, RelayConfig>();
  for (const s of index.shards) {
    if (!isShardOf(name, s.configMap))
      throw new CliError(
        `ConfigMap ${namespace}/${name}: the shard index names ${s.configMap}, not a shard of ${name}`,
        1,
      );
    docs.set(s.configMap, await read(s.configMap));
  }
  const merged = mergeShards(index, docs);
  if (!merged.ok)
    throw new CliError(
      `ConfigMap ${namespace}/${name}: shards ${merged.waitingFor.join(', ')} do not match the index (the operator is publishing); try again`,
      1,
    );
  return merged.config;
}

/**
 * Applies the relay's one-transaction-scope rule (relay/routing/transaction-scope.ts) to a
 * per-recipient explanation: the first relayed recipient sets the scope, later ones outside it get
 * the relay's 452.
 */
export function applyTransactionRule(e: EnvelopeExplanation, config: RelayConfig): EnvelopeExplanation {
  const tenants = new Map(config.tenants.map((t) => [t.name, t]));
  let held: string | undefined;
  const splitReply = formatReply(REPLIES.split());
  return {
    ...e,
    recipients: e.recipients.map((r) => {
      const tenant = r.tenant === undefined ? undefined : tenants.get(r.tenant);
      if (r.action !== 'relay' || r.upstreamKey === undefined || !tenant) return r;
      const scope = transactionScope({ upstreamKey: r.upstreamKey, tenant });
      if (joinsTransaction(held, scope)) {
        held = scope;
        return r;
      }
      return {
        ...r,
        action: 'reject' as const,
        reply: splitReply,
        reason: 'split' as never,
      };
    }),
  };
}

export async function runRoute(argv: string[]): Promise<number> {
  const { values, help: shown } = parseFlags(
    argv,
    {
      filename: { type: 'string', short: 'f', multiple: true },
      cluster: { type: 'boolean' },
      kubeconfig: { type: 'string' },
      configmap: { type: 'string' },
      to: { type: 'string', multiple: true },
      from: { type: 'string' },
      'client-ip': { type: 'string' },
      'dns-server': { type: 'string', multiple: true },
      tls: { type: 'boolean' },
      output: { type: 'string', short: 'o' },
    },
    help,
  );
  if (shown) return 0;
  const to = list(values.to);
  if (to.length === 0) throw new CliError('give at least one --to ADDR');
  for (const a of to) checkAddressFlag('--to', a);
  const givenFrom = str(values.from);
  if (givenFrom !== undefined && givenFrom !== '' && givenFrom !== '<>')
    checkAddressFlag('--from', givenFrom);
  const clientIp = str(values['client-ip']);
  if (clientIp !== undefined && isIP(clientIp) === 0)
    throw new CliError(`--client-ip: "${clientIp}" is not an IP address`);
  const dnsServers = list(values['dns-server'])
    .flatMap((v) => v.split(','))
    .filter(Boolean)
    .map((v) => {
      try {
        return parseDnsServer(v);
      } catch (err) {
        throw new CliError(`--dns-server: ${(err as Error).message}`);
      }
    });
  if (dnsServers.length > 0 && clientIp === undefined) {
    throw new CliError('--dns-server needs --client-ip (the address to look up)');
  }
  const format = str(values.output) ?? 'text';
  if (format !== 'text' && format !== 'json') throw new CliError(`-o ${format}: use text or json`);

  let config: RelayConfig;
  if (values.cluster === true) {
    if (list(values.filename).length > 0) throw new CliError('-f and --cluster are mutually exclusive');
    config = await readClusterConfig(str(values.kubeconfig), str(values.configmap) ?? DEFAULT_CONFIGMAP);
  } else {
    if (values.kubeconfig !== undefined || values.configmap !== undefined)
      throw new CliError('--kubeconfig and --configmap only apply with --cluster');
    const compiled = await compileFiles(list(values.filename));
    for (const p of compiled.problems) process.stderr.write(`${p.severity}: ${formatResourceError(p)}\n`);
    config = compiled.config;
  }
  const table = buildRoutingTable(config);
  const rawFrom = givenFrom ?? '';
  const from = rawFrom === '<>' ? '' : rawFrom;
  const withDnsbl = await explainDnsbl(
    applyTransactionRule(explainEnvelope(table, { to, from, clientIp, tls: values.tls === true }), config),
    config,
    { clientIp, dnsServers },
  );
  const explanation = {
    ...withDnsbl,
    recipients: await explainAuthentication(withDnsbl.recipients, config, { clientIp, from, dnsServers }),
  };
  // A silent default would make a route with sender patterns look broken: say what was assumed.
  const defaultedFrom = givenFrom === undefined;
  if (format === 'json') {
    const doc = defaultedFrom ? { ...explanation, fromDefaulted: true } : explanation;
    process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
  } else {
    if (defaultedFrom) process.stdout.write(`${NULL_SENDER_NOTE}\n`);
    for (const r of explanation.recipients) {
      process.stdout.write(formatExplanation({ ...explanation, recipients: [r] }));
      if (r.dnsbl) process.stdout.write(`${formatDnsbl(r.dnsbl, dnsServers.length > 0).join('\n')}\n`);
      if (r.authentication) {
        process.stdout.write(`${formatAuthentication(r.authentication, dnsServers.length > 0).join('\n')}\n`);
      }
    }
  }
  // Scripts can test a route with the exit code: 0 when every recipient would be relayed.
  return explanation.recipients.every((r) => r.action === 'relay') ? 0 : 1;
}
