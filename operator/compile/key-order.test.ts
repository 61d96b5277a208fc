// Statuses and sources come out in key order although only each section's own entries are sorted,
// and routes are deduplicated per namespace as over the whole input.
import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../../contract/config/hash.ts';
import type { MailRoute, TenantPolicy } from '../api/types.gen.ts';
import { CompileCache } from './cache.ts';
import { compile, renderRelayConfig } from './compile.ts';
import { byKey, dedupe, dedupeSorted, newCompileState } from './compile-state.ts';
import { eachEntry, inKeyOrder, orderRuns, type Run, runMembersJson, sortedRuns } from './key-order.ts';

const run = (...keys: string[]): Run<number> => ({ keys, values: keys.map((_, i) => i) });
const entries = <V>(runs: Array<Run<V>>): Array<[string, V]> => {
  const out: Array<[string, V]> = [];
  eachEntry(runs, (k, v) => out.push([k, v]));
  return out;
};

describe('sortedRuns', () => {
  it('sorts the entries by key and splits them where the kind changes', () => {
    const runs = sortedRuns(
      new Map([
        ['Service/a/mx', 7],
        ['MailRoute/a/r2', 2],
        ['MailRoute/a/r1', 1],
      ]),
    );
    expect(runs).toEqual([
      { keys: ['MailRoute/a/r1', 'MailRoute/a/r2'], values: [1, 2] },
      { keys: ['Service/a/mx'], values: [7] },
    ]);
    expect(sortedRuns(new Map())).toEqual([]);
  });
});

describe('orderRuns', () => {
  it('orders runs of namespaces by key, not by namespace: a-b/ before a/', () => {
    const a = run('MailRoute/a/x', 'MailRoute/a/y');
    const ab = run('MailRoute/a-b/x');
    const policies = run('TenantPolicy/a-b/p', 'TenantPolicy/a/p');
    expect(orderRuns([policies, a, run(), ab])).toEqual([ab, a, policies]);
  });

  it('refuses runs that overlap: a namespace with a / among the names of another', () => {
    expect(orderRuns([run('MailRoute/a/b', 'MailRoute/a/z'), run('MailRoute/a/m/x')])).toBeUndefined();
    expect(orderRuns([run('MailRoute/a/b'), run('MailRoute/a/b')])).toBeUndefined();
  });
});

describe('inKeyOrder', () => {
  it('puts the phases and the sections in key order', () => {
    const phases = new Map([['TenantPolicy/a/p', 5]]);
    const sections = [
      sortedRuns(new Map([['MailRoute/a/r', 1]])),
      sortedRuns(new Map([['MailRoute/a-b/r', 2]])),
    ];
    expect(entries(inKeyOrder(phases, sections))).toEqual([
      ['MailRoute/a-b/r', 2],
      ['MailRoute/a/r', 1],
      ['TenantPolicy/a/p', 5],
    ]);
  });

  it('sorts everything where runs overlap, the later of two writes of a key winning', () => {
    const sections = [
      sortedRuns(
        new Map([
          ['MailRoute/a/b/c', 1],
          ['MailRoute/a/z', 2],
        ]),
      ),
      sortedRuns(new Map([['MailRoute/a/b/c', 3]])),
    ];
    expect(entries(inKeyOrder(new Map(), sections))).toEqual([
      ['MailRoute/a/b/c', 3],
      ['MailRoute/a/z', 2],
    ]);
  });
});

describe('runMembersJson', () => {
  it('gives the members of the canonical JSON of the runs as one record, once per run', () => {
    const runs = sortedRuns(
      new Map([
        ['MailRoute/a/r"1', 3],
        ['MailRoute/a-b/r', 0],
        ['Service/a/mx', 12],
        ['TenantPolicy/a/p', 1e21],
      ]),
    );
    const record: Record<string, number> = {};
    eachEntry(runs, (k, v) => {
      record[k] = v;
    });
    expect(`{${runs.map(runMembersJson).join(',')}}`).toBe(canonicalJson(record));
    expect(runMembersJson(runs[0])).toBe(runMembersJson(runs[0]));
  });

  it('declines a value that is not JSON', () => {
    expect(runMembersJson({ keys: ['a/b'], values: [Number.NaN] })).toBeUndefined();
  });
});

