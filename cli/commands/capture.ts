import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { CaptureDecryptor, generateCaptureKeyPair } from '../../relay/capture/crypto.ts';
import { TRACE_STORE_ENV } from '../../relay/trace/open.ts';
import { CliError } from '../errors.ts';
import { parseFlags, str } from '../flags.ts';
import { openStoreFromFlags, storeFlagSpec } from './trace.ts';

const HELP = `Usage: mailplus capture <keygen|list|fetch|decrypt> [options]

Consent-gated troubleshooting captures (TenantPolicy spec.troubleshooting). Relays store captured
messages encrypted to the tenant's public key; only the tenant's private key decrypts them.

  keygen  --out-dir DIR [--type x25519|rsa]
          (tenant side) writes DIR/capture-private.pem (keep it; never give it to the platform)
          and DIR/capture-public.pem (put it into spec.troubleshooting.publicKey)
  list    --tenant NAME [--store STORE] [-o json|table]
  fetch   --tenant NAME --id ID --out FILE [--store STORE]
          writes the capture, still encrypted
  decrypt --key PRIVATE.pem --in FILE --out MSG.eml
          (tenant side) the message exactly as the client sent it

STORE: sqlite:PATH or postgres://USER@HOST/DB (default: env ${TRACE_STORE_ENV}).
Captures are purged when the consent expires (spec.troubleshooting.expiresAt).
`;

async function write(out: Writable, data: Buffer): Promise<void> {
  if (!out.write(data)) await once(out, 'drain');
}

async function closeStream(out: Writable): Promise<void> {
  out.end();
  await once(out, 'finish');
}

async function keygen(argv: string[]): Promise<number> {
  const { values, help } = parseFlags(
    argv,
    { 'out-dir': { type: 'string' }, type: { type: 'string' } },
    HELP,
  );
  if (help) return 0;
  const dir = str(values['out-dir']);
  if (!dir) throw new CliError('keygen: --out-dir is required');
  const type = str(values.type) ?? 'x25519';
  if (type !== 'x25519' && type !== 'rsa') throw new CliError('keygen: --type is x25519 or rsa');
  const pair = generateCaptureKeyPair(type);
  await mkdir(dir, { recursive: true });
  const priv = join(dir, 'capture-private.pem');
  const pub = join(dir, 'capture-public.pem');
  await writeFile(priv, pair.privateKey, { mode: 0o600, flag: 'wx' }).catch((err: Error) => {
    throw new CliError(`keygen: ${priv}: ${err.message} (not overwriting an existing key)`);
  });
  await chmod(priv, 0o600);
  await writeFile(pub, pair.publicKey);
  process.stdout.write(
    `wrote ${priv} (private: keep it, never give it to the platform)\nwrote ${pub} (public: spec.troubleshooting.publicKey)\n`,
  );
  return 0;
}

async function list(argv: string[]): Promise<number> {
  const { values, help } = parseFlags(
    argv,
    { ...storeFlagSpec, tenant: { type: 'string' }, output: { type: 'string', short: 'o' } },
    HELP,
  );
  if (help) return 0;
  const tenant = str(values.tenant);
  if (!tenant) throw new CliError('list: --tenant is required');
  const store = await openStoreFromFlags(values);
  try {
    const caps = await store.listCaptures(tenant);
    if (str(values.output) === 'json') {
      process.stdout.write(`${JSON.stringify(caps, null, 2)}\n`);
    } else {
      const rows = [
        ['ID', 'CREATED', 'EXPIRES', 'BYTES', 'TXID'],
        ...caps.map((c) => [c.id, c.createdAt, c.expiresAt, String(c.size), c.txid]),
      ];
      const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
      process.stdout.write(
        `${rows
          .map((r) =>
            r
              .map((c, i) => c.padEnd(w[i]))
              .join('  ')
              .trimEnd(),
          )
          .join('\n')}\n`,
      );
    }
    return 0;
  } finally {
    await store.close();
  }
}

async function fetch(argv: string[]): Promise<number> {
  const { values, help } = parseFlags(
    argv,
    { ...storeFlagSpec, tenant: { type: 'string' }, id: { type: 'string' }, out: { type: 'string' } },
    HELP,
  );
  if (help) return 0;
  const tenant = str(values.tenant);
  const id = str(values.id);
  const outFile = str(values.out);
  if (!tenant || !id || !outFile) throw new CliError('fetch: --tenant, --id and --out are required');
  const store = await openStoreFromFlags(values);
  try {
    const chunks = await store.readCapture(tenant, id);
    if (!chunks)
      throw new CliError(
        `fetch: tenant ${tenant} has no capture ${id} (mailplus capture list --tenant ${tenant})`,
        1,
      );
    await writeAtomically(outFile, async (out) => {
      for await (const c of chunks) await write(out, c);
    });
    process.stdout.write(
      `wrote ${outFile} (encrypted; decrypt with mailplus capture decrypt --key PRIVATE.pem)\n`,
    );
    return 0;
  } finally {
    await store.close();
  }
}

/**
 * Writes OUT (mode 0600) through a `.partial` file renamed into place once `fill` succeeds; on any
 * error the partial file is removed, so a failed fetch or decryption leaves nothing behind.
 */
async function writeAtomically(outFile: string, fill: (out: Writable) => Promise<void>): Promise<void> {
  const tmp = `${outFile}.partial`;
  const out = createWriteStream(tmp, { mode: 0o600 });
  try {
    await fill(out);
    await closeStream(out);
    await rename(tmp, outFile);
  } catch (err) {
    out.destroy();
    await rm(tmp, { force: true });
    throw err;
  }
}

/** Streams FILE through the decryptor into OUT; nothing is left behind when authentication fails. */
export async function decryptFile(keyFile: string, inFile: string, outFile: string): Promise<void> {
  const dec = new CaptureDecryptor(await readFile(keyFile, 'utf8'));
  await writeAtomically(outFile, async (out) => {
    for await (const chunk of createReadStream(inFile, { highWaterMark: 256 * 1024 })) {
      for (const p of dec.push(chunk as Buffer)) await write(out, p);
    }
    dec.end();
  });
}

async function decrypt(argv: string[]): Promise<number> {
  const { values, help } = parseFlags(
    argv,
    { key: { type: 'string' }, in: { type: 'string' }, out: { type: 'string' } },
    HELP,
  );
  if (help) return 0;
  const key = str(values.key);
  const inFile = str(values.in);
  const outFile = str(values.out);
  if (!key || !inFile || !outFile) throw new CliError('decrypt: --key, --in and --out are required');
  try {
    await decryptFile(key, inFile, outFile);
  } catch (err) {
    throw new CliError(`decrypt: ${(err as Error).message}`, 1);
  }
  process.stdout.write(`wrote ${outFile}\n`);
  return 0;
}

export async function runCapture(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'keygen':
      return keygen(rest);
    case 'list':
      return list(rest);
    case 'fetch':
      return fetch(rest);
    case 'decrypt':
      return decrypt(rest);
    case undefined:
    case '--help':
    case '-h':
      process.stdout.write(HELP);
      return sub ? 0 : 2;
    default:
      throw new CliError(`unknown capture command "${sub}"\n\n${HELP}`);
  }
}
