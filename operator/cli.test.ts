import { describe, expect, it } from 'vitest';
import { parseOperatorFlags } from './cli.ts';

describe('mailplus operator flags', () => {
  it('has the documented defaults', () => {
    const f = parseOperatorFlags([]);
    expect(f).toMatchObject({
      configMapName: 'mailplus-relay-config',
      leaderElect: true,
      leaseName: 'mailplus-operator',
      metricsListen: { host: '0.0.0.0', port: 8080 },
      resyncMs: 600_000,
      maxConcurrentReconciles: 4,
      batchWindowMs: 100,
    });
    expect(f?.namespace).toBeUndefined();
  });

  it('accepts --leader-elect=false and --no-leader-elect', () => {
    expect(parseOperatorFlags(['--leader-elect=false'])?.leaderElect).toBe(false);
    expect(parseOperatorFlags(['--no-leader-elect'])?.leaderElect).toBe(false);
    expect(parseOperatorFlags(['--leader-elect'])?.leaderElect).toBe(true);
    expect(() => parseOperatorFlags(['--leader-elect=maybe'])).toThrow(/use true or false/);
  });

  it('names the flag in errors', () => {
    expect(() => parseOperatorFlags(['--configmap', 'Bad_Name'])).toThrow(/--configmap Bad_Name/);
    expect(() => parseOperatorFlags(['--max-concurrent-reconciles', '0'])).toThrow(
      /--max-concurrent-reconciles/,
    );
    expect(() => parseOperatorFlags(['--resync', 'soon'])).toThrow(/--resync/);
    expect(() => parseOperatorFlags(['--metrics-listen', 'nope'])).toThrow(/--metrics-listen/);
  });
});
