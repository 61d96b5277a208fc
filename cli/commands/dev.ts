import { formatResourceError } from '../../operator/resources/types.ts';
import type { Relay } from '../../relay/relay.ts';
import { type CompiledFiles, compileFiles } from '../compile-files.ts';
import { list, parseFlags, parseHostPort, str } from '../flags.ts';
import { readRelayFlags, relayFlagHelp, relayFlagSpec } from '../relay-flags.ts';
import { startRelayFromFlags, untilStopped } from '../run-relay.ts';
import { watchPaths } from '../watch-paths.ts';
import { startSink } from './sink.ts';

const help = `Usage: mailplus dev -f PATH [-f PATH...] [relay options]

Runs Mail-Plus without Kubernetes: reads MailRoute and TenantPolicy YAML (files, multi-document
files, directories), compiles them into relay config in-process, runs the relay on it, and
recompiles and hot-reloads when a file changes. A file with an error is reported with its path,
resource and field, and the last good config stays in force until it is fixed.

Options:
  -f, --filename PATH           a file, a multi-document file or a directory (repeatable)
  --sink HOST:PORT              also run a local capture upstream there (mailplus sink) that
                                prints every message it receives: a stand-in for your mail
                                server while you try routes out
${relayFlagHelp}`;

/** One compile of the -f paths applied to the relay; returns whether it was applied. */
export async function compileAndApply(relay: Relay, paths: string[]): Promise<boolean> {
  return applyCompiled(relay, paths, await compileFiles(paths));
}

/** Reports the compile's problems; applies its config unless a file has an error. */
function applyCompiled(relay: Relay, paths: string[], { config, problems }: CompiledFiles): boolean {
  for (const p of problems) {
    relay.logger[p.severity === 'error' ? 'error' : 'warn']('resource problem', {
      file: p.file ?? null,
      resource: p.resource || null,
      field: p.field || null,
      message: p.message,
      text: formatResourceError(p),
    });
  }
  const errors = problems.filter((p) => p.severity === 'error');
  if (errors.length > 0) {
    const active = relay.configInfo().hash;
    relay.logger.error('files have errors, keeping the last good config', {
      errors: errors.length,
      activeHash: active,
    });
    relay.reportConfigError(new Error(`${errors.length} error(s) in ${paths.join(', ')}`), paths.join(','));
    return false;
  }
  return relay.applyConfig(config, paths.join(',')).ok;
}

export async function runDev(argv: string[]): Promise<number> {
  const { values, help: shown } = parseFlags(
    argv,
    { filename: { type: 'string', short: 'f', multiple: true }, sink: { type: 'string' }, ...relayFlagSpec },
    help,
  );
  if (shown) return 0;
  const paths = list(values.filename);
  const flags = readRelayFlags(values);
  // Compiled before binding ports, so unreadable input fails first.
  const first = await compileFiles(paths);
  const sinkAt = str(values.sink);
  const sink = sinkAt ? await startSink(parseHostPort(sinkAt, '--sink')) : undefined;
  const relay = await startRelayFromFlags(flags);
  applyCompiled(relay, paths, first);
  let running: Promise<unknown> = Promise.resolve();
  relay.own(
    watchPaths(paths, () => {
      // Serialise recompiles: a burst of saves applies the last state, in order.
      running = running
        .then(() => compileAndApply(relay, paths))
        .catch((err: Error) => {
          relay.logger.error('recompile failed', { error: err.message });
        });
    }),
  );
  const { smtp, admin } = relay.address();
  relay.logger.info('dev relay listening', {
    smtp: `${smtp.address}:${smtp.port}`,
    admin: admin ? `${admin.address}:${admin.port}` : null,
    watching: paths,
  });
  const code = await untilStopped(relay, flags.drainTimeoutMs);
  await sink?.close();
  return code;
}
