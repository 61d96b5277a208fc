// Test-only PKI generated with the openssl CLI at test time: a private CA, a leaf for
// localhost/127.0.0.1/::1 signed by it, and an unrelated self-signed leaf (untrusted).

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestPki {
  caCert: string;
  /** Signed by caCert; SAN DNS:localhost, IP:127.0.0.1, IP:::1. */
  key: string;
  cert: string;
  /** Self-signed, not trusted by anyone; same SANs. */
  untrustedKey: string;
  untrustedCert: string;
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
const SAN = 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1';

export function makeTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'mailplus-upstream-pki-'));
  const f = (name: string) => join(dir, name);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe', timeout: 10_000 });
  try {
    openssl(
      'req',
      '-x509',
      ...EC,
      '-keyout',
      f('ca.key'),
      '-out',
      f('ca.pem'),
      '-days',
      '2',
      '-subj',
      '/CN=Mail-Plus test CA',
    );
    openssl('req', '-new', ...EC, '-keyout', f('leaf.key'), '-out', f('leaf.csr'), '-subj', '/CN=localhost');
    writeFileSync(f('ext.cnf'), `${SAN}\nbasicConstraints=CA:FALSE\n`);
    openssl(
      'x509',
      '-req',
      '-in',
      f('leaf.csr'),
      '-CA',
      f('ca.pem'),
      '-CAkey',
      f('ca.key'),
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      f('ext.cnf'),
      '-out',
      f('leaf.pem'),
    );
    openssl(
      'req',
      '-x509',
      ...EC,
      '-keyout',
      f('other.key'),
      '-out',
      f('other.pem'),
      '-days',
      '2',
      '-subj',
      '/CN=localhost',
      '-addext',
      SAN,
    );
    const read = (name: string) => readFileSync(f(name), 'utf8');
    return {
      caCert: read('ca.pem'),
      key: read('leaf.key'),
      cert: read('leaf.pem'),
      untrustedKey: read('other.key'),
      untrustedCert: read('other.pem'),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