const policy = (ns: string, domain: string): TenantPolicy => ({
  apiVersion: 'mailplus.io/v1alpha1',
  kind: 'TenantPolicy',
  metadata: { name: 'p', namespace: ns, generation: 1, creationTimestamp: '2026-01-01T00:00:00Z' },
  spec: { domains: [domain] },
});
const route = (ns: string, name: string, domain: string, generation = 1, host = 'mx'): MailRoute => ({
  apiVersion: 'mailplus.io/v1alpha1',
  kind: 'MailRoute',
  metadata: { name, namespace: ns, generation, creationTimestamp: '2026-01-02T00:00:00Z' },
  spec: { priority: 100, match: { recipients: [`*@${domain}`] }, forward: { upstreams: [{ host }] } },
});

describe('dedupeSorted', () => {
  it('keeps what dedupe keeps (larger generation, smaller text, else the first), in key order', () => {
    const first = route('a', 'r', 'a.example', 2, 'mx1');
    const items = [
      route('a', 'r', 'a.example', 1),
      first,
      route('a', 's', 'a.example', 1, 'mx2'),
      route('a', 'r', 'a.example', 2, 'mx2'),
      route('a', 's', 'a.example', 1, 'mx1'),
      route('a', 'r', 'a.example', 2, 'mx1'),
      route('a', 'q', 'a.example'),
    ];
    for (const cache of [undefined, new CompileCache()]) {
      const state = newCompileState({ tenantPolicies: [], mailRoutes: items, services: [] }, { cache });
      const expected = dedupe(state, 'MailRoute', items).sort(byKey);
      const got = dedupeSorted(state, 'MailRoute', items);
      expect(got.map(([, raw]) => raw)).toEqual(expected.map(([, raw]) => raw));
      // the same objects: of two equal texts, the first in the input
      for (const [i, [, raw]] of got.entries()) expect(raw).toBe(expected[i][1]);
      expect(got[1][1]).toBe(first);
      expect(got.map(([m]) => m.key)).toEqual(['MailRoute/a/q', 'MailRoute/a/r', 'MailRoute/a/s']);
    }
  });
});

describe('compile output order', () => {
  it('is key order for namespaces whose order differs by key (a, a-b) and with a / in a namespace', () => {
    const tenantPolicies = [
      policy('a', 'a.example'),
      policy('a-b', 'ab.example'),
      policy('a/m', 'am.example'),
    ];
    const mailRoutes = [
      route('a', 'm', 'a.example'),
      route('a-b', 'x', 'ab.example'),
      route('a/m', 'x', 'am.example'),
      route('a', 'z', 'a.example'),
      route('a-b', 'x', 'ab.example', 2),
    ];
    for (const input of [
      { tenantPolicies, mailRoutes, services: [] },
      {
        tenantPolicies: tenantPolicies.slice(0, 2),
        mailRoutes: mailRoutes.filter((r) => r.metadata.namespace !== 'a/m'),
        services: [],
      },
    ]) {
      const scratch = compile(input);
      const keys = [...scratch.statuses.keys()];
      expect(keys).toEqual([...keys].sort());
      const sources = Object.keys(scratch.config.sources ?? {});
      expect(sources).toEqual([...sources].sort());
      expect(sources[0]).toBe('MailRoute/a-b/x');
      expect(scratch.config.sources?.['MailRoute/a-b/x']).toBe(2);
      const cached = compile(input, { cache: new CompileCache() });
      expect(renderRelayConfig(cached.config)).toBe(renderRelayConfig(scratch.config));
      expect([...cached.statuses]).toEqual([...scratch.statuses]);
    }
  });
});
