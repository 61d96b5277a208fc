// TenantPolicy.spec.privacy.retention: the grammar the compile step parses it with and the bounds
// the relay clamps to (relay/trace/retention.ts).
import { parseDuration } from './duration.ts';

export const DEFAULT_RETENTION_SECONDS = 720 * 3600;
export const MIN_RETENTION_SECONDS = 3600;
export const MAX_RETENTION_SECONDS = 3650 * 24 * 3600;

/**
 * Parses a retention duration as written in TenantPolicy.spec.privacy.retention: the duration
 * grammar (duration.ts) with whole numbers of d, h, m and s ('720h', '24h30m', '30d'). Bounded
 * 1h..3650 days.
 */
export function parseRetention(value: string): { ok: true; seconds: number } | { ok: false; error: string } {
  const r = parseDuration(value, { units: ['d', 'h', 'm', 's'], whole: true, examples: '720h or 30d' });
  if (!r.ok) return r;
  const seconds = r.value / 1000;
  if (seconds > MAX_RETENTION_SECONDS)
    return { ok: false, error: `"${value}" is longer than the maximum 3650 days (87600h)` };
  if (seconds < MIN_RETENTION_SECONDS)
    return { ok: false, error: `"${value}" is shorter than the minimum 1h` };
  return { ok: true, seconds };
}
