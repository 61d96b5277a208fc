import { formatResourceError } from '../../operator/resources/types.ts';
import { compileFiles } from '../compile-files.ts';
import { list, parseFlags } from '../flags.ts';

const help = `Usage: mailplus validate -f PATH [-f PATH...] [--strict]

Checks MailRoute and TenantPolicy files (schema, semantics, and how they compile together: tenant
ownership, domain claims, conflicts, Service references). Prints one line per problem as
FILE: KIND NAMESPACE/NAME: FIELD: MESSAGE and exits 1 on any error (with --strict, also on warnings).

Options:
  -f, --filename PATH   a file, a multi-document file or a directory (repeatable)
  --strict              treat warnings (conflicts, unresolved Services) as errors
`;

export async function runValidate(argv: string[]): Promise<number> {
  const { values, help: shown } = parseFlags(
    argv,
    { filename: { type: 'string', short: 'f', multiple: true }, strict: { type: 'boolean' } },
    help,
  );
  if (shown) return 0;
  const paths = list(values.filename);
  const { problems, resources } = await compileFiles(paths);
  const checked = resources.filter((r) => r.kind !== 'Service').length;
  if (checked === 0 && problems.length === 0) {
    // Nothing to check is not a pass: a wrong path or a file of other kinds would look green.
    problems.push({
      file: paths.join(', '),
      resource: '',
      field: '',
      message: 'no MailRoute or TenantPolicy found (documents of other kinds are skipped)',
      severity: 'error',
    });
  }
  for (const p of problems) {
    process.stdout.write(`${p.severity}: ${formatResourceError(p)}\n`);
  }
  const errors = problems.filter((p) => p.severity === 'error').length;
  const warnings = problems.length - errors;
  process.stderr.write(`${checked} resource(s) checked: ${errors} error(s), ${warnings} warning(s)\n`);
  return errors > 0 || (values.strict && warnings > 0) ? 1 : 0;
}
