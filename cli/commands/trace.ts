import { existsSync, readFileSync } from 'node:fs';
import { parseDuration } from '../../contract/grammar/duration.ts';
import { type StoredTraceEntry, TRACE_RESULTS } from '../../relay/trace/entry.ts';
import { openTraceStore, parseStoreLocation, TRACE_STORE_ENV } from '../../relay/trace/open.ts';
import { addressForms } from '../../relay/trace/pseudonym.ts';
import type { AddressForm, CaptureMeta, TraceQuery, TraceStore } from '../../relay/trace/store.ts';
import { CliError } from '../errors.ts';
import { parseFlags, str } from '../flags.ts';

const HELP = `Usage: mailplus trace [options]

Finds what happened to mail in the message trace (metadata only: time, transaction, tenant, route,
client IP, TLS, sender, recipients, size, upstream, result, SMTP code, duration; never content).

Options:
  --store STORE                 sqlite:PATH or postgres://USER@HOST/DB (default: env ${TRACE_STORE_ENV})
  --address ADDR                entries where ADDR is the sender or a recipient
  --tenant NAME                 entries of one tenant (its namespace)
  --since TIME|AGO              from (RFC 3339, or a duration ago: 90m, 24h, 7d)
  --until TIME|AGO              until (exclusive)
  --result RESULT               relayed | rejected | deferred | failed | abandoned
  --limit N                     at most N entries (default 1000; not applied with --export)
  -o, --output json|table       default table
  --export                      access request: JSON of everything held about --address, in any role
  --pseudonymize-key-file FILE  the relays' master key: also finds the address under the pseudonym of
                                every tenant that stores pseudonyms (spec.privacy.pseudonymize)
`;

export const storeFlagSpec = {
  store: { type: 'string' },
  'pseudonymize-key-file': { type: 'string' },
} as const;

export async function openStoreFromFlags(values: Record<string, unknown>): Promise<TraceStore> {
  const where =
    str(values.store as string | undefined) ?? (process.env[TRACE_STORE_ENV]?.trim() || undefined);
  if (!where)
    throw new CliError(
      `no trace store: give --store sqlite:PATH or postgres://… (or set ${TRACE_STORE_ENV})`,
    );
  let loc: ReturnType<typeof parseStoreLocation>;
  try {
    loc = parseStoreLocation(where);
  } catch (err) {
    throw new CliError(`--store: ${(err as Error).message}`);
  }
  // SQLite would create a new, empty store: a misspelt path would then "erase 0 entries" with
  // success while the relay's store keeps them. These commands only read or erase: it must exist.
  if (loc.kind === 'sqlite' && !existsSync(loc.path)) {
    throw new CliError(
      `no trace store at sqlite:${loc.path} (no such file); give the path the relay writes (--trace-store)`,
      1,
    );
  }
  try {
    return await openTraceStore(loc);
  } catch (err) {
    throw new CliError((err as Error).message, 1);
  }
}

export function readMasterKey(values: Record<string, unknown>): string | undefined {
  const file = str(values['pseudonymize-key-file'] as string | undefined);
  if (!file) return undefined;
  try {
    const key = readFileSync(file, 'utf8').trim();
    if (key.length < 16) throw new Error('the key must be at least 16 bytes');
    return key;
  } catch (err) {
    throw new CliError(`--pseudonymize-key-file: ${file}: ${(err as Error).message}`);
  }
}

/** Every stored form of an address: as given, and each tenant's pseudonym when the key is known. */
export async function formsOf(
  store: TraceStore,
  address: string,
  masterKey: string | undefined,
): Promise<AddressForm[]> {
  const a = address.trim();
  if (!/^[^\s@<>]+@[^\s@<>]+$/.test(a))
    throw new CliError(`--address: "${address}" is not an address (user@example.com)`);
  return addressForms(a, masterKey ? await store.tenants() : [], masterKey);
}

/** RFC 3339 time, or a duration ago (90m, 24h, 7d). */
export function parseTimeFlag(value: string, flag: string, nowMs = Date.now()): number {
  const ago = parseDuration(value, { units: ['s', 'm', 'h', 'd'], whole: true });
  if (ago.ok) return nowMs - ago.value;
  const t = /^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})?)?$/.test(
    value.trim(),
  )
    ? Date.parse(value.trim())
    : Number.NaN;
  if (!Number.isFinite(t))
    throw new CliError(
      `${flag}: "${value}" is not a time (2025-01-31T18:00:00Z) or a duration ago (24h, 7d)`,
    );
  return t;
}

