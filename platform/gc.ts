// V8's gc function for the few places that pace collection themselves (the relay's read buffers, the
// operator's memory after a burst). It comes from a vm context created with --expose-gc set for that
// moment only: the flag is cleared again right away, nothing else sees it.
import v8 from 'node:v8';
import vm from 'node:vm';

export type GcFn = (options?: {
  type?: 'minor' | 'major';
  execution?: 'sync' | 'async';
  /** 'last-resort': collect repeatedly, compact, and give the freed pages back to the system. */
  flavor?: 'regular' | 'last-resort';
}) => void;

let gc: GcFn | undefined | null = null; // null: not looked up yet

/** The gc function; undefined where it cannot be had (then callers leave collection to V8). */
export function obtainGc(): GcFn | undefined {
  if (gc !== null) return gc;
  const existing = (globalThis as { gc?: GcFn }).gc;
  if (typeof existing === 'function') {
    gc = existing;
    return gc;
  }
  try {
    v8.setFlagsFromString('--expose-gc');
    const fn = vm.runInNewContext('gc') as unknown;
    gc = typeof fn === 'function' ? (fn as GcFn) : undefined;
  } catch {
    gc = undefined;
  } finally {
    v8.setFlagsFromString('--no-expose-gc');
  }
  return gc;
}
