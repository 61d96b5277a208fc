// Statuses and `sources` in 'Kind/namespace/name' key order without sorting all of them (100k) on
// every compile: each namespace section sorts its own entries once, when it is computed (a
// CompileCache then reuses them), and the compile puts these sorted runs in order by their first
// keys. Runs of one kind and namespace never interleave with others, so that is the key order;
// it is checked (one comparison per run), and where runs do overlap (only a namespace with a '/'
// in it can make them) everything is sorted as before.

/** Code unit order, as Array.prototype.sort orders strings by default. */
export const cmpStr = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** Entries in key order, all of one kind (the key up to its first '/'), as parallel arrays. */
export interface Run<V> {
  readonly keys: readonly string[];
  readonly values: readonly V[];
}

const kindOf = (key: string): string => key.slice(0, key.indexOf('/') + 1);

/** The entries sorted by key, split into one run per kind. */
export function sortedRuns<V>(entries: Iterable<readonly [string, V]>): Array<Run<V>> {
  const runs: Array<{ keys: string[]; values: V[] }> = [];
  let kind: string | undefined;
  for (const [k, v] of [...entries].sort((a, b) => cmpStr(a[0], b[0]))) {
    if (kindOf(k) !== kind) {
      kind = kindOf(k);
      runs.push({ keys: [], values: [] });
    }
    const run = runs[runs.length - 1];
    run.keys.push(k);
    run.values.push(v);
  }
  return runs;
}

/**
 * The runs ordered by their first keys, or undefined when that is not key order: a run's keys
 * overlap another's (a key between two of the other's, or in both).
 */
export function orderRuns<V>(runs: ReadonlyArray<Run<V>>): Array<Run<V>> | undefined {
  const order = runs.filter((r) => r.keys.length > 0).sort((a, b) => cmpStr(a.keys[0], b.keys[0]));
  for (let i = 1; i < order.length; i++) {
    const before = order[i - 1].keys;
    if (!(before[before.length - 1] < order[i].keys[0])) return undefined;
  }
  return order;
}

/**
 * The entries of `phases` (written by the phases before the sections) and of the sections (in the
 * order they were compiled) in key order. A key written twice keeps its last value, as a Map
 * filled in that order would.
 */
export function inKeyOrder<V>(
  phases: ReadonlyMap<string, V>,
  sections: ReadonlyArray<ReadonlyArray<Run<V>>>,
): Array<Run<V>> {
  const ordered = orderRuns([...sortedRuns(phases), ...sections.flat()]);
  if (ordered) return ordered;
  const all = new Map(phases);
  for (const runs of sections) eachEntry(runs, (k, v) => all.set(k, v));
  return sortedRuns(all);
}

/** Calls `f` with each entry of the runs, in order. */
export function eachEntry<V>(runs: Iterable<Run<V>>, f: (key: string, value: V) => void): void {
  for (const run of runs) for (let i = 0; i < run.keys.length; i++) f(run.keys[i], run.values[i]);
}

const runJson = new WeakMap<Run<number>, string>();

/**
 * The JSON of a run of numbers as members of an object ('"key":value,...'), once per run: cached
 * sections keep their runs, so the canonical JSON of 100k `sources` is mostly made of texts made
 * by earlier compiles. Undefined for a value that is not a finite number (not JSON).
 */
export function runMembersJson(run: Run<number>): string | undefined {
  let json = runJson.get(run);
  if (json !== undefined) return json;
  if (!run.values.every((v) => Number.isFinite(v))) return undefined;
  json = run.keys.map((k, i) => `${JSON.stringify(k)}:${run.values[i]}`).join(',');
  runJson.set(run, json);
  return json;
}
