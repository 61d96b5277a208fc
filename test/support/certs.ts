// A private test CA and server certificates made with the openssl CLI at test time, so
// tests can verify TLS for real (trusting only this CA) without checked-in keys.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface CertPair {
  /** PEM certificate (leaf first, no chain: the CA is passed separately). */
  cert: string;
  /** PEM private key. */
  key: string;
  certPath: string;
  keyPath: string;
}

export interface TestPki {
  dir: string;
  /** PEM of the test CA: what a verifying client must trust. */
  ca: string;
  caPath: string;
  /** Server certificate signed by the CA, SAN localhost, 127.0.0.1 and ::1. */
  server: CertPair;
  /** Issues another certificate from the same CA (e.g. a client certificate, or a wrong name). */
  issue(name: string, sans: string[]): Promise<CertPair>;
  /** A self-signed certificate NOT from the CA (for "verification must fail" tests). */
  selfSigned(name: string, sans: string[]): Promise<CertPair>;
  cleanup(): Promise<void>;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await run('openssl', args, { cwd });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(
      `openssl ${args[0]} failed (is openssl installed? scripts/ci-deps.sh): ${e.stderr ?? e.message}`,
    );
  }
}

function sanLine(sans: string[]): string {
  return sans.map((s) => (/^[0-9.]+$|:/.test(s) ? `IP:${s}` : `DNS:${s}`)).join(',');
}

async function readPair(dir: string, name: string): Promise<CertPair> {
  const certPath = join(dir, `${name}.crt`);
  const keyPath = join(dir, `${name}.key`);
  return { cert: await readFile(certPath, 'utf8'), key: await readFile(keyPath, 'utf8'), certPath, keyPath };
}

/** Creates a CA and a localhost server certificate in a fresh temp dir (about 100 ms, EC P-256). */
export async function createTestPki(): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), 'mailplus-pki-'));
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await openssl(
    [
      'req',
      '-x509',
      ...ec,
      '-keyout',
      'ca.key',
      '-out',
      'ca.crt',
      '-days',
      '2',
      '-subj',
      '/CN=Mail-Plus Test CA',
    ].concat([
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]),
    dir,
  );

  const issue = async (name: string, sans: string[]): Promise<CertPair> => {
    const ext = join(dir, `${name}.ext`);
    await writeFile(
      ext,
      `basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n` +
        `extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=${sanLine(sans)}\n`,
    );
    await openssl(
      ['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`],
      dir,
    );
    await openssl(
      ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial'].concat([
        '-out',
        `${name}.crt`,
        '-days',
        '2',
        '-extfile',
        ext,
      ]),
      dir,
    );
    return readPair(dir, name);
  };

  const selfSigned = async (name: string, sans: string[]): Promise<CertPair> => {
    await openssl(
      [
        'req',
        '-x509',
        ...ec,
        '-keyout',
        `${name}.key`,
        '-out',
        `${name}.crt`,
        '-days',
        '2',
        '-subj',
        `/CN=${name}`,
      ].concat(['-addext', `subjectAltName=${sanLine(sans)}`]),
      dir,
    );
    return readPair(dir, name);
  };

  const server = await issue('server', ['localhost', '127.0.0.1', '::1']);
  const caPath = join(dir, 'ca.crt');
  return {
    dir,
    ca: await readFile(caPath, 'utf8'),
    caPath,
    server,
    issue,
    selfSigned,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}
