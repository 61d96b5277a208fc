// Runs promtool on the alert rules the chart ships (charts/mail-plus/files/prometheus-rules.yaml):
// `promtool check rules` (syntax, templates) and `promtool test rules` (test/monitoring/
// alerts.test.yaml). Also checks every alert's labels/annotations and that its runbook_url points
// to an existing section of docs/runbooks.md. promtool comes from Debian's `prometheus` package:
// when it is missing this test FAILS (it is never skipped).
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

const root = fileURLToPath(new URL('../../', import.meta.url));
const RULES = 'charts/mail-plus/files/prometheus-rules.yaml';
const TESTS = 'test/monitoring/alerts.test.yaml';
const RUNBOOK_BASE = 'https://github.com/mail-plus/mail-plus/blob/main/docs/runbooks.md';

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

function promtool(args: string[]): Promise<{ code: number; out: string }> {
  const bin = process.env.PROMTOOL ?? 'promtool';
  return new Promise((resolve, reject) => {
    execFile(bin, args, { cwd: root, timeout: 60_000, maxBuffer: 8 * 1024 * 1024 }, (err, stdout, stderr) => {
      const out = `${stdout}${stderr}`;
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') {
        reject(
          new Error(
            `promtool not found (${bin}). It comes with Debian's "prometheus" package: run the CI ` +
              'install script (scripts/ci-deps.sh) or `apt-get install -y prometheus`, or set PROMTOOL=/path/to/promtool.',
          ),
        );
        return;
      }
      if (err && typeof (err as NodeJS.ErrnoException).code !== 'number') {
        reject(new Error(`promtool ${args.join(' ')} failed: ${err.message}\n${out}`));
        return;
      }
      resolve({ code: err ? Number((err as NodeJS.ErrnoException).code) : 0, out });
    });
  });
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens. */
function headingAnchors(markdown: string): Set<string> {
  const out = new Set<string>();
  for (const line of markdown.split('\n')) {
    const m = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    out.add(
      m[1]
        .toLowerCase()
        .replace(/`/g, '')
        .replace(/[^\p{L}\p{N}\s_-]/gu, '')
        .trim()
        .replace(/\s/g, '-'),
    );
  }
  return out;
}

const rules: Rule[] = (
  parse(readFileSync(`${root}${RULES}`, 'utf8')) as { groups: { rules: Rule[] }[] }
).groups.flatMap((g) => g.rules);
const alerts = rules.filter((r) => r.alert);

describe('alert rules (charts/mail-plus/files/prometheus-rules.yaml)', () => {
  it('pass promtool check rules', async () => {
    const { code, out } = await promtool(['check', 'rules', RULES]);
    expect(out).toContain('SUCCESS');
    expect(code, out).toBe(0);
  });

  it('pass the promtool unit tests in test/monitoring/alerts.test.yaml', async () => {
    const { code, out } = await promtool(['test', 'rules', TESTS]);
    expect(code, out).toBe(0);
  });

  it('every alert is exercised by a unit test', () => {
    const tested = new Set<string>();
    const tests = parse(readFileSync(`${root}${TESTS}`, 'utf8')) as {
      tests: { alert_rule_test?: { alertname: string; exp_alerts: unknown[] }[] }[];
    };
    for (const t of tests.tests)
      for (const a of t.alert_rule_test ?? []) if (a.exp_alerts.length > 0) tested.add(a.alertname);
    expect(alerts.map((a) => a.alert).filter((a) => !tested.has(a as string))).toEqual([]);
  });

  it.each(alerts.map((a) => [a.alert, a] as const))(
    '%s has severity, summary, description, for, and a runbook section',
    (_name, a) => {
      expect(['critical', 'warning', 'info']).toContain(a.labels?.severity);
      expect(a.for).toMatch(/^\d+m$/);
      expect(a.annotations?.summary).toBeTruthy();
      expect(a.annotations?.description).toBeTruthy();
      const url = a.annotations?.runbook_url ?? '';
      expect(url.startsWith(`${RUNBOOK_BASE}#`)).toBe(true);
      const anchors = headingAnchors(readFileSync(`${root}docs/runbooks.md`, 'utf8'));
      expect([...anchors]).toContain(url.slice(RUNBOOK_BASE.length + 1));
    },
  );

  it('select targets by the job names the chart sets (mailplus-operator / mailplus-relay)', () => {
    const tpl = readFileSync(`${root}charts/mail-plus/templates/monitoring/_monitoring.tpl`, 'utf8');
    expect(tpl).toContain('targetLabel: job');
    for (const a of alerts) expect(a.expr).toMatch(/job="mailplus-(operator|relay)"/);
  });
});
