// TenantPolicy.spec.privacy.retention: the grammar the compile step parses it with and the bounds
// the relay clamps to (relay/trace/retention.ts).

export const DEFAULT_RETENTION_SECONDS = 720 * 3600;
export const MIN_RETENTION_SECONDS = 3600;
export const MAX_RETENTION_SECONDS = 3650 * 24 * 3600;

/**
 * Parses a retention duration as written in TenantPolicy.spec.privacy.retention: Go-style whole
 * numbers with h, m, s ('720h', '24h30m'), plus d for days ('30d'). Bounded 1h..3650 days.
 */
export function parseRetention(value: string): { ok: true; seconds: number } | { ok: false; error: string } {
  const text = value.trim();
  if (!/^([0-9]+[dhms])+$/.test(text)) {
    return {
      ok: false,
      error: `"${value}" is not a duration; use whole numbers with d, h, m or s, e.g. 720h or 30d`,
    };
  }
  const unit: Record<string, number> = { d: 86400, h: 3600, m: 60, s: 1 };
  let seconds = 0;
  for (const [, n, u] of text.matchAll(/([0-9]+)([dhms])/g)) seconds += Number(n) * unit[u];
  if (!Number.isSafeInteger(seconds) || seconds > MAX_RETENTION_SECONDS)
    return { ok: false, error: `"${value}" is longer than the maximum 3650 days (87600h)` };
  if (seconds < MIN_RETENTION_SECONDS)
    return { ok: false, error: `"${value}" is shorter than the minimum 1h` };
  return { ok: true, seconds };
}
