// Sizes in bytes: the one grammar of every size the project reads (relay flags, operator flags,
// TenantPolicy spec.limits.maxMessageSize). Documented in docs/units.md. Depends on nothing.
//
// A size is a whole number of bytes (26214400), or a number with a suffix: Ki, Mi, Gi, Ti, Pi, Ei
// (binary: 25Mi), k or K, M, G, T, P, E (decimal: 10M), or an exponent (25e6), as in a Kubernetes
// quantity. A fraction is allowed when the result is whole bytes (1.5Ki). The CRD schema's pattern
// is the stricter gate for resources: it has no `K` (Kubernetes spells it `k`).

export type SizeResult = { ok: true; value: number } | { ok: false; error: string };

const BINARY: Record<string, bigint> = { Ki: 1n, Mi: 2n, Gi: 3n, Ti: 4n, Pi: 5n, Ei: 6n };
const DECIMAL: Record<string, number> = { k: 3, K: 3, M: 6, G: 9, T: 12, P: 15, E: 18 };
const SIZE = /^\+?([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E|[eE]\+?[0-9]+)?$/;

/** Bytes (≥ 0) from a size string or a number; beyond 2^53 is an error. */
export function parseSize(value: number | string): SizeResult {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) {
      return { ok: false, error: `${value} is not a whole number of bytes` };
    }
    return { ok: true, value };
  }
  const m = SIZE.exec(value.trim());
  if (!m) {
    return {
      ok: false,
      error: `"${value}" is not a quantity; use bytes (1048576) or a suffix Ki, Mi, Gi (binary) or k, M, G (decimal), e.g. 25Mi`,
    };
  }
  const [whole, frac = ''] = m[1].split('.');
  let numerator = BigInt(`${whole || '0'}${frac}`);
  let exponent10 = -frac.length;
  const suffix = m[2] ?? '';
  if (suffix in BINARY) numerator *= 1024n ** BINARY[suffix];
  else if (suffix in DECIMAL) exponent10 += DECIMAL[suffix];
  else if (suffix !== '') exponent10 += Number(suffix.slice(1).replace('+', ''));
  let bytes: bigint;
  if (exponent10 >= 0) {
    bytes = numerator * 10n ** BigInt(exponent10);
  } else {
    const div = 10n ** BigInt(-exponent10);
    if (numerator % div !== 0n) return { ok: false, error: `"${value}" is not a whole number of bytes` };
    bytes = numerator / div;
  }
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) return { ok: false, error: `"${value}" is too large` };
  return { ok: true, value: Number(bytes) };
}

/** The shortest exact spelling with a binary suffix (25Mi), else bytes; parseSize reads it back. */
export function formatSize(bytes: number): string {
  for (const [suffix, power] of [
    ['Gi', 3],
    ['Mi', 2],
    ['Ki', 1],
  ] as const) {
    const unit = 1024 ** power;
    if (bytes >= unit && bytes % unit === 0) return `${bytes / unit}${suffix}`;
  }
  return String(bytes);
}
