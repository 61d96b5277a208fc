// Every metric an alert expression or a dashboard query uses must be one the relay or the operator
// really exposes: read from their metrics classes' registries (prom-client default metrics
// included; histograms as _bucket/_sum/_count), never from a hand-kept list.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { OperatorMetrics } from '../../operator/metrics.ts';
import { RelayMetrics } from '../../relay/observability/metrics.ts';
import { alertQueries, dashboardQueries, metricNames, SCRAPE_SERIES } from './queries.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));

async function exposedNames(registry: Registry): Promise<Set<string>> {
  const names = new Set<string>();
  for (const m of await registry.getMetricsAsJSON()) {
    const type = String(m.type);
    if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(m.name + suffix);
    else if (type === 'summary') for (const suffix of ['', '_sum', '_count']) names.add(m.name + suffix);
    else names.add(m.name);
  }
  return names;
}

const relay = new RelayMetrics();
const operator = new OperatorMetrics();
afterAll(() => {
  relay.close();
  operator.registry.clear();
});

describe('metric names in alerts and the dashboard', () => {
  it('extracts metric names from PromQL (self-check of the parser)', () => {
    expect(
      metricNames(
        'sum by (namespace, le) (rate(foo_total{job="a", x=~"b|c"}[5m])) / on (pod) group_left bar > 0.1 and absent(up == 1)',
      ).sort(),
    ).toEqual(['bar', 'foo_total', 'up']);
    expect(
      metricNames('histogram_quantile(0.95, sum by (le) (rate(x_bucket{a="$ns"}[$__rate_interval])))'),
    ).toEqual(['x_bucket']);
  });

  it('the relay and operator registries expose the expected families', async () => {
    const r = await exposedNames(relay.registry);
    const o = await exposedNames(operator.registry);
    expect(r.has('mailplus_relay_upstream_latency_seconds_bucket')).toBe(true);
    expect(o.has('controller_runtime_reconcile_total')).toBe(true);
    expect(r.has('process_resident_memory_bytes')).toBe(true);
  });

  it('every metric used by an alert or a dashboard query is exposed by the relay or the operator', async () => {
    const known = new Set([
      ...(await exposedNames(relay.registry)),
      ...(await exposedNames(operator.registry)),
      ...SCRAPE_SERIES,
    ]);
    const queries = [...alertQueries(), ...dashboardQueries()];
    expect(queries.length).toBeGreaterThan(20);
    const unknown = queries.flatMap((q) =>
      metricNames(q.expr)
        .filter((n) => !known.has(n))
        .map((n) => `${q.where}: ${n}`),
    );
    expect(unknown).toEqual([]);
  });

  it('docs/monitoring.md lists every metric the relay and the operator expose (and no other)', async () => {
    const doc = readFileSync(`${root}docs/monitoring.md`, 'utf8');
    const families = async (r: Registry) =>
      (await r.getMetricsAsJSON()).map((m) => m.name).filter((n) => !/^(process|nodejs)_/.test(n));
    const code = new Set([...(await families(relay.registry)), ...(await families(operator.registry))]);
    expect([...code].filter((n) => !doc.includes(`\`${n}\``))).toEqual([]);
    const documented = [...doc.matchAll(/^\| `([a-z_:]+)` \|/gm)].map((m) => m[1]);
    expect(documented.filter((n) => !code.has(n))).toEqual([]);
  });

  it('relay metrics are queried with job="mailplus-relay", operator metrics with job="mailplus-operator"', async () => {
    const relayOnly = [...(await exposedNames(relay.registry))].filter((n) =>
      n.startsWith('mailplus_relay_'),
    );
    const operatorOnly = [...(await exposedNames(operator.registry))].filter(
      (n) => !n.match(/^(process|nodejs)_/),
    );
    const wrong: string[] = [];
    for (const q of [...alertQueries(), ...dashboardQueries()]) {
      for (const n of metricNames(q.expr)) {
        const sel = new RegExp(`${n}\\{[^}]*job="([^"]+)"`).exec(q.expr)?.[1];
        if (relayOnly.includes(n) && sel !== 'mailplus-relay') wrong.push(`${q.where}: ${n} job=${sel}`);
        if (operatorOnly.includes(n) && sel !== 'mailplus-operator')
          wrong.push(`${q.where}: ${n} job=${sel}`);
      }
    }
    expect(wrong).toEqual([]);
  });
});
