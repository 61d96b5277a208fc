import { describe, expect, it } from 'vitest';
import { ConfigHistory, programmedCondition, withProgrammed } from './programmed.ts';
import { makeStatus } from './resource-status.ts';

const relay = (id: string, hash: string | undefined, error?: string) => ({ id, hash, error });

describe('Programmed', () => {
  const history = new ConfigHistory(2);
  history.remember('h1', { 'MailRoute/a/r': 1 });
  history.remember('h2', { 'MailRoute/a/r': 2 });
  const base = {
    key: 'MailRoute/a/r',
    generation: 2,
    currentSources: { 'MailRoute/a/r': 2 },
    history,
    fleet: 'ns/cm',
  };

  it('True when every live relay serves a config with this generation or later', () => {
    const c = programmedCondition({ ...base, live: [relay('a', 'h2'), relay('b', 'h2')] });
    expect(c).toMatchObject({ status: 'True', reason: 'Programmed' });
    expect(c.message).toContain('all 2 live relays');
  });

  it('Pending with N of M while relays lag; unknown hashes count as lagging', () => {
    const c = programmedCondition({
      ...base,
      live: [relay('a', 'h2'), relay('b', 'h1'), relay('c', 'nope'), relay('d', undefined)],
    });
    expect(c).toMatchObject({ status: 'False', reason: 'Pending' });
    expect(c.message).toMatch(/^1 of 4 live relays serve generation 2/);
    expect(c.message).not.toContain('not reachable');
  });

  it('names relays it could not ask (at most 3), which count as not serving', () => {
    const c = programmedCondition({
      ...base,
      live: [
        relay('a', 'h2'),
        relay('b', undefined, 'ECONNREFUSED'),
        relay('c', undefined, 'no answer within 2000 ms'),
        relay('d', undefined, 'HTTP 500'),
        relay('e', undefined, 'answer larger than 65536 bytes'),
      ],
    });
    expect(c).toMatchObject({ status: 'False', reason: 'Pending' });
    expect(c.message).toBe(
      '1 of 5 live relays serve generation 2; waiting for the others to load the new config; not reachable: b (ECONNREFUSED), c (no answer within 2000 ms), d (HTTP 500) and 1 more',
    );
  });

  it('NoRelays without live relays; Invalid when not in the config', () => {
    expect(programmedCondition({ ...base, live: [] })).toMatchObject({ status: 'False', reason: 'NoRelays' });
    expect(programmedCondition({ ...base, currentSources: {}, live: [relay('a', 'h2')] })).toMatchObject({
      status: 'False',
      reason: 'Invalid',
    });
  });

  it('history is bounded: the oldest hash is forgotten', () => {
    const h = new ConfigHistory(2);
    h.remember('x', {});
    h.remember('y', {});
    h.remember('z', {});
    expect(h.sources('x')).toBeUndefined();
    expect(h.size).toBe(2);
  });

  it('history keeps older configs as differences: every lookup equals a full copy per hash', () => {
    // random walks of configs (changed, added and removed keys, a hash published again) against
    // a naive history that keeps a copy of every config's sources
    let seed = 7;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return (seed >>> 8) % n;
    };
    for (let run = 0; run < 20; run++) {
      const h = new ConfigHistory(5);
      const naive = new Map<string, Record<string, number>>();
      const byHash = new Map<string, Record<string, number>>();
      let current: Record<string, number> = {};
      for (let step = 0; step < 40; step++) {
        let hash: string;
        if (byHash.size > 0 && rnd(4) === 0) {
          hash = [...byHash.keys()][rnd(byHash.size)];
          current = byHash.get(hash) as Record<string, number>;
        } else {
          current = { ...current };
          const k = `MailRoute/ns/r${rnd(8)}`;
          if (rnd(3) === 0) delete current[k];
          else current[k] = rnd(4) + 1;
          hash = JSON.stringify(Object.entries(current).sort());
          byHash.set(hash, current);
        }
        // as a record (a config read back) or a map (a compiled config's sourcesOf)
        h.remember(hash, rnd(2) === 0 ? current : new Map(Object.entries(current)));
        naive.delete(hash);
        naive.set(hash, { ...current });
        while (naive.size > 5) naive.delete(naive.keys().next().value as string);
        expect(h.size).toBe(naive.size);
        for (const known of byHash.keys()) {
          const want = naive.get(known);
          expect(h.has(known)).toBe(want !== undefined);
          expect(h.sources(known)).toEqual(want);
          for (let r = 0; r < 8; r++)
            expect(h.generation(known, `MailRoute/ns/r${r}`)).toBe(want?.[`MailRoute/ns/r${r}`]);
          // every key whose generation differs between two known configs is among changedKeys
          for (const other of byHash.keys()) {
            const changed = h.changedKeys(known, other);
            const theirs = naive.get(other);
            expect(changed === undefined).toBe(want === undefined || theirs === undefined);
            if (!changed || !want || !theirs) continue;
            for (let r = 0; r < 8; r++) {
              const k = `MailRoute/ns/r${r}`;
              if (want[k] !== theirs[k]) expect(changed.has(k), `${k} differs`).toBe(true);
            }
          }
        }
      }
    }
  });

  it('Ready = Accepted ∧ ResolvedRefs ∧ Programmed', () => {
    const s = makeStatus(
      2,
      { status: 'True', reason: 'Accepted', message: 'ok' },
      { status: 'True', reason: 'ResolvedRefs', message: 'ok' },
    );
    const pending = withProgrammed(s, {
      type: 'Programmed',
      status: 'False',
      reason: 'Pending',
      message: '0 of 1',
    });
    expect(pending.conditions.map((c) => c.type)).toEqual([
      'Accepted',
      'ResolvedRefs',
      'Programmed',
      'Ready',
      'Reconciling',
      'Stalled',
    ]);
    expect(pending.conditions[3]).toMatchObject({ status: 'False', reason: 'Pending' });
    // kstatus: on its way, not stalled
    expect(pending.conditions[4]).toMatchObject({ type: 'Reconciling', status: 'True', reason: 'Pending' });
    expect(pending.conditions[5]).toMatchObject({ type: 'Stalled', status: 'False', reason: 'NotStalled' });
    const done = withProgrammed(s, {
      type: 'Programmed',
      status: 'True',
      reason: 'Programmed',
      message: 'ok',
    });
    expect(done.conditions[3]).toMatchObject({ status: 'True', reason: 'Ready' });
    expect(done.conditions.slice(4)).toMatchObject([
      { type: 'Reconciling', status: 'False', reason: 'Reconciled' },
      { type: 'Stalled', status: 'False' },
    ]);
  });

  it('kstatus: Stalled for anything that needs a change by someone (as Argo CD Degraded), else Reconciling', () => {
    const invalid = makeStatus(
      3,
      { status: 'False', reason: 'InvalidSpec', message: 'spec.x: bad' },
      { status: 'Unknown', reason: 'InvalidSpec', message: 'not checked' },
    );
    const s = withProgrammed(invalid, {
      type: 'Programmed',
      status: 'False',
      reason: 'Invalid',
      message: 'x',
    });
    expect(s.conditions.slice(4)).toMatchObject([
      { type: 'Reconciling', status: 'False', reason: 'Reconciled' },
      { type: 'Stalled', status: 'True', reason: 'InvalidSpec', message: 'spec.x: bad' },
    ]);
    const ok = makeStatus(
      3,
      { status: 'True', reason: 'Accepted', message: 'ok' },
      { status: 'True', reason: 'ResolvedRefs', message: 'ok' },
    );
    const noRelays = withProgrammed(ok, {
      type: 'Programmed',
      status: 'False',
      reason: 'NoRelays',
      message: 'x',
    });
    expect(noRelays.conditions[5]).toMatchObject({ type: 'Stalled', status: 'True', reason: 'NoRelays' });
    const notYet = makeStatus(
      3,
      { status: 'True', reason: 'Accepted', message: 'ok' },
      { status: 'Unknown', reason: 'Pending', message: 'not known yet' },
    );
    const unknown = withProgrammed(notYet, {
      type: 'Programmed',
      status: 'True',
      reason: 'Programmed',
      message: 'x',
    });
    expect(unknown.conditions.slice(3).map((c) => `${c.type}=${c.status}`)).toEqual([
      'Ready=Unknown',
      'Reconciling=True',
      'Stalled=False',
    ]);
  });
});
