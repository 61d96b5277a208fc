// A read-only Map over runs in key order (key-order.ts), made without copying their entries. At
// 100k resources, filling a Map with every status took about 60 ms and 7 MB of each compile,
// although a change recomputes the run of one namespace and the compile reuses all the others. A
// key is found through its 'Kind/namespace/' prefix (a small map per RunMap, one entry per
// namespace) and then in its run by binary search: a run is sorted already, and a key-to-position
// map per run (kept with reused sections) held about 7 MB at 100k resources for the statuses and
// `sources` maps, for lookups of about seven comparisons in a namespace's run.

import { cmpStr, type Run } from './key-order.ts';

/** The position of `key` in the sorted keys, or -1. */
function positionOf(keys: readonly string[], key: string): number {
  let lo = 0;
  let hi = keys.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const c = cmpStr(keys[mid], key);
    if (c === 0) return mid;
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/** 'Kind/namespace/' of a key 'Kind/namespace/name' (the whole key when it has fewer parts). */
function prefixOf(key: string): string {
  const second = key.indexOf('/', key.indexOf('/') + 1);
  return second < 0 ? key : key.slice(0, second + 1);
}

export class RunMap<V> implements ReadonlyMap<string, V> {
  readonly size: number;
  /** Prefix → the runs with keys of that prefix (one but where runs were merged or split). */
  private readonly byPrefix = new Map<string, Array<Run<V>>>();
  private readonly runs: ReadonlyArray<Run<V>>;
  /** The prefix of the last key looked up, and its runs (see runsOf). */
  private lastPrefix: string | undefined;
  private lastRuns: Array<Run<V>> | undefined;

  /** `runs`: in key order, no key in two of them (what inKeyOrder returns). */
  constructor(runs: ReadonlyArray<Run<V>>) {
    this.runs = runs;
    let size = 0;
    for (const run of runs) {
      const { keys } = run;
      size += keys.length;
      if (keys.length === 0) continue;
      // a namespace's section is one run of one prefix; the policies' run spans all namespaces
      if (prefixOf(keys[0]) === prefixOf(keys[keys.length - 1])) this.add(prefixOf(keys[0]), run);
      else {
        let last: string | undefined;
        for (const k of keys) {
          const p = prefixOf(k);
          if (p !== last) this.add(p, run);
          last = p;
        }
      }
    }
    this.size = size;
  }

  private add(prefix: string, run: Run<V>): void {
    const runs = this.byPrefix.get(prefix);
    if (!runs) this.byPrefix.set(prefix, [run]);
    else if (runs.at(-1) !== run) runs.push(run);
  }

  /**
   * The runs of the key's prefix. Callers look keys up namespace by namespace (a sweep goes through
   * the informer's objects, which it keeps by namespace): the last prefix is checked first, which
   * saves making a prefix string and a map lookup for almost every key.
   */
  private runsOf(key: string): Array<Run<V>> | undefined {
    const last = this.lastPrefix;
    if (
      last !== undefined &&
      key.length > last.length &&
      key.startsWith(last) &&
      key.indexOf('/', last.length) < 0
    )
      return this.lastRuns;
    const prefix = prefixOf(key);
    const runs = this.byPrefix.get(prefix);
    // only a whole 'Kind/namespace/' prefix: the test above is not prefixOf for another kind of key
    if (prefix.endsWith('/')) {
      this.lastPrefix = prefix;
      this.lastRuns = runs;
    }
    return runs;
  }

  /** The run holding `key` and its position there. */
  private find(key: string): { run: Run<V>; i: number } | undefined {
    for (const run of this.runsOf(key) ?? []) {
      const i = positionOf(run.keys, key);
      if (i >= 0) return { run, i };
    }
    return undefined;
  }

  get(key: string): V | undefined {
    const at = this.find(key);
    return at?.run.values[at.i];
  }

  /**
   * The map's own string equal to `key`, or undefined: whoever keeps a key per resource for as long
   * as the compile keeps its runs keeps this one instead of a second copy (at 100k resources a
   * copy per key is about 5 MB).
   */
  keyOf(key: string): string | undefined {
    const at = this.find(key);
    return at?.run.keys[at.i];
  }

  has(key: string): boolean {
    return this.find(key) !== undefined;
  }

  *entries(): MapIterator<[string, V]> {
    for (const run of this.runs) for (let i = 0; i < run.keys.length; i++) yield [run.keys[i], run.values[i]];
  }

  *keys(): MapIterator<string> {
    for (const run of this.runs) yield* run.keys;
  }

  *values(): MapIterator<V> {
    for (const run of this.runs) yield* run.values;
  }

  [Symbol.iterator](): MapIterator<[string, V]> {
    return this.entries();
  }

  forEach(f: (value: V, key: string, map: ReadonlyMap<string, V>) => void, thisArg?: unknown): void {
    for (const [k, v] of this.entries()) f.call(thisArg, v, k, this);
  }
}
