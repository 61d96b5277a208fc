// Programmed: does every live relay serve this generation? Relays report the hash of the config
// they loaded (report Leases); the operator remembers which generations each published config
// contained (its `sources`, by hash). Pure: leases are plain data, time is a parameter.
import { REASONS, type ResourceStatus, type StatusCondition, summarizeReady } from './status.ts';

export interface RelayReport {
  /** The relay's id (Lease holderIdentity). */
  id: string;
  /** Hash of the config the relay serves; undefined when it has none yet. */
  hash?: string;
  /** Last renewal, ms since the epoch. */
  renewedAt: number;
  leaseDurationSeconds: number;
}

/** Relays whose report was renewed within its duration, sorted by id. */
export function liveRelays(reports: RelayReport[], nowMs: number): RelayReport[] {
  return reports
    .filter((r) => Number.isFinite(r.renewedAt) && r.renewedAt + r.leaseDurationSeconds * 1000 > nowMs)
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/**
 * `sources` of the configs published recently, by hash; bounded (oldest forgotten first), so a
 * relay stuck on an ancient config counts as not serving anything current.
 */
export class ConfigHistory {
  private readonly byHash = new Map<string, Record<string, number>>();
  private readonly limit: number;
  constructor(limit = 32) {
    this.limit = limit;
  }
  remember(hash: string, sources: Record<string, number>): void {
    this.byHash.delete(hash);
    this.byHash.set(hash, sources);
    while (this.byHash.size > this.limit) {
      const oldest = this.byHash.keys().next().value as string;
      this.byHash.delete(oldest);
    }
  }
  sources(hash: string | undefined): Record<string, number> | undefined {
    return hash === undefined ? undefined : this.byHash.get(hash);
  }
  get size(): number {
    return this.byHash.size;
  }
}

export interface ProgrammedInput {
  /** 'Kind/ns/name'. */
  key: string;
  /** The object's current metadata.generation. */
  generation: number;
  /** Sources of the config compiled from the current objects: absent key = not accepted. */
  currentSources: Record<string, number>;
  live: RelayReport[];
  history: ConfigHistory;
  /** Fleet name for messages (the ConfigMap). */
  fleet: string;
}

export function programmedCondition(input: ProgrammedInput): StatusCondition {
  const { key, generation, live, history } = input;
  if (!(key in input.currentSources)) {
    return {
      type: 'Programmed',
      status: 'False',
      reason: REASONS.invalid,
      message: 'not part of the relay config: see the Accepted condition',
    };
  }
  const served = input.currentSources[key];
  if (served < generation) {
    // an invalid generation: the last valid one stays in force (see compile/carry-over.ts)
    return {
      type: 'Programmed',
      status: 'False',
      reason: REASONS.invalid,
      message: `generation ${generation} is not programmed (see Accepted); relays keep serving generation ${served}, the last valid one`,
    };
  }
  if (live.length === 0) {
    return {
      type: 'Programmed',
      status: 'False',
      reason: REASONS.noRelays,
      message: `no live relay reports for fleet ${input.fleet} (no report Lease renewed within its duration); start relays with --configmap or check their RBAC for leases`,
    };
  }
  let serving = 0;
  for (const r of live) {
    const g = history.sources(r.hash)?.[key];
    if (g !== undefined && g >= generation) serving++;
  }
  if (serving === live.length) {
    return {
      type: 'Programmed',
      status: 'True',
      reason: REASONS.programmed,
      message: `generation ${generation} is served by all ${live.length} live relay${live.length === 1 ? '' : 's'}`,
    };
  }
  return {
    type: 'Programmed',
    status: 'False',
    reason: REASONS.pending,
    message: `${serving} of ${live.length} live relays serve generation ${generation}; waiting for the others to load the new config`,
  };
}

/** The compile status with Programmed added and Ready recomputed: Accepted, ResolvedRefs, Programmed, Ready. */
export function withProgrammed(status: ResourceStatus, programmed: StatusCondition): ResourceStatus {
  const base = status.conditions.filter((c) => c.type !== 'Ready' && c.type !== 'Programmed');
  const conditions = [...base, programmed];
  conditions.push(summarizeReady(conditions));
  return { ...status, conditions };
}
