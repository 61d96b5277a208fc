import { TRACE_STORE_ENV } from '../../relay/trace/open.ts';
import { CliError } from '../errors.ts';
import { parseFlags, str } from '../flags.ts';
import { formsOf, openStoreFromFlags, readMasterKey, storeFlagSpec } from './trace.ts';

const HELP = `Usage: mailplus erase --address ADDR [options]

Erasure request: deletes every message-trace entry about ADDR, in any role (sender or recipient),
including entries that store it as a tenant's pseudonym (give the master key), and the captures
of those transactions. Reports what was deleted, per tenant. An entry is deleted whole, so the
other addresses of an erased transaction go with it.

The deleted rows are then scrubbed from the database files: SQLite overwrites them, rebuilds the
file (VACUUM) and truncates its WAL; PostgreSQL rewrites the trace tables (VACUUM FULL, which locks
them for as long as that takes) and asks for a CHECKPOINT. What the database keeps for a while
(PostgreSQL WAL segments, backups) is printed under "still held". Exits 1 when the scrub failed:
the entries are deleted then, and running the same erase again finishes the job.

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
    const { disk, ...deleted } = report;
    if (output === 'json') {
      process.stdout.write(
        `${JSON.stringify({ address: address.trim().toLowerCase(), pseudonymsSearched: !!masterKey, deleted, total, totalCaptures, disk }, null, 2)}\n`,
      );
    } else {
      const lines = [`erased ${address.trim().toLowerCase()}: ${total} entries, ${totalCaptures} captures`];
      for (const t of Object.keys(deleted.entries).sort())
        lines.push(
          `  tenant ${t || '(none)'}: ${deleted.entries[t]} entries, ${deleted.captures[t] ?? 0} captures`,
        );
      if (!masterKey) lines.push('  (pseudonymised entries not searched: give --pseudonymize-key-file)');
      lines.push(`  on disk: ${disk.done.join('; ') || 'nothing done'}`);
      for (const r of disk.remains) lines.push(`  still held: ${r}`);
      process.stdout.write(`${lines.join('\n')}\n`);
    }
    if (!disk.scrubbed) {
      process.stderr.write(
        'mailplus erase: the entries are deleted, but the database files may still hold their bytes (see above); run the same erase again\n',
      );
      return 1;
    }
    return 0;
  } finally {
    await store.close();
  }
}
