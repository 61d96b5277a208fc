import { describe, expect, it } from 'vitest';
import type { Condition } from '../api/types.gen.ts';
import { EventDeduper } from '../status/events.ts';
import { mergeConditions } from '../status/writer.ts';
import { desiredStatus, statusDiffers, toApiConditions, transitions } from './api-conditions.ts';
import type { StatusCondition } from './resource-status.ts';

const computed = (acc: 'True' | 'False', reason = 'Accepted'): StatusCondition[] => [
  { type: 'Accepted', status: acc, reason, message: 'm' },
  { type: 'ResolvedRefs', status: 'True', reason: 'ResolvedRefs', message: 'r' },
  { type: 'Programmed', status: 'True', reason: 'Programmed', message: 'p' },
  { type: 'Ready', status: acc, reason: acc === 'True' ? 'Ready' : reason, message: 'x' },
];
const t0 = new Date('2026-01-01T00:00:00.123Z');
const t1 = new Date('2026-01-02T00:00:00Z');

describe('conditions', () => {
  it('keeps lastTransitionTime unless the status flips; second precision; observedGeneration in each', () => {
    const first = toApiConditions(computed('True'), 1, undefined, t0);
    expect(first[0]).toMatchObject({
      type: 'Accepted',
      observedGeneration: 1,
      lastTransitionTime: '2026-01-01T00:00:00Z',
    });
    const same = toApiConditions(computed('True'), 2, first, t1);
    expect(same[0].lastTransitionTime).toBe('2026-01-01T00:00:00Z');
    expect(same[0].observedGeneration).toBe(2);
    const flipped = toApiConditions(computed('False', 'InvalidSpec'), 2, first, t1);
    expect(flipped[0].lastTransitionTime).toBe('2026-01-02T00:00:00Z');
    expect(flipped[1].lastTransitionTime).toBe('2026-01-01T00:00:00Z');
  });

  it('needs no write when only lastTransitionTime or foreign conditions differ', () => {
    const d = desiredStatus({ conditions: computed('True') }, 3, undefined, t0);
    const foreign: Condition = {
      type: 'ExternalCheck',
      status: 'False',
      reason: 'X',
      message: '',
      lastTransitionTime: 'z',
    };
    const stored = {
      observedGeneration: 3,
      conditions: [foreign, ...d.conditions.map((c) => ({ ...c, lastTransitionTime: 'other' }))],
    };
    expect(statusDiffers(stored, d)).toBe(false);
    expect(statusDiffers({ ...stored, observedGeneration: 2 }, d)).toBe(true);
    expect(statusDiffers({ observedGeneration: 3, conditions: stored.conditions.slice(0, 3) }, d)).toBe(true);
    const changed = stored.conditions.map((c) => (c.type === 'Ready' ? { ...c, message: 'new' } : c));
    expect(statusDiffers({ observedGeneration: 3, conditions: changed }, d)).toBe(true);
    expect(statusDiffers(undefined, d)).toBe(true);
  });

  it('emits Events on transitions only: Accepted and Ready flips, conflicts appearing', () => {
    const ok = toApiConditions(computed('True'), 1, undefined, t0);
    expect(transitions('MailRoute a/b', undefined, ok).map((t) => [t.type, t.reason])).toEqual([
      ['Normal', 'Accepted'],
      ['Normal', 'Ready'],
    ]);
    expect(transitions('MailRoute a/b', ok, ok)).toEqual([]);
    const bad = toApiConditions(computed('False', 'InvalidSpec'), 2, ok, t1);
    expect(transitions('MailRoute a/b', ok, bad).map((t) => [t.type, t.reason])).toEqual([
      ['Warning', 'InvalidSpec'],
      ['Warning', 'InvalidSpec'],
    ]);
    const conflicted = toApiConditions(computed('True', 'Conflicted'), 2, ok, t1);
    expect(transitions('MailRoute a/b', ok, conflicted).map((t) => t.reason)).toEqual(['Conflicted']);
    // a rollout (Ready False/Pending) is not a Warning
    const pending = ok.map((c) =>
      c.type === 'Ready' ? { ...c, status: 'False' as const, reason: 'Pending' } : c,
    );
    expect(transitions('MailRoute a/b', ok, pending)).toEqual([]);
  });

  it('dedupes events per object: same note once per window, at most a burst per object', () => {
    const d = new EventDeduper(60_000, 3);
    const t = { type: 'Warning' as const, reason: 'InvalidSpec', note: 'n' };
    expect(d.allow('k', t, 0)).toBe(true);
    expect(d.allow('k', t, 1000)).toBe(false);
    expect(d.allow('k', { ...t, note: 'n2' }, 1000)).toBe(true);
    expect(d.allow('k', { ...t, note: 'n3' }, 1000)).toBe(true);
    expect(d.allow('k', { ...t, note: 'n4' }, 1000)).toBe(false);
    expect(d.allow('other', t, 1000)).toBe(true);
    expect(d.allow('k', t, 61_000)).toBe(true);
  });

  it('remembers the events of at most maxObjects objects, forgetting the least recently used', () => {
    const d = new EventDeduper(60_000, 3, 100);
    const t = { type: 'Normal' as const, reason: 'Programmed', note: 'n' };
    for (let i = 0; i < 1000; i++) expect(d.allow(`k${i}`, t, 0)).toBe(true);
    expect(d.size).toBe(100);
    // a use moves an object to the end: k900 (the oldest remembered) stays while 99 newer arrive
    expect(d.allow('k900', { ...t, note: 'n2' }, 1)).toBe(true);
    for (let i = 1000; i < 1099; i++) d.allow(`k${i}`, t, 2);
    expect(d.size).toBe(100);
    // remembered: the same event again is suppressed; a forgotten object's is not
    expect(d.allow('k900', t, 3)).toBe(false);
    expect(d.allow('k1098', t, 3)).toBe(false);
    expect(d.allow('k901', t, 3)).toBe(true);
    expect(d.allow('k0', t, 3)).toBe(true);
  });

  it('merges: foreign conditions kept in place, ours replaced or appended', () => {
    const f = (type: string, message = ''): Condition => ({
      type,
      status: 'True',
      reason: 'R',
      message,
      lastTransitionTime: 't',
    });
    const merged = mergeConditions(
      [f('Accepted', 'old'), f('ExternalCheck'), f('Ready', 'old')],
      [f('Accepted', 'new'), f('Programmed'), f('Ready', 'new')],
    );
    expect(merged.map((c) => `${c.type}:${c.message}`)).toEqual([
      'Accepted:new',
      'ExternalCheck:',
      'Ready:new',
      'Programmed:',
    ]);
  });
});
