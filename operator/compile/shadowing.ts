// Shadowed patterns within one tenant: a later route with the same priority and pattern never wins
// that pattern when an earlier one accepts every sender it accepts (no sender filter, or the same
// filter). Reported on the later route (Accepted=True, Conflicted), which is still served.
import type { Conflict } from '../conditions/resource-status.ts';
import { priorityOf, type RouteEntry } from './compile-state.ts';

/** The shadowed patterns of each route of `entries` (in route order), by route. */
export function shadowedPatterns(entries: RouteEntry[]): Map<RouteEntry, Conflict[]> {
  const conflicts = new Map<RouteEntry, Conflict[]>();
  const firstAny = new Map<string, RouteEntry>();
  const firstSame = new Map<string, RouteEntry>();
  for (const e of entries) {
    const senderKey = e.senders.map((s) => s.text).join(',');
    for (const { pattern, index } of e.recipients) {
      const k = `${priorityOf(e)}|${pattern.text}`;
      const winner = firstAny.get(k) ?? (senderKey !== '' ? firstSame.get(`${k}|${senderKey}`) : undefined);
      if (winner) {
        const list = conflicts.get(e) ?? [];
        list.push({
          field: `spec.match.recipients[${index}]`,
          value: pattern.text,
          winner: winner.meta.label,
        });
        conflicts.set(e, list);
      }
      if (senderKey === '') {
        if (!firstAny.has(k)) firstAny.set(k, e);
      } else if (!firstSame.has(`${k}|${senderKey}`)) firstSame.set(`${k}|${senderKey}`, e);
    }
  }
  return conflicts;
}
