// A RunMap answers as the Map filled from the same runs in order would: every key found in its run,
// keys of no run (or of a namespace whose prefix another namespace's keys start with) not found,
// iteration in run order.
import { describe, expect, it } from 'vitest';
import { inKeyOrder, type Run } from './key-order.ts';
import { RunMap } from './run-map.ts';

const run = (...keys: string[]): Run<string> => ({ keys, values: keys.map((k) => `v:${k}`) });

function expectSameAsMap(m: RunMap<string>, runs: Array<Run<string>>, absent: string[]): void {
  const want = new Map<string, string>();
  for (const r of runs) for (let i = 0; i < r.keys.length; i++) want.set(r.keys[i], r.values[i]);
  expect(m.size).toBe(want.size);
  expect([...m]).toEqual([...want]);
  expect([...m.keys()]).toEqual([...want.keys()]);
  expect([...m.values()]).toEqual([...want.values()]);
  for (const [k, v] of want) {
    expect(m.get(k)).toBe(v);
    expect(m.has(k)).toBe(true);
    expect(m.keyOf(k)).toBe(k);
  }
  for (const k of absent) {
    expect(m.get(k)).toBeUndefined();
    expect(m.has(k)).toBe(false);
    expect(m.keyOf(k)).toBeUndefined();
  }
  const seen: Array<[string, string]> = [];
  m.forEach((v, k, map) => {
    expect(map).toBe(m);
    seen.push([k, v]);
  });
  expect(seen).toEqual([...want]);
}

describe('RunMap', () => {
  it('finds the keys of section runs and of a run across namespaces', () => {
    const runs = inKeyOrder(
      new Map([
        ['TenantPolicy/a/p', 'v:TenantPolicy/a/p'],
        ['TenantPolicy/a-b/p', 'v:TenantPolicy/a-b/p'],
        ['TenantPolicy/c/p', 'v:TenantPolicy/c/p'],
      ]),
      [[run('MailRoute/a/x', 'MailRoute/a/y')], [run('MailRoute/a-b/x')], [run()], [run('Service/a/mx')]],
    );
    expectSameAsMap(new RunMap(runs), runs, [
      'MailRoute/a/z',
      'MailRoute/a-b/y',
      'MailRoute/a',
      'MailRoute/b/x',
      'TenantPolicy/b/p',
      'TenantPolicy/a/q',
      'Service/a/x',
      '',
      'x',
    ]);
  });

  it('finds keys of one prefix split over several runs', () => {
    // inKeyOrder never makes these, but a RunMap does not depend on it
    const runs = [
      run('MailRoute/a/a', 'MailRoute/a/b'),
      run('MailRoute/a/c', 'MailRoute/b/a'),
      run('MailRoute/b/b'),
    ];
    expectSameAsMap(new RunMap(runs), runs, ['MailRoute/a/d', 'MailRoute/b/c']);
  });

  it('finds each key whatever key was looked up before it', () => {
    const runs = [run('MailRoute/a/x', 'MailRoute/a/y'), run('MailRoute/ab/x'), run('x', 'xy')];
    const m = new RunMap(runs);
    const order = [
      'MailRoute/a/x',
      'MailRoute/ab/x',
      'MailRoute/a/y',
      'MailRoute/a/',
      'x',
      'xy',
      'MailRoute/a/x/z',
    ];
    for (const first of order)
      for (const then of order) {
        m.get(first);
        expect(m.get(then)).toBe(
          then === 'MailRoute/a/' || then === 'MailRoute/a/x/z' ? undefined : `v:${then}`,
        );
      }
  });

  it('finds every key of long runs, and none of the keys between and around them', () => {
    // names that sort around each other in code unit order: '-' < '.' < '0' < 'A' < '_' < 'a' < 'é'
    const names = ['a', 'a-b', 'a.b', 'a0', 'aA', 'a_', 'aa', 'aé', 'b', 'z', 'é'];
    const keysOf = (ns: string) =>
      names.flatMap((n) => Array.from({ length: 37 }, (_, i) => `MailRoute/${ns}/${n}:${i}`)).sort();
    const runs = [
      run(...keysOf('a')),
      run(...keysOf('b')),
      run(...keysOf('c').filter((_, i) => i % 3 !== 0)),
    ];
    const absent = [
      ...keysOf('c').filter((_, i) => i % 3 === 0),
      ...names.flatMap((n) => [`MailRoute/a/${n}`, `MailRoute/a/${n}:37`, `MailRoute/b/${n}:1-`]),
      'MailRoute/a/',
      'MailRoute/a/\uffff',
      'MailRoute/b/!',
    ];
    expectSameAsMap(new RunMap(runs), runs, absent);
  });

  it('is empty over no runs or empty runs', () => {
    expectSameAsMap(new RunMap([]), [], ['MailRoute/a/a']);
    expectSameAsMap(new RunMap([run(), run()]), [], ['MailRoute/a/a']);
  });

  it('gives the values of the runs it was made from, also after another RunMap shares a run', () => {
    const shared = run('MailRoute/a/x');
    const first = new RunMap([shared, run('MailRoute/b/x')]);
    expect(first.get('MailRoute/b/x')).toBe('v:MailRoute/b/x');
    const second = new RunMap([shared, { keys: ['MailRoute/b/x'], values: ['changed'] }]);
    expect(second.get('MailRoute/a/x')).toBe('v:MailRoute/a/x');
    expect(second.get('MailRoute/b/x')).toBe('changed');
    expect(first.get('MailRoute/b/x')).toBe('v:MailRoute/b/x');
  });
});
