import { renderRelayConfig } from '../../operator/compile/compile.ts';
import { formatResourceError } from '../../operator/resources/types.ts';
import { compileFiles } from '../compile-files.ts';
import { CliError } from '../errors.ts';
import { list, parseFlags, str } from '../flags.ts';

const help = `Usage: mailplus render -f PATH [-f PATH...] [-o yaml|json]

Prints the relay config compiled from MailRoute and TenantPolicy files: what the relay (mailplus
relay --config FILE) loads. Resources that are not valid are left out of the config and reported on
stderr, as the operator would report them in their status.

Options:
  -f, --filename PATH   a file, a multi-document file or a directory (repeatable)
  -o, --output FORMAT   yaml (default, for reading) or json (the relay-config file format that
                        mailplus relay --config loads; for scripts)
`;

export async function runRender(argv: string[]): Promise<number> {
  const { values, help: shown } = parseFlags(
    argv,
    { filename: { type: 'string', short: 'f', multiple: true }, output: { type: 'string', short: 'o' } },
    help,
  );
  if (shown) return 0;
  const format = str(values.output) ?? 'yaml';
  if (format !== 'json' && format !== 'yaml') throw new CliError(`-o ${format}: use json or yaml`);
  const { config, problems } = await compileFiles(list(values.filename));
  for (const p of problems) process.stderr.write(`${p.severity}: ${formatResourceError(p)}\n`);
  if (format === 'yaml') {
    const { stringify } = await import('yaml');
    process.stdout.write(stringify(config));
  } else {
    process.stdout.write(renderRelayConfig(config));
  }
  return 0;
}
