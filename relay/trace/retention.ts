// Retention: every tenant's entries are kept for its TenantPolicy.spec.privacy.retention (default
// 720h = 30 days, bounded 1h..87600h = 3650 days), then purged. Pure.
import type { RelayConfig } from '../config/types.gen.ts';

export const DEFAULT_RETENTION_SECONDS = 720 * 3600;
export const MIN_RETENTION_SECONDS = 3600;
export const MAX_RETENTION_SECONDS = 3650 * 24 * 3600;

/** The tenant's retention from the relay config, clamped to the bounds (the compile step enforces them). */
export function retentionSecondsOf(config: RelayConfig | undefined, tenant: string): number {
  const t = config?.tenants.find((x) => x.name === tenant);
  return clampRetention(t?.privacy?.retentionSeconds ?? DEFAULT_RETENTION_SECONDS);
}

export function clampRetention(seconds: number): number {
  if (!Number.isFinite(seconds)) return DEFAULT_RETENTION_SECONDS;
  return Math.min(MAX_RETENTION_SECONDS, Math.max(MIN_RETENTION_SECONDS, Math.floor(seconds)));
}

/** When an entry written at `timeMs` for a tenant with this retention expires. */
export function expiryMs(timeMs: number, retentionSeconds: number): number {
  return timeMs + clampRetention(retentionSeconds) * 1000;
}

export interface PurgePlan {
  /** Delete every entry whose stored expiry has passed. */
  expiredBeforeMs: number;
  /**
   * Per tenant of the current config: also delete entries older than now − its retention now (a
   * shortened retention applies to entries written under the longer one).
   */
  tenantCutoffs: Array<{ tenant: string; beforeMs: number }>;
}

export function purgePlan(config: RelayConfig | undefined, nowMs: number): PurgePlan {
  const tenantCutoffs = (config?.tenants ?? [])
    .map((t) => ({ tenant: t.name, beforeMs: nowMs - retentionSecondsOf(config, t.name) * 1000 }))
    .sort((a, b) => (a.tenant < b.tenant ? -1 : a.tenant > b.tenant ? 1 : 0));
  return { expiredBeforeMs: nowMs, tenantCutoffs };
}

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
