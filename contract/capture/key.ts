// The key a tenant gives for its troubleshooting captures (TenantPolicy spec.troubleshooting.publicKey):
// the operator refuses one the relay could not encrypt to, the relay encrypts to it (relay/capture/crypto.ts).
import { createPublicKey, type KeyObject } from 'node:crypto';

/** Parses a PEM public key and checks it is one we can encrypt to. Refuses private keys. */
export function parseRecipientKey(pem: string): { ok: true; key: KeyObject } | { ok: false; error: string } {
  if (/PRIVATE KEY/.test(pem)) {
    return {
      ok: false,
      error: 'is a PRIVATE key: only the public key may be given (the private key never leaves the tenant)',
    };
  }
  if (!/-----BEGIN PUBLIC KEY-----/.test(pem)) {
    return { ok: false, error: 'is not a PEM public key ("-----BEGIN PUBLIC KEY-----")' };
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: 'pem' });
  } catch (err) {
    return { ok: false, error: `cannot be parsed: ${(err as Error).message}` };
  }
  if (key.asymmetricKeyType === 'x25519') return { ok: true, key };
  if (key.asymmetricKeyType === 'rsa') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < 2048)
      return { ok: false, error: `is an RSA key of ${bits} bits; use at least 2048 (or X25519)` };
    return { ok: true, key };
  }
  return {
    ok: false,
    error: `is a ${key.asymmetricKeyType} key; use X25519 (mailplus capture keygen) or RSA ≥ 2048 bits`,
  };
}
