// Retention: every tenant's entries are kept for its TenantPolicy.spec.privacy.retention (default
// 720h = 30 days, bounded 1h..87600h = 3650 days), then purged. Pure.
import type { RelayConfig } from '../../contract/config/types.gen.ts';
import {
  DEFAULT_RETENTION_SECONDS,
  MAX_RETENTION_SECONDS,
  MIN_RETENTION_SECONDS,
} from '../../contract/grammar/retention.ts';

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
