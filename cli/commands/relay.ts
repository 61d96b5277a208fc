import { watchConfigFile } from '../../relay/config-file-watch.ts';
import { CliError } from '../errors.ts';
import { parseFlags, str } from '../flags.ts';
import { readRelayFlags, relayFlagHelp, relayFlagSpec } from '../relay-flags.ts';
import { startRelayFromFlags, untilStopped } from '../run-relay.ts';

const help = `Usage: mailplus relay --config FILE [relay options]

Runs the SMTP relay from a relay-config file (what mailplus render -o json or the operator
produces). The file is watched: a valid new version applies to new transactions within a second,
transactions in flight finish on the config they started with, and an invalid version is refused
(logged, metric mailplus_relay_config_last_reload_successful=0) while the last good one stays.

Options:
  --config FILE                 relay-config JSON (required)
${relayFlagHelp}`;

export async function runRelay(argv: string[]): Promise<number> {
  const { values, help: shown } = parseFlags(argv, { config: { type: 'string' }, ...relayFlagSpec }, help);
  if (shown) return 0;
  const file = str(values.config);
  if (!file) throw new CliError(`--config FILE is required\n\n${help}`);
  const flags = readRelayFlags(values);
  const relay = await startRelayFromFlags(flags);
  relay.own(watchConfigFile(file, relay));
  const { smtp, admin } = relay.address();
  relay.logger.info('relay listening', {
    smtp: `${smtp.address}:${smtp.port}`,
    admin: admin ? `${admin.address}:${admin.port}` : null,
    config: file,
  });
  return untilStopped(relay, flags.drainTimeoutMs);
}
