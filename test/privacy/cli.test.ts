// `mailplus trace`, `erase`, `capture`, `licenses` as users run them (the real CLI in a child
// process), against SQLite and a real PostgreSQL (test/support/postgres.ts).
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encryptCapture } from '../../relay/capture/crypto.ts';
import type { TraceEntry } from '../../relay/trace/entry.ts';
import { openTraceStore } from '../../relay/trace/open.ts';
import { tenantPseudonym } from '../../relay/trace/pseudonym.ts';
import { type PostgresServer, startPostgres } from '../support/postgres.ts';

const root = join(import.meta.dirname, '..', '..');
const NODE = process.execPath;
const KEY = 'master-key-0123456789abcdef';

function mailplus(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      NODE,
      [join(root, 'bin', 'mailplus.js'), ...args],
      { cwd: root, env: { ...process.env, MAILPLUS_TRACE_STORE: '', ...env }, timeout: 30_000 },
      (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
  });
}

let dir: string;
let pgServer: PostgresServer | undefined;
let keyFile: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mailplus-cli-'));
  keyFile = join(dir, 'master.key');
  await writeFile(keyFile, `${KEY}\n`);
  pgServer = await startPostgres();
});
afterAll(async () => {
  await pgServer?.stop();
  await rm(dir, { recursive: true, force: true });
});

const now = Date.now();
function entry(over: Partial<TraceEntry>): TraceEntry {
  return {
    time: new Date(now - 60_000).toISOString(),
    txid: 'tx',
    tenant: 'a',
    route: 'a/all',
    clientIp: '192.0.2.1',
    tls: true,
    sender: 'alice@outside.example',
    recipients: [{ address: 'bob@a.example', result: 'accepted', code: 250 }],
    size: 10,
    upstream: 'mx:25',
    result: 'relayed',
    code: 250,
    durationMs: 3,
    ...over,
  };
}

