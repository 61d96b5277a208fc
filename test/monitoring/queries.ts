// The PromQL the chart ships (alert rules and dashboard queries) and the metric names it uses: read
// by test/monitoring/metric-names.test.ts (every name exists in the code) and by the end-to-end
// test's Prometheus check (every name has data on a live cluster).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

const root = fileURLToPath(new URL('../../', import.meta.url));

/** Series Prometheus itself adds to every scrape target. */
export const SCRAPE_SERIES = new Set(['up', 'scrape_duration_seconds', 'scrape_samples_scraped']);

const PROMQL_KEYWORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'bool',
  'and',
  'or',
  'unless',
  'offset',
  'inf',
  'nan',
]);

/**
 * Metric names referenced by a PromQL expression: identifiers that are not functions (followed by
 * "("), keywords, label names (inside {...} or by/without/on/ignoring/group_x lists), strings,
 * durations, or Grafana variables.
 */
export function metricNames(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""') // strings
    .replace(/\$\{?\w+\}?/g, ' ') // Grafana variables ($__rate_interval, ${namespace})
    .replace(/\{[^}]*\}/g, ' ') // label matchers
    .replace(/\[[^\]]*\]/g, ' ') // ranges / subqueries
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' '); // label lists
  const out = new Set<string>();
  for (const m of s.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const name = m[0];
    const after = s.slice((m.index ?? 0) + name.length).trimStart();
    if (after.startsWith('(')) continue; // function or aggregation
    if (PROMQL_KEYWORDS.has(name.toLowerCase())) continue;
    if (/^\d/.test(name)) continue;
    out.add(name);
  }
  return [...out];
}

interface Panel {
  title?: string;
  targets?: { expr?: string }[];
  panels?: Panel[];
}

export function dashboardQueries(): { where: string; expr: string }[] {
  const dash = JSON.parse(
    readFileSync(`${root}charts/mail-plus/files/dashboards/mail-plus.json`, 'utf8'),
  ) as {
    panels: Panel[];
    templating: { list: { name: string; query?: string | { query?: string } }[] };
  };
  const out: { where: string; expr: string }[] = [];
  const walk = (panels: Panel[]) => {
    for (const p of panels) {
      for (const t of p.targets ?? []) if (t.expr) out.push({ where: `panel "${p.title}"`, expr: t.expr });
      walk(p.panels ?? []);
    }
  };
  walk(dash.panels);
  for (const v of dash.templating.list) {
    const q = typeof v.query === 'string' ? v.query : v.query?.query;
    const inner = q && /^label_values\((.*),\s*\w+\)$/.exec(q);
    if (inner) out.push({ where: `variable $${v.name}`, expr: inner[1] });
  }
  return out;
}

export function alertQueries(): { where: string; expr: string }[] {
  const doc = parse(readFileSync(`${root}charts/mail-plus/files/prometheus-rules.yaml`, 'utf8')) as {
    groups: { rules: { alert?: string; record?: string; expr: string }[] }[];
  };
  return doc.groups.flatMap((g) =>
    g.rules.map((r) => ({ where: `alert ${r.alert ?? r.record}`, expr: r.expr })),
  );
}

/** Every metric name an alert or a dashboard query uses, with where it is used. */
export function usedMetricNames(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const q of [...alertQueries(), ...dashboardQueries()]) {
    for (const n of metricNames(q.expr)) out.set(n, [...(out.get(n) ?? []), q.where]);
  }
  return out;
}
