// Durations: the one grammar of every duration the project reads (relay and operator flags,
// `mailplus trace --since`, TenantPolicy spec.limits.rate.per and spec.privacy.retention).
// Documented in docs/units.md. Depends on nothing.
//
// A duration is one or more numbers, each with a unit: ms, s, m, h, d (500ms, 30s, 1h30m, 30d,
// 1.5s). A field may allow fewer units or only whole numbers (DurationGrammar): the CRD schema's
// pattern for rate.per is whole h, m, s; for retention whole d, h, m, s.

export type DurationResult = { ok: true; value: number } | { ok: false; error: string };
export type DurationUnit = 'ms' | 's' | 'm' | 'h' | 'd';

const UNIT_MS: Record<DurationUnit, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
// longest first, so that `ms` is not read as `m` followed by junk
const ALL_UNITS: readonly DurationUnit[] = ['ms', 's', 'm', 'h', 'd'];

export interface DurationGrammar {
  /** The units allowed (default all). */
  units?: readonly DurationUnit[];
  /** Whole numbers only (default: fractions allowed, 1.5s). */
  whole?: boolean;
  /** Shown in the error, e.g. '30s, 1m, 1h30m'. */
  examples?: string;
}

function unitList(units: readonly DurationUnit[]): string {
  return units.length === 1 ? units[0] : `${units.slice(0, -1).join(', ')} or ${units[units.length - 1]}`;
}

/** Milliseconds (rounded) from a duration string. */
export function parseDuration(value: string, grammar: DurationGrammar = {}): DurationResult {
  const units = grammar.units ?? ALL_UNITS;
  const alternation = [...units].sort((a, b) => b.length - a.length).join('|');
  const number = grammar.whole ? '[0-9]+' : '[0-9]+(?:\\.[0-9]+)?';
  const part = `(${number})(${alternation})`;
  const text = value.trim();
  if (!new RegExp(`^(?:${number}(?:${alternation}))+$`).test(text)) {
    const numbers = grammar.whole ? 'whole numbers' : 'numbers';
    const examples = grammar.examples ?? '500ms, 30s, 5m, 1h30m';
    return {
      ok: false,
      error: `"${value}" is not a duration; use ${numbers} with ${unitList(units)}, e.g. ${examples}`,
    };
  }
  let ms = 0;
  for (const [, n, unit] of text.matchAll(new RegExp(part, 'g')))
    ms += Number(n) * UNIT_MS[unit as DurationUnit];
  if (!Number.isSafeInteger(Math.round(ms))) return { ok: false, error: `"${value}" is too long` };
  return { ok: true, value: Math.round(ms) };
}

/** The shortest exact spelling in one unit (30s, 10m, 0ms); parseDuration reads it back. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0ms';
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    if (ms % UNIT_MS[unit] === 0) return `${ms / UNIT_MS[unit]}${unit}`;
  }
  return `${ms}ms`;
}
