// The verifying cells' fixtures, checked against a real NSD (not the benchmark itself, which stays
// out of npm test): the signed corpus verifies (DKIM, SPF, DMARC pass) through mailauth asking real
// DNS, its file form is what smtp-source -F turns back into the same bytes, and the mount namespace
// that Postfix's resolvers run in sees the run's resolv.conf while the machine's stays untouched.
import { execFile } from 'node:child_process';
import { Resolver } from 'node:dns/promises';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { authenticate } from 'mailauth';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DnsServer, startDnsServer } from '../support/dns.ts';
import {
  authZones,
  dkimKeyPair,
  FORGED_DOMAIN,
  inResolvNamespace,
  SENDER_DOMAIN,
  signedCorpus,
  signMessage,
} from './auth-setup.ts';

const run = promisify(execFile);
const KiB = 1024;

let dns: DnsServer;
let dir: string;
const key = dkimKeyPair();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mailplus-auth-setup-'));
  dns = await startDnsServer({ zones: authZones(key.publicKeyBase64) });
});

afterAll(async () => {
  await dns?.stop();
  await rm(dir, { recursive: true, force: true });
});

async function verify(message: Buffer, sender: string) {
  const resolver = new Resolver({ timeout: 1000, tries: 1 });
  resolver.setServers([dns.server]);
  return authenticate(message, {
    ip: '127.0.0.1',
    helo: SENDER_DOMAIN,
    sender,
    mta: 'test.invalid',
    resolver: ((name: string, rr: string) => resolver.resolve(name, rr)) as never,
  });
}

const bodyOf = (m: Buffer) => m.subarray(m.indexOf('\r\n\r\n') + 4);
/** mailauth gives `false` for a check it did not run. */
const result = (r: false | { status: { result: string } } | undefined) => (r ? r.status.result : 'not run');

describe('verifying cells: signed corpus', () => {
  it('has the exact body size, short CRLF lines, no dot at a line start, and passes SPF, DKIM and DMARC', async () => {
    const corpus = await signedCorpus(dir, [KiB, 100 * KiB], key.privateKey);
    for (const size of [KiB, 100 * KiB]) {
      const { wire, path } = corpus.get(size)!;
      expect(bodyOf(wire).length).toBe(size);
      const text = wire.toString('latin1');
      expect(text).not.toMatch(/(^|\r\n)\./);
      expect(text.replaceAll('\r\n', '')).not.toMatch(/[\r\n]/);
      for (const line of bodyOf(wire).toString('latin1').split('\r\n'))
        expect(line.length).toBeLessThanOrEqual(78);
      // smtp-source -F appends CRLF to every line of the file: the same bytes again
      const file = await readFile(path, 'latin1');
      expect(file).not.toContain('\r');
      expect(Buffer.from(file.replaceAll('\n', '\r\n'), 'latin1').equals(wire)).toBe(true);

      const r = await verify(wire, `load@${SENDER_DOMAIN}`);
      expect(result(r.spf)).toBe('pass');
      expect(r.dkim.results.map((d) => d.status.result)).toEqual(['pass']);
      expect(result(r.dmarc)).toBe('pass');
    }
  });

  it('a forgery from the forged domain fails SPF and DMARC, and a From: forgery fails DMARC alone', async () => {
    const forged = await signMessage({
      from: `ceo@${FORGED_DOMAIN}`,
      subject: 'f',
      size: KiB,
      privateKey: key.privateKey,
    });
    const a = await verify(forged, `ceo@${FORGED_DOMAIN}`);
    expect(result(a.spf)).toBe('fail');
    expect(result(a.dmarc)).toBe('fail');
    const b = await verify(forged, `load@${SENDER_DOMAIN}`);
    expect(result(b.spf)).toBe('pass');
    expect(b.dkim.results.map((d) => d.status.result)).toEqual(['pass']);
    expect(result(b.dmarc)).toBe('fail');
  });
});

// needs root (unshare --mount), as the benchmark's Postfix does; tests and CI run as root
describe('verifying cells: resolver namespace', () => {
  it("gives a program the run's resolv.conf and leaves the machine's alone", async () => {
    const conf = join(dir, 'resolv.conf');
    await writeFile(conf, 'nameserver 127.0.53.9\n');
    const before = await readFile('/etc/resolv.conf', 'utf8');
    const [cmd, args] = inResolvNamespace(conf, ['cat', '/etc/resolv.conf']);
    const { stdout } = await run(cmd, args, { timeout: 10_000 });
    expect(stdout).toBe('nameserver 127.0.53.9\n');
    expect(await readFile('/etc/resolv.conf', 'utf8')).toBe(before);
  });
});
