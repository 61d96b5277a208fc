import { describe, expect, it } from 'vitest';
import { parseOperatorFlags } from './operator.ts';

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
      relaySelector: 'app.kubernetes.io/component=relay',
      relayPort: 'admin',
      relayScrapeIntervalMs: 10_000,
      relayScrapeTimeoutMs: 2_000,
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
    expect(() => parseOperatorFlags(['--relay-port', 'Admin_Port'])).toThrow(/--relay-port Admin_Port/);
    expect(() => parseOperatorFlags(['--relay-port', '70000'])).toThrow(/--relay-port 70000/);
    expect(() => parseOperatorFlags(['--relay-selector', ''])).toThrow(/--relay-selector/);
    expect(() => parseOperatorFlags(['--relay-scrape-timeout', '20s'])).toThrow(/--relay-scrape-timeout/);
  });

  it('takes the relay admin port by name or number', () => {
    expect(parseOperatorFlags(['--relay-port', '9090'])?.relayPort).toBe(9090);
    expect(parseOperatorFlags(['--relay-port=metrics'])?.relayPort).toBe('metrics');
  });

  it('refuses the removed report-Lease flags with a pointer to their replacement', () => {
    expect(() => parseOperatorFlags(['--relay-lease-selector=x'])).toThrow(/removed.*--relay-selector/);
    expect(() => parseOperatorFlags(['--relay-lease-namespace', '*'])).toThrow(/removed/);
  });

  it('parses shards and tenant budgets, with safe defaults', () => {
    expect(parseOperatorFlags([])).toMatchObject({
      configShards: 1,
      tenantBudgets: { maxRoutes: 1000, maxPatterns: 10_000, maxBytes: 512 * 1024 },
    });
    expect(
      parseOperatorFlags([
        '--config-shards=8',
        '--tenant-max-routes=50',
        '--tenant-max-patterns=500',
        '--tenant-max-config-bytes=1Mi',
      ]),
    ).toMatchObject({
      configShards: 8,
      tenantBudgets: { maxRoutes: 50, maxPatterns: 500, maxBytes: 1024 * 1024 },
    });
    expect(() => parseOperatorFlags(['--config-shards=0'])).toThrow(
      /--config-shards 0: must be a whole number/,
    );
    expect(() => parseOperatorFlags(['--tenant-max-routes=1.5'])).toThrow(/--tenant-max-routes/);
    expect(() => parseOperatorFlags(['--tenant-max-config-bytes=lots'])).toThrow(/--tenant-max-config-bytes/);
  });
});
