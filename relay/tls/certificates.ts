import fs from 'node:fs';
import tls from 'node:tls';
import { type FileWatcher, watchFiles } from '../config/file-watch.ts';

/** The listener's key pair as read from disk, checked by building a SecureContext from it. */
export interface KeyPair {
  cert: Buffer;
  key: Buffer;
}

export function loadKeyPair(certFile: string, keyFile: string): KeyPair {
  const pair = { cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) };
  checkKeyPair(pair);
  return pair;
}

/** Throws when the files do not form a usable key pair (bad PEM, key not matching the cert). */
export function checkKeyPair(pair: KeyPair): void {
  tls.createSecureContext({ cert: pair.cert, key: pair.key });
}

/**
 * Reloads the certificate when either file changes (cert-manager renewals, Secret volume swaps),
 * without a restart. Both files are re-read together, and a pair that does not load (half-written,
 * key and cert from different generations) is refused: the old context stays, `onError` is told
 * (log + metric), and the next change is tried again.
 */
export function watchKeyPair(
  certFile: string,
  keyFile: string,
  onPair: (pair: KeyPair) => void,
  onError: (err: Error) => void,
  opts: { debounceMs?: number; pollMs?: number } = {},
): FileWatcher {
  return watchFiles(
    [certFile, keyFile],
    ([cert, key]) => {
      const pair = { cert, key };
      try {
        checkKeyPair(pair);
      } catch (err) {
        onError(err as Error);
        return;
      }
      onPair(pair);
    },
    { ...opts, onError },
  );
}
