// Prometheus for the end-to-end test: a configuration built from what the chart ships, and checks
// against the running server's HTTP API. Runs where the Prometheus listens (the node's namespaces).
//
// Debian's Prometheus (2.42+ds) is built without Kubernetes service discovery (the Debian package
// leaves client-go out: `kubernetes_sd_configs` is an unknown field there). So the pods reach it
// through `http_sd_configs` from `pod-sd` below, which lists pods from the API server and gives each
// container port exactly the target and `__meta_kubernetes_*` labels that kubernetes_sd_configs'
// pod role gives; the chart's relabel_configs then run unchanged in the real Prometheus.
//
//   node test/e2e/prometheus.ts pod-sd --listen HOST:PORT [--pid-file F]
//     The HTTP service discovery above (kubectl on PATH, KUBECONFIG set: `cluster.sh exec`).
//   node test/e2e/prometheus.ts config --sd-url URL --rule-manifest FILE --out-dir D [--interval 5s]
//     D/prometheus.yml: charts/mail-plus/files/prometheus-scrape-configs.yaml with each
//     kubernetes_sd_configs entry replaced by http_sd_configs at URL (relabel_configs as shipped);
//     D/rules.yaml: the groups of the PrometheusRule that `helm template` rendered into FILE.
//   node test/e2e/prometheus.ts targets --url U --want JOB=N,... --timeout S
//     Waits until each JOB has N targets, all up.
//   node test/e2e/prometheus.ts metrics --url U [--no-data NAME=WHY ...]
//     Every metric an alert or the dashboard uses must have at least one series, except the
//     --no-data ones (a feature the test does not turn on, or an event that may not happen: listed
//     with or without data); a --no-data name no alert or panel uses fails (the list stays true).
//   node test/e2e/prometheus.ts alert --url U --name ALERT --state firing|inactive --timeout S [--pod P]
//     Waits until the alert (for pod P) is in that state; prints how long it took.
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { usedMetricNames } from '../monitoring/queries.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function api<T>(url: string, path: string): Promise<T> {
  const res = await fetch(new URL(path, url), { signal: AbortSignal.timeout(10_000) });
  if (!res.ok && !res.headers.get('content-type')?.includes('json'))
    throw new Error(`${path}: HTTP ${res.status}`);
  const body = (await res.json()) as { status: string; data: T; error?: string };
  if (body.status !== 'success') throw new Error(`${path}: ${body.error ?? res.status}`);
  return body.data;
}

function config(argv: string[]): number {
  const { values } = parseArgs({
    args: argv,
    options: {
      'sd-url': { type: 'string' },
      'rule-manifest': { type: 'string' },
      'out-dir': { type: 'string' },
      interval: { type: 'string', default: '5s' },
    },
  });
  const { 'sd-url': sdUrl, 'rule-manifest': manifest, 'out-dir': dir } = values;
  if (!sdUrl || !manifest || !dir) throw new Error('config needs --sd-url --rule-manifest --out-dir');
  const shipped = parse(
    readFileSync(join(root, 'charts/mail-plus/files/prometheus-scrape-configs.yaml'), 'utf8'),
  ) as { scrape_configs: Record<string, unknown>[] };
  for (const sc of shipped.scrape_configs) {
    const sds = sc.kubernetes_sd_configs as { role: string }[];
    if (sds.length !== 1 || sds[0].role !== 'pod')
      throw new Error(`${sc.job_name}: pod-sd stands in for role: pod only`);
    delete sc.kubernetes_sd_configs;
    sc.http_sd_configs = [{ url: sdUrl, refresh_interval: values.interval }];
  }
  const rule = parseAllDocuments(readFileSync(manifest, 'utf8'))
    .map((d) => d.toJS() as { kind?: string; spec?: { groups: unknown[] } } | null)
    .find((d) => d?.kind === 'PrometheusRule');
  if (!rule?.spec) throw new Error(`${manifest}: no PrometheusRule`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'rules.yaml'), stringify({ groups: rule.spec.groups }));
  writeFileSync(
    join(dir, 'prometheus.yml'),
    stringify({
      global: { scrape_interval: values.interval, evaluation_interval: values.interval },
      rule_files: [join(dir, 'rules.yaml')],
      scrape_configs: shipped.scrape_configs,
    }),
  );
  return 0;
}