export function renderTable(entries: StoredTraceEntry[]): string {
  const rows = entries.map((e) => [
    e.time,
    e.tenant || '-',
    e.result,
    String(e.code || '-'),
    e.sender,
    e.recipients
      .map((r) =>
        r.omitted !== undefined
          ? `+${r.omitted} not recorded(${r.code})`
          : `${r.address}${r.rewrittenTo ? `->${r.rewrittenTo}` : ''}(${r.code})`,
      )
      .join(','),
    String(e.size),
    e.upstream || '-',
    e.txid,
  ]);
  const head = ['TIME', 'TENANT', 'RESULT', 'CODE', 'SENDER', 'RECIPIENTS', 'SIZE', 'UPSTREAM', 'TXID'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return `${[head, ...rows]
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')}\n`;
}

/** The access-request export: every entry about the address, and metadata of related captures. */
export async function exportAddress(
  store: TraceStore,
  address: string,
  forms: AddressForm[],
  nowMs = Date.now(),
): Promise<Record<string, unknown>> {
  const entries = await store.query({ addresses: forms });
  const captures: CaptureMeta[] = [];
  const byTenant = new Map<string, Set<string>>();
  for (const e of entries) {
    const s = byTenant.get(e.tenant) ?? new Set<string>();
    s.add(e.txid);
    byTenant.set(e.tenant, s);
  }
  for (const [tenant, txids] of byTenant) {
    for (const c of await store.listCaptures(tenant)) if (txids.has(c.txid)) captures.push(c);
  }
  return {
    subject: address.trim().toLowerCase(),
    generatedAt: new Date(nowMs).toISOString(),
    searchedForms: forms.map((f) => (f.tenant === null ? { address: f.address } : f)),
    about:
      'Mail-Plus message trace: metadata of SMTP transactions (no message content, subject or headers). ' +
      "Captures are troubleshooting copies made with the tenant's consent, encrypted to the tenant's key: " +
      'the operator cannot read them; the tenant can (mailplus capture fetch/decrypt).',
    entries,
    captures,
  };
}

export async function runTrace(argv: string[]): Promise<number> {
  const { values, help } = parseFlags(
    argv,
    {
      ...storeFlagSpec,
      address: { type: 'string' },
      tenant: { type: 'string' },
      since: { type: 'string' },
      until: { type: 'string' },
      result: { type: 'string' },
      limit: { type: 'string' },
      output: { type: 'string', short: 'o' },
      export: { type: 'boolean' },
    },
    HELP,
  );
  if (help) return 0;
  const output = str(values.output) ?? (values.export ? 'json' : 'table');
  if (output !== 'json' && output !== 'table') throw new CliError('-o: use json or table');
  const result = str(values.result);
  if (result !== undefined && !TRACE_RESULTS.includes(result as never))
    throw new CliError(`--result: use one of ${TRACE_RESULTS.join(', ')}`);
  const limit = Number(str(values.limit) ?? '1000');
  if (!Number.isInteger(limit) || limit < 1) throw new CliError('--limit must be a whole number ≥ 1');
  const address = str(values.address);
  if (values.export && !address)
    throw new CliError('--export needs --address (the person making the request)');
  const q: TraceQuery = {};
  if (str(values.tenant) !== undefined) q.tenant = str(values.tenant);
  if (str(values.since)) q.sinceMs = parseTimeFlag(str(values.since) as string, '--since');
  if (str(values.until)) q.untilMs = parseTimeFlag(str(values.until) as string, '--until');
  if (result) q.result = result;
  const masterKey = readMasterKey(values);
  const store = await openStoreFromFlags(values);
  try {
    if (values.export && address) {
      const doc = await exportAddress(store, address, await formsOf(store, address, masterKey));
      process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
      return 0;
    }
    if (address) q.addresses = await formsOf(store, address, masterKey);
    q.limit = limit;
    const entries = await store.query(q);
    process.stdout.write(output === 'json' ? `${JSON.stringify(entries, null, 2)}\n` : renderTable(entries));
    return 0;
  } finally {
    await store.close();
  }
}
