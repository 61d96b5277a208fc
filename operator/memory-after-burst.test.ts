import { describe, expect, it } from 'vitest';
import { obtainGc } from '../platform/gc.ts';
import { createLogger } from '../platform/log.ts';
import { MemoryAfterBurst } from './memory-after-burst.ts';

describe('MemoryAfterBurst', () => {
  it('collects (last resort) once the reconciles since the last collection reach the minimum, then counts again', () => {
    const calls: unknown[] = [];
    const lines: string[] = [];
    const m = new MemoryAfterBurst({
      minReconciles: 10,
      logger: createLogger((l) => lines.push(l)),
      gc: () => (opts) => calls.push(opts),
      rss: () => 300 * 1024 * 1024,
    });
    m.drained(4);
    m.drained(5);
    expect(calls).toEqual([]);
    m.drained(1);
    expect(calls).toEqual([{ type: 'major', flavor: 'last-resort' }]);
    expect(JSON.parse(lines[0])).toMatchObject({
      msg: 'memory given back after a burst of reconciles',
      reconciles: 10,
      rssBeforeMB: 300,
    });
    m.drained(9);
    expect(calls).toHaveLength(1);
    m.drained(30);
    expect(calls).toHaveLength(2);
  });

  it('does nothing where no gc function can be had', () => {
    const m = new MemoryAfterBurst({ minReconciles: 1, logger: createLogger(() => {}), gc: () => undefined });
    expect(() => m.drained(5)).not.toThrow();
  });

  it("this Node's V8 takes the options it is called with", () => {
    const gc = obtainGc();
    expect(gc).toBeTypeOf('function');
    expect(() => gc?.({ type: 'major', flavor: 'last-resort' })).not.toThrow();
  });
});