interface Pod {
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: { kind: string; name: string; controller?: boolean }[];
  };
  spec: {
    nodeName?: string;
    containers: {
      name: string;
      image: string;
      ports?: { name?: string; containerPort: number; protocol?: string }[];
    }[];
  };
  status: { phase: string; podIP?: string; hostIP?: string; conditions?: { type: string; status: string }[] };
}

/** Prometheus' label name sanitising (strutil.SanitizeLabelName). */
const labelName = (s: string) => s.replace(/[^a-zA-Z0-9_]/g, '_');

/** The targets kubernetes_sd_configs role "pod" gives: one per declared container port of a pod with an IP. */
function podTargets(pods: Pod[]): { targets: string[]; labels: Record<string, string> }[] {
  const out: { targets: string[]; labels: Record<string, string> }[] = [];
  for (const pod of pods) {
    const ip = pod.status.podIP;
    if (!ip) continue;
    const m = pod.metadata;
    const owner = m.ownerReferences?.find((o) => o.controller);
    const podLabels: Record<string, string> = {
      __meta_kubernetes_namespace: m.namespace,
      __meta_kubernetes_pod_name: m.name,
      __meta_kubernetes_pod_ip: ip,
      __meta_kubernetes_pod_uid: m.uid,
      __meta_kubernetes_pod_phase: pod.status.phase,
      __meta_kubernetes_pod_ready: String(
        pod.status.conditions?.find((c) => c.type === 'Ready')?.status === 'True',
      ),
      __meta_kubernetes_pod_node_name: pod.spec.nodeName ?? '',
      __meta_kubernetes_pod_host_ip: pod.status.hostIP ?? '',
    };
    if (owner) {
      podLabels.__meta_kubernetes_pod_controller_kind = owner.kind;
      podLabels.__meta_kubernetes_pod_controller_name = owner.name;
    }
    for (const [k, v] of Object.entries(m.labels ?? {})) {
      podLabels[`__meta_kubernetes_pod_label_${labelName(k)}`] = v;
      podLabels[`__meta_kubernetes_pod_labelpresent_${labelName(k)}`] = 'true';
    }
    for (const [k, v] of Object.entries(m.annotations ?? {})) {
      podLabels[`__meta_kubernetes_pod_annotation_${labelName(k)}`] = v;
      podLabels[`__meta_kubernetes_pod_annotationpresent_${labelName(k)}`] = 'true';
    }
    for (const c of pod.spec.containers) {
      for (const port of c.ports ?? []) {
        out.push({
          targets: [`${ip.includes(':') ? `[${ip}]` : ip}:${port.containerPort}`],
          labels: {
            ...podLabels,
            __meta_kubernetes_pod_container_name: c.name,
            __meta_kubernetes_pod_container_image: c.image,
            __meta_kubernetes_pod_container_port_name: port.name ?? '',
            __meta_kubernetes_pod_container_port_number: String(port.containerPort),
            __meta_kubernetes_pod_container_port_protocol: port.protocol ?? 'TCP',
          },
        });
      }
    }
  }
  return out;
}

async function podSd(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { listen: { type: 'string' }, 'pid-file': { type: 'string' } },
  });
  const [host, port] = (values.listen ?? '').split(/:(?=\d+$)/);
  if (!host || !port) throw new Error('pod-sd needs --listen HOST:PORT');
  if (values['pid-file']) writeFileSync(values['pid-file'], `${process.pid}\n`);
  const server = createServer((_req, res) => {
    execFile(
      'kubectl',
      ['get', 'pods', '-A', '-o', 'json'],
      { maxBuffer: 64 << 20, timeout: 10_000 },
      (err, out) => {
        if (err) {
          res.writeHead(500).end(err.message);
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(podTargets((JSON.parse(out) as { items: Pod[] }).items)));
      },
    );
  });
  await new Promise<void>((resolve) => server.listen(Number(port), host, resolve));
  console.log(`pod-sd listening on ${host}:${port}`);
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  server.close();
  return 0;
}

interface Target {
  labels: Record<string, string>;
  health: string;
  lastError: string;
}

