// TenantPolicy sizes (spec.limits.maxMessageSize, a Kubernetes quantity) and durations
// (spec.limits.rate.per, Go-style h, m, s): the shared grammars (contract/grammar/size.ts,
// duration.ts, docs/units.md) with the bounds and the units these fields allow.
import { parseDuration } from '../../contract/grammar/duration.ts';
import type { ParseResult } from '../../contract/grammar/match.ts';
import { parseSize } from '../../contract/grammar/size.ts';

/**
 * A byte count from an integer or a Kubernetes quantity string ('25Mi', '10M', '1048576', '1.5Ki').
 * Fractions of a byte, zero, negative values, milli/micro suffixes and values beyond 2^53 are errors.
 */
export function parseByteQuantity(value: number | string): ParseResult<number> {
  const r = parseSize(value);
  if (r.ok && r.value < 1) {
    return { ok: false, error: `${JSON.stringify(value)} must be at least 1 byte` };
  }
  return r;
}

/** Whole seconds from a Go-style duration limited to h, m and s ('30s', '1m', '1h30m'). */
export function parseDurationSeconds(value: string): ParseResult<number> {
  const r = parseDuration(value, { units: ['h', 'm', 's'], whole: true, examples: '30s, 1m, 1h30m' });
  if (!r.ok) return r;
  if (r.value < 1000) return { ok: false, error: `"${value}" must be at least 1s` };
  return { ok: true, value: r.value / 1000 };
}
