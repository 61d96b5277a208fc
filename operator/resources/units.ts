// Kubernetes quantities (maxMessageSize) and Go-style durations (rate.per), parsed exactly.
import type { ParseResult } from '../../contract/grammar/match.ts';

const BINARY: Record<string, bigint> = { Ki: 1n, Mi: 2n, Gi: 3n, Ti: 4n, Pi: 5n, Ei: 6n };
const DECIMAL: Record<string, number> = { k: 3, M: 6, G: 9, T: 12, P: 15, E: 18 };
const QUANTITY = /^\+?([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|[eE]\+?[0-9]+)?$/;

/**
 * A byte count from an integer or a Kubernetes quantity string ('25Mi', '10M', '1048576', '1.5Ki').
 * Fractions of a byte, zero, negative values, milli/micro suffixes and values beyond 2^53 are errors.
 */
export function parseByteQuantity(value: number | string): ParseResult<number> {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 1) {
      return { ok: false, error: `${value} is not a positive whole number of bytes` };
    }
    return { ok: true, value };
  }
  const m = QUANTITY.exec(value.trim());
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
  if (bytes < 1n) return { ok: false, error: `"${value}" must be at least 1 byte` };
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) return { ok: false, error: `"${value}" is too large` };
  return { ok: true, value: Number(bytes) };
}

const UNIT_SECONDS: Record<string, number> = { h: 3600, m: 60, s: 1 };

/** Whole seconds from a Go-style duration limited to h, m and s ('30s', '1m', '1h30m'). */
export function parseDurationSeconds(value: string): ParseResult<number> {
  const text = value.trim();
  if (!/^([0-9]+[hms])+$/.test(text)) {
    return {
      ok: false,
      error: `"${value}" is not a duration; use whole numbers with h, m or s, e.g. 30s, 1m, 1h30m`,
    };
  }
  let seconds = 0;
  for (const [, n, unit] of text.matchAll(/([0-9]+)([hms])/g)) seconds += Number(n) * UNIT_SECONDS[unit];
  if (seconds < 1) return { ok: false, error: `"${value}" must be at least 1s` };
  if (!Number.isSafeInteger(seconds)) return { ok: false, error: `"${value}" is too long` };
  return { ok: true, value: seconds };
}