async function targets(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      url: { type: 'string' },
      want: { type: 'string' },
      timeout: { type: 'string', default: '60' },
    },
  });
  const url = values.url ?? '';
  const want = new Map((values.want ?? '').split(',').map((p) => p.split('=') as [string, string]));
  const deadline = Date.now() + Number(values.timeout) * 1000;
  let last = '';
  for (;;) {
    // a starting Prometheus answers 503 until its storage is ready: not yet, ask again
    const got = await api<{ activeTargets: Target[] }>(url, '/api/v1/targets?state=active').catch(
      (err: Error) => ({ error: err.message }),
    );
    const activeTargets = 'error' in got ? [] : got.activeTargets;
    const bad: string[] = 'error' in got ? [`Prometheus: ${got.error}`] : [];
    for (const [job, n] of want) {
      const ts = activeTargets.filter((t) => t.labels.job === job);
      const up = ts.filter((t) => t.health === 'up');
      if (ts.length !== Number(n) || up.length !== ts.length) {
        bad.push(
          `${job}: ${up.length} of ${ts.length} up, want ${n} (${ts.map((t) => t.lastError).join('; ')})`,
        );
      }
    }
    if (!bad.length) {
      console.log(
        `targets: ${[...want].map(([j, n]) => `${j} ${n} up`).join(', ')} (${activeTargets
          .filter((t) => want.has(t.labels.job))
          .map((t) => `${t.labels.job}/${t.labels.pod}`)
          .join(' ')})`,
      );
      return 0;
    }
    last = bad.join('; ');
    if (Date.now() > deadline) {
      console.log(`targets: FAIL ${last}`);
      return 1;
    }
    await sleep(1000);
  }
}

async function metrics(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { url: { type: 'string' }, 'no-data': { type: 'string', multiple: true, default: [] } },
  });
  const url = values.url ?? '';
  const exempt = new Map(values['no-data'].map((p) => p.split(/=(.*)/s, 2) as [string, string]));
  const present = new Set(await api<string[]>(url, '/api/v1/label/__name__/values'));
  const used = usedMetricNames();
  const missing = [...used.keys()].filter((n) => !present.has(n) && !exempt.has(n));
  const unused = [...exempt.keys()].filter((n) => !used.has(n));
  const withData = [...used.keys()].filter((n) => present.has(n));
  console.log(
    `metrics: ${used.size} names used by the alerts and the dashboard; ${withData.length} have data; ` +
      `excused: ${[...exempt].map(([n, why]) => `${n} (${why}; ${present.has(n) ? 'has data' : 'no data'})`).join(', ')}`,
  );
  for (const n of missing) console.log(`metrics: FAIL no data for ${n}, used by ${used.get(n)?.join(', ')}`);
  for (const n of unused) console.log(`metrics: FAIL ${n} is excused but no alert or panel uses it`);
  return missing.length || unused.length ? 1 : 0;
}

interface Alert {
  labels: Record<string, string>;
  state: string;
  activeAt: string;
}

async function alert(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      url: { type: 'string' },
      name: { type: 'string' },
      state: { type: 'string' },
      pod: { type: 'string' },
      timeout: { type: 'string', default: '600' },
    },
  });
  const url = values.url ?? '';
  const t0 = Date.now();
  const deadline = t0 + Number(values.timeout) * 1000;
  let seen = 'inactive';
  for (;;) {
    const got = await api<{ alerts: Alert[] }>(url, '/api/v1/alerts').catch(() => undefined);
    if (!got) {
      if (Date.now() > deadline) throw new Error('Prometheus did not answer /api/v1/alerts');
      await sleep(2000);
      continue;
    }
    const { alerts } = got;
    const mine = alerts.filter(
      (a) => a.labels.alertname === values.name && (!values.pod || a.labels.pod === values.pod),
    );
    const state = mine.find((a) => a.state === 'firing')?.state ?? mine[0]?.state ?? 'inactive';
    if (state !== seen) {
      console.log(
        `alert ${values.name}${values.pod ? ` (pod ${values.pod})` : ''}: ${state} after ${((Date.now() - t0) / 1000).toFixed(0)} s`,
      );
      seen = state;
    }
    if (state === values.state) return 0;
    if (Date.now() > deadline) {
      console.log(
        `alert ${values.name}: FAIL still ${state} after ${values.timeout} s, want ${values.state}`,
      );
      return 1;
    }
    await sleep(2000);
  }
}

const commands: Record<string, (argv: string[]) => number | Promise<number>> = {
  'pod-sd': podSd,
  config,
  targets,
  metrics,
  alert,
};
const [cmd, ...rest] = process.argv.slice(2);
const fn = commands[cmd ?? ''];
if (!fn) {
  console.error(`usage: prometheus.ts ${Object.keys(commands).join('|')} ...`);
  process.exit(2);
}
Promise.resolve()
  .then(() => fn(rest))
  .then(
    (code) => process.exit(code),
    (err: Error) => {
      console.error(`prometheus.ts ${cmd}: ${err.message}`);
      process.exit(2);
    },
  );
