import { describe, expect, it } from 'vitest';
import { createLogger } from '../../platform/log.ts';
import { OperatorMetrics } from '../metrics.ts';
import { startController } from './controller.ts';

describe('startController', () => {
  it('tells when its queue ran empty, and after how many reconciles', async () => {
    const drained: number[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const c = startController({
      name: 'test',
      workers: 2,
      reconcile: async (key) => {
        if (key === 'slow') await gate;
        return undefined;
      },
      metrics: new OperatorMetrics(),
      logger: createLogger(() => {}),
      onDrained: (n) => drained.push(n),
    });
    for (const k of ['a', 'b', 'slow', 'c']) c.queue.add(k);
    await new Promise((r) => setTimeout(r, 20));
    // 'slow' is still in progress: not empty yet
    expect(drained).toEqual([]);
    release();
    await new Promise((r) => setTimeout(r, 20));
    expect(drained).toEqual([4]);
    c.queue.add('d');
    await new Promise((r) => setTimeout(r, 20));
    expect(drained).toEqual([4, 1]);
    await c.stop();
  });
});
