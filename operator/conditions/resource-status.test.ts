// Statuses of the same decisions at the same generation are one frozen object (100k accepted
// MailRoutes: one status, not 100k), and sharing never changes what a status says.
import { describe, expect, it } from 'vitest';
import { type Conflict, makeStatus, type Verdict } from './resource-status.ts';

const ok: Verdict = { status: 'True', reason: 'Accepted', message: 'accepted' };
const refs: Verdict = { status: 'True', reason: 'ResolvedRefs', message: 'all references resolved' };
const conflict: Conflict = {
  field: 'spec.match.recipients[0]',
  value: 'a@x.example',
  winner: 'MailRoute a/b',
};

describe('makeStatus', () => {
  it('one frozen status per generation and decisions', () => {
    const a = makeStatus(1, { ...ok }, { ...refs });
    expect(makeStatus(1, { ...ok }, { ...refs })).toBe(a);
    expect(Object.isFrozen(a)).toBe(true);
    expect(() => {
      (a as { generation?: number }).generation = 2;
    }).toThrow(TypeError);
    expect(makeStatus(2, ok, refs)).not.toBe(a);
    expect(makeStatus(2, ok, refs)).toBe(makeStatus(2, ok, refs));
    expect(makeStatus(undefined, ok, refs)).toBe(makeStatus(undefined, ok, refs));
    expect(makeStatus(1, { ...ok, message: 'other' }, refs)).not.toBe(a);
  });

  it('says what an unshared status says, fields in the same order', () => {
    expect(JSON.stringify(makeStatus(3, ok, refs))).toBe(
      JSON.stringify({
        conditions: [
          { type: 'Accepted', ...ok },
          { type: 'ResolvedRefs', ...refs },
          { type: 'Ready', status: 'True', reason: 'Ready', message: 'Accepted and all references resolved' },
        ],
        generation: 3,
      }),
    );
    expect(Object.keys(makeStatus(undefined, ok, refs))).toEqual(['conditions']);
  });

  it('a status with conflicts is its own (mutable) object, conflicts last', () => {
    const s = makeStatus(1, ok, refs, [conflict]);
    expect(s).not.toBe(makeStatus(1, ok, refs, [conflict]));
    expect(Object.isFrozen(s)).toBe(false);
    expect(Object.keys(s)).toEqual(['conditions', 'generation', 'conflicts']);
    expect(s.conflicts).toEqual([conflict]);
    expect(s.conditions).toBe(makeStatus(1, ok, refs).conditions);
    // no conflicts is no conflicts field, and the shared status
    expect(makeStatus(1, ok, refs, [])).toBe(makeStatus(1, ok, refs));
  });

  it('past 1024 generations of the same decisions the table starts again, statuses stay equal', () => {
    const first = makeStatus(1, ok, refs);
    for (let g = 2; g <= 1100; g++) makeStatus(g, ok, refs);
    const again = makeStatus(1, ok, refs);
    expect(again).toEqual(first);
    expect(makeStatus(1, ok, refs)).toBe(again);
  });
});
