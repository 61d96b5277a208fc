// metav1.Condition bookkeeping, pure: turning computed conditions into the API shape with
// lastTransitionTime kept unless the status flips, deciding whether a write is needed (ignoring
// lastTransitionTime and conditions other writers own), and which transitions deserve an Event.
import type { Condition } from '../api/types.gen.ts';
import { isWarning, type ResourceStatus, type StatusCondition } from './resource-status.ts';

/** The condition types this operator owns on TenantPolicy and MailRoute. */
export const OWNED_TYPES = [
  'Accepted',
  'ResolvedRefs',
  'Programmed',
  'Ready',
  'Reconciling',
  'Stalled',
] as const;
const OWNED = new Set<string>(OWNED_TYPES);

export interface DesiredStatus {
  observedGeneration: number;
  /** Only the owned conditions, in OWNED_TYPES order. */
  conditions: Condition[];
}

/** API conditions for `computed`; lastTransitionTime carried over from `current` when the status did not flip. */
export function toApiConditions(
  computed: StatusCondition[],
  generation: number,
  current: Condition[] | undefined,
  now: Date,
): Condition[] {
  const byType = new Map((current ?? []).map((c) => [c.type, c]));
  const out: Condition[] = [];
  for (const type of OWNED_TYPES) {
    const c = computed.find((x) => x.type === type);
    if (!c) continue;
    const prev = byType.get(type);
    out.push({
      type,
      status: c.status,
      observedGeneration: generation,
      lastTransitionTime:
        prev && prev.status === c.status && prev.lastTransitionTime
          ? prev.lastTransitionTime
          : now.toISOString().replace(/\.\d{3}Z$/, 'Z'),
      reason: c.reason,
      // metav1.Condition: message ≤ 32768
      message: c.message.length > 32_000 ? `${c.message.slice(0, 32_000)}…` : c.message,
    });
  }
  return out;
}

export function desiredStatus(
  status: ResourceStatus,
  generation: number,
  current: { observedGeneration?: number; conditions?: Condition[] } | undefined,
  now: Date,
): DesiredStatus {
  return {
    observedGeneration: generation,
    conditions: toApiConditions(status.conditions, generation, current?.conditions, now),
  };
}

const sameCondition = (a: Condition, b: Condition): boolean =>
  a.status === b.status &&
  a.reason === b.reason &&
  a.message === b.message &&
  (a.observedGeneration ?? -1) === (b.observedGeneration ?? -1);

/** True when the stored status differs from the desired one in anything but lastTransitionTime or foreign conditions. */
export function statusDiffers(
  current: { observedGeneration?: number; conditions?: Condition[] } | undefined,
  desired: DesiredStatus,
): boolean {
  if ((current?.observedGeneration ?? -1) !== desired.observedGeneration) return true;
  const mine = (current?.conditions ?? []).filter((c) => OWNED.has(c.type));
  if (mine.length !== desired.conditions.length) return true;
  for (const d of desired.conditions) {
    const c = mine.find((x) => x.type === d.type);
    if (!c || !sameCondition(c, d)) return true;
  }
  return false;
}

export interface Transition {
  type: 'Normal' | 'Warning';
  /** CamelCase, ≤128 chars. */
  reason: string;
  note: string;
}

const find = (list: Array<{ type: string }> | undefined, type: string) =>
  list?.find((c) => c.type === type) as Condition | undefined;

/**
 * Events for a status change: Accepted flips, Ready flips, a conflict appearing. Nothing on the
 * first visit of an object whose stored status already says the same, no Warning while Ready is
 * only False because relays are loading the new config (reason Pending: every rollout).
 */
export function transitions(
  label: string,
  current: Condition[] | undefined,
  desired: Condition[],
): Transition[] {
  const out: Transition[] = [];
  const was = (t: string) => find(current, t);
  const now = (t: string) => find(desired, t);
  const acc = now('Accepted');
  const accWas = was('Accepted');
  if (acc?.status === 'False') {
    if (accWas?.status !== 'False' || accWas.reason !== acc.reason)
      out.push({ type: 'Warning', reason: acc.reason, note: `${label} not accepted: ${acc.message}` });
  } else if (acc?.status === 'True') {
    // accepted with a warning (Conflicted, DomainClaimedByOtherTenant): a conflict appeared
    if (isWarning(acc)) {
      if (accWas?.reason !== acc.reason)
        out.push({ type: 'Warning', reason: acc.reason, note: `${label}: ${acc.message}` });
    } else if (accWas?.status !== 'True')
      out.push({ type: 'Normal', reason: 'Accepted', note: `${label}: ${acc.message}` });
  }
  const ready = now('Ready');
  const readyWas = was('Ready');
  if (ready && readyWas?.status !== ready.status) {
    if (ready.status === 'True')
      out.push({ type: 'Normal', reason: 'Ready', note: `${label} is ready: ${ready.message}` });
    else if (ready.reason !== 'Pending')
      out.push({
        type: 'Warning',
        reason: ready.reason === 'Ready' ? 'NotReady' : ready.reason,
        note: `${label} is not ready: ${ready.message}`,
      });
  }
  return out.map((t) => ({ ...t, reason: t.reason.slice(0, 128), note: t.note.slice(0, 1000) }));
}
