import { TRACE_STORE_ENV } from '../../relay/trace/open.ts';
import { CliError } from '../errors.ts';
import { parseFlags, str } from '../flags.ts';
import { formsOf, openStoreFromFlags, readMasterKey, storeFlagSpec } from './trace.ts';

const HELP = `Usage: mailplus erase --address ADDR [options]

Erasure request: deletes every message-trace entry about ADDR, in any role (sender or recipient),
including entries that store it as a tenant's pseudonym (give the master key), and the captures
of those transactions. Reports what was deleted, per tenant. An entry is deleted whole, so the
other addresses of an erased transaction go with it.

Options:
  --store STORE                 sqlite:PATH or postgres://USER@HOST/DB (default: env ${TRACE_STORE_ENV})
  --address ADDR                the address to erase (required)
  --pseudonymize-key-file FILE  the relays' master key, to erase per-tenant pseudonyms of ADDR too
  -o, --output json|text        default text
`;

export async function runErase(argv: string[]): Promise<number> {
  const { values, help } = parseFlags(
    argv,
    { ...storeFlagSpec, address: { type: 'string' }, output: { type: 'string', short: 'o' } },
    HELP,
  );
  if (help) return 0;
  const address = str(values.address);
  if (!address) throw new CliError(`--address is required\n\n${HELP}`);
  const output = str(values.output) ?? 'text';
  if (output !== 'json' && output !== 'text') throw new CliError('-o: use json or text');
  const masterKey = readMasterKey(values);
  const store = await openStoreFromFlags(values);
  try {
    const forms = await formsOf(store, address, masterKey);
    const report = await store.erase(forms);
    const total = Object.values(report.entries).reduce((a, b) => a + b, 0);
    const totalCaptures = Object.values(report.captures).reduce((a, b) => a + b, 0);
    if (output === 'json') {
      process.stdout.write(
        `${JSON.stringify({ address: address.trim().toLowerCase(), pseudonymsSearched: !!masterKey, deleted: report, total, totalCaptures }, null, 2)}\n`,
      );
    } else {
      const lines = [`erased ${address.trim().toLowerCase()}: ${total} entries, ${totalCaptures} captures`];
      for (const t of Object.keys(report.entries).sort())
        lines.push(
          `  tenant ${t || '(none)'}: ${report.entries[t]} entries, ${report.captures[t] ?? 0} captures`,
        );
      if (!masterKey) lines.push('  (pseudonymised entries not searched: give --pseudonymize-key-file)');
      process.stdout.write(`${lines.join('\n')}\n`);
    }
    return 0;
  } finally {
    await store.close();
  }
}