let n = 0;
describe.each([
  ['sqlite', async () => `sqlite:${join(dir, `cli${++n}.db`)}`],
  ['postgres', async () => (pgServer as PostgresServer).createDatabase()],
] as Array<[string, () => Promise<string>]>)('mailplus trace / erase / capture: %s', (_name, location) => {
  it('finds, exports and erases an address in any role, including its per-tenant pseudonyms', async () => {
    const where = await location();
    const s = await openTraceStore(where);
    const p = (a: string) => tenantPseudonym(KEY, 'p', a);
    await s.insert(
      [
        entry({ txid: 't1' }),
        entry({
          txid: 't2',
          tenant: 'b',
          sender: 'bob@a.example',
          recipients: [{ address: 'carol@b.example', result: 'rejected', code: 550, reason: 'no_route' }],
          result: 'rejected',
          code: 550,
        }),
        entry({
          txid: 't3',
          tenant: 'p',
          sender: p('alice@outside.example'),
          recipients: [{ address: p('bob@a.example'), result: 'accepted', code: 250 }],
        }),
        entry({
          txid: 't4',
          recipients: [{ address: 'dave@a.example', result: 'accepted', code: 250 }],
          time: new Date(now - 3 * 86400_000).toISOString(),
        }),
      ].map((e) => ({ entry: e, expiresMs: now + 86400_000 })),
    );
    const capId = await s.beginCapture({
      tenant: 'a',
      consentId: 'c',
      txid: 't1',
      createdMs: now,
      expiresMs: now + 3600_000,
    });
    await s.appendCapture(capId, 0, Buffer.from('ciphertext'));
    await s.completeCapture(capId);
    await s.close();

    // by store env var, table output
    const table = await mailplus(['trace', '--address', 'BOB@a.example'], { MAILPLUS_TRACE_STORE: where });
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^TIME\s+TENANT\s+RESULT/);
    expect(table.stdout).toContain('t1');
    expect(table.stdout).toContain('t2');
    expect(table.stdout).not.toContain('t3'); // pseudonymised: only found with the key

    const json = await mailplus([
      'trace',
      '--store',
      where,
      '--address',
      'bob@a.example',
      '--pseudonymize-key-file',
      keyFile,
      '-o',
      'json',
    ]);
    expect(JSON.parse(json.stdout).map((e: TraceEntry) => e.txid)).toEqual(['t1', 't2', 't3']);

    const filtered = await mailplus([
      'trace',
      '--store',
      where,
      '--tenant',
      'a',
      '--since',
      '1d',
      '-o',
      'json',
    ]);
    expect(JSON.parse(filtered.stdout).map((e: TraceEntry) => e.txid)).toEqual(['t1']);
    const rejected = await mailplus(['trace', '--store', where, '--result', 'rejected', '-o', 'json']);
    expect(JSON.parse(rejected.stdout).map((e: TraceEntry) => e.txid)).toEqual(['t2']);
    const until = await mailplus([
      'trace',
      '--store',
      where,
      '--until',
      new Date(now - 86400_000).toISOString(),
      '-o',
      'json',
    ]);
    expect(JSON.parse(until.stdout).map((e: TraceEntry) => e.txid)).toEqual(['t4']);

    const exp = await mailplus([
      'trace',
      '--store',
      where,
      '--export',
      '--address',
      'bob@a.example',
      '--pseudonymize-key-file',
      keyFile,
    ]);
    const doc = JSON.parse(exp.stdout);
    expect(doc.subject).toBe('bob@a.example');
    expect(doc.entries.map((e: TraceEntry) => e.txid)).toEqual(['t1', 't2', 't3']);
    expect(doc.captures).toEqual([expect.objectContaining({ id: capId, tenant: 'a', txid: 't1' })]);

    const erased = await mailplus([
      'erase',
      '--store',
      where,
      '--address',
      'Bob@A.example',
      '--pseudonymize-key-file',
      keyFile,
      '-o',
      'json',
    ]);
    expect(erased.code, erased.stderr).toBe(0);
    expect(JSON.parse(erased.stdout)).toMatchObject({
      address: 'bob@a.example',
      deleted: { entries: { a: 1, b: 1, p: 1 }, captures: { a: 1 } },
      total: 3,
      totalCaptures: 1,
    });
    const after = await mailplus(['trace', '--store', where, '-o', 'json']);
    expect(JSON.parse(after.stdout).map((e: TraceEntry) => e.txid)).toEqual(['t4']);
    const text = await mailplus(['erase', '--store', where, '--address', 'dave@a.example']);
    expect(text.stdout).toMatch(/erased dave@a\.example: 1 entries, 0 captures\n {2}tenant a: 1 entries/);
    expect(text.stdout).toMatch(/pseudonymised entries not searched/);
  });

  it('capture keygen / list / fetch / decrypt round-trip', async () => {
    const where = await location();
    const kd = await mkdtemp(join(dir, 'keys-'));
    const kg = await mailplus(['capture', 'keygen', '--out-dir', kd]);
    expect(kg.code, kg.stderr).toBe(0);
    expect((await stat(join(kd, 'capture-private.pem'))).mode & 0o777).toBe(0o600);
    expect((await mailplus(['capture', 'keygen', '--out-dir', kd])).code).not.toBe(0); // never overwrites
    const pub = await readFile(join(kd, 'capture-public.pem'), 'utf8');
    const message = Buffer.from('From: a@b\r\nSubject: x\r\n\r\n.line\r\nbody ✓\r\n');
    const s = await openTraceStore(where);
    const id = await s.beginCapture({
      tenant: 'a',
      consentId: 'c',
      txid: 'tx9',
      createdMs: now,
      expiresMs: now + 3600_000,
    });
    const ct = encryptCapture(
      pub,
      message,
      { tenant: 'a', txid: 'tx9', createdAt: new Date(now).toISOString() },
      8,
    );
    await s.appendCapture(id, 0, ct.subarray(0, 50));
    await s.appendCapture(id, 1, ct.subarray(50));
    await s.completeCapture(id);
    await s.close();

    const list = await mailplus(['capture', 'list', '--store', where, '--tenant', 'a', '-o', 'json']);
    expect(JSON.parse(list.stdout)).toEqual([expect.objectContaining({ id, txid: 'tx9', size: ct.length })]);
    expect(
      JSON.parse(
        (await mailplus(['capture', 'list', '--store', where, '--tenant', 'b', '-o', 'json'])).stdout,
      ),
    ).toEqual([]);
    const enc = join(kd, 'cap.bin');
    const f = await mailplus([
      'capture',
      'fetch',
      '--store',
      where,
      '--tenant',
      'a',
      '--id',
      id,
      '--out',
      enc,
    ]);
    expect(f.code, f.stderr).toBe(0);
    expect((await readFile(enc)).equals(ct)).toBe(true);
    expect(
      (await mailplus(['capture', 'fetch', '--store', where, '--tenant', 'b', '--id', id, '--out', enc]))
        .code,
    ).toBe(1);
    const out = join(kd, 'msg.eml');
    const d = await mailplus([
      'capture',
      'decrypt',
      '--key',
      join(kd, 'capture-private.pem'),
      '--in',
      enc,
      '--out',
      out,
    ]);
    expect(d.code, d.stderr).toBe(0);
    expect((await readFile(out)).equals(message)).toBe(true);
    // a tampered file leaves nothing behind
    const bad = Buffer.from(ct);
    bad[bad.length - 5] ^= 1;
    await writeFile(enc, bad);
    const out2 = join(kd, 'msg2.eml');
    const d2 = await mailplus([
      'capture',
      'decrypt',
      '--key',
      join(kd, 'capture-private.pem'),
      '--in',
      enc,
      '--out',
      out2,
    ]);
    expect(d2.code).toBe(1);
    expect(d2.stderr).toMatch(/authentication/);
    await expect(stat(out2)).rejects.toThrow();
    await expect(stat(`${out2}.partial`)).rejects.toThrow();
  });
});

describe('CLI errors and licenses', () => {
  it('needs a store; refuses unknown ones', async () => {
    const r = await mailplus(['trace']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/no trace store/);
    expect((await mailplus(['erase', '--store', 'sqlite:x.db'])).stderr).toMatch(/--address is required/);
    expect((await mailplus(['trace', '--store', 'mysql://x'])).stderr).toMatch(/sqlite:PATH/);
    expect((await mailplus(['trace', '--store', 'sqlite:x.db', '--export'])).stderr).toMatch(
      /--export needs --address/,
    );
  });
  it('a SQLite store that does not exist is an error, not a new empty store erased "0 entries"', async () => {
    const missing = join(dir, 'no-such-dir-typo', 'trace.db');
    const typo = join(dir, 'trcae.db');
    for (const args of [
      ['erase', '--store', `sqlite:${typo}`, '--address', 'bob@a.example'],
      ['trace', '--store', `sqlite:${typo}`, '--address', 'bob@a.example'],
      ['capture', 'list', '--tenant', 'a', '--store', `sqlite:${typo}`],
      ['erase', '--store', `sqlite:${missing}`, '--address', 'bob@a.example'],
    ]) {
      const r = await mailplus(args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toContain('no trace store at');
      expect(r.stdout).toBe('');
    }
    await expect(stat(typo)).rejects.toThrow(/ENOENT/);
  });

  it('mailplus licenses prints THIRD_PARTY_NOTICES', async () => {
    const r = await mailplus(['licenses']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(await readFile(join(root, 'THIRD_PARTY_NOTICES'), 'utf8'));
    expect(r.stdout).toMatch(/^smtp-server@\d/m);
  });
});
