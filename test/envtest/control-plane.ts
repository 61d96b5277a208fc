// A real Kubernetes control plane (etcd + kube-apiserver v1.20.2, RBAC enforced) for tests,
// in the spirit of controller-runtime's envtest. See docs/envtest.md.
//
//   const cp = await startControlPlane({ crdDir: 'crds' });
//   await kubectl(cp, ['get', 'ns']);                          // as admin (system:masters)
//   await kubectl(cp, ['get', 'mailroutes', '-A'], { user: 'operator' }); // as the operator's SA
//   await cp.restartApiServer();                               // same port, same etcd
//   await cp.stopApiServer(); ...; await cp.startApiServer();  // an outage of chosen length
//   await cp.stop();
//
// Binaries come from KUBEBUILDER_ASSETS (setup-envtest layout), TEST_ASSET_KUBE_APISERVER /
// TEST_ASSET_ETCD / TEST_ASSET_KUBECTL, or else scripts/envtest-assets.sh (builds them once
// into a cache). A missing binary fails loudly: these tests are never skipped.
import { execFile, spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { accessSync, constants, rmSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments, stringify } from 'yaml';
import { createTestPki, type TestPki } from '../support/certs.ts';
import { freePort, type Managed, startProcess } from '../support/processes.ts';

export const K8S_VERSION = '1.20.2';
export const OPERATOR_NAMESPACE = 'mailplus-system';
/** The user name the API server sees for the operator's ServiceAccount (bind RBAC to the SA). */
export const OPERATOR_USER = `system:serviceaccount:${OPERATOR_NAMESPACE}:mailplus-operator`;
/** The user name the API server sees for the relay's ServiceAccount. */
export const RELAY_USER = `system:serviceaccount:${OPERATOR_NAMESPACE}:mailplus-relay`;

export type EnvtestUser = 'admin' | 'operator' | 'relay';

export interface ControlPlaneAssets {
  kubeApiServer: string;
  etcd: string;
  kubectl: string;
}

export interface StartControlPlaneOptions {
  /**
   * Apply every *.yaml / *.yml / *.json in this directory (server-side apply) and wait for its CRDs
   * to be Established; see applyCrds() for CEL rules on v1.20. The result is ControlPlane.crds.
   */
  crdDir?: string;
  /**
   * Extra kube-apiserver flags (`--name=value` or `--flag`); a flag given here replaces the
   * default of the same name. E.g. `--min-request-timeout=5` (watches end after 5-10 s),
   * `--etcd-compaction-interval=10s` plus `--watch-cache=false` (410 Gone on old resourceVersions).
   */
  extraApiServerArgs?: string[];
  /** Extra etcd flags (`--name=value`). */
  extraEtcdArgs?: string[];
  /** Bound for each component to become ready (default 60 s). */
  startTimeoutMs?: number;
  /** Echo etcd / kube-apiserver output to stderr (debugging). */
  echo?: boolean;
}

export interface ControlPlane {
  /** Temp dir holding certificates, kubeconfigs, the token file and etcd's data (removed by stop()). */
  dir: string;
  /** https://127.0.0.1:PORT */
  server: string;
  port: number;
  /** http://127.0.0.1:PORT (etcd client URL) */
  etcdUrl: string;
  /** CA that signed the API server's serving certificate (PEM, and its file). */
  caPem: string;
  caFile: string;
  /** Kubeconfig of the admin user (group system:masters). */
  kubeconfigAdmin: string;
  /** Kubeconfig of a user: admin, or the operator's / relay's ServiceAccount identity. */
  kubeconfigFor(user: EnvtestUser): string;
  adminToken: string;
  /** Bearer tokens by user. */
  tokens: Record<EnvtestUser, string>;
  /** User names the API server authenticates each token as (for RBAC subjects). */
  userNames: Record<EnvtestUser, string>;
  assets: ControlPlaneAssets;
  /** What startControlPlane({ crdDir }) applied (undefined without crdDir). */
  crds?: AppliedCrds;
  /** Current kube-apiserver PID (changes on restart). */
  apiServerPid(): number;
  etcdPid(): number;
  /** Kills kube-apiserver (SIGTERM, then SIGKILL) and starts it again on the same port; resolves when ready. */
  restartApiServer(): Promise<void>;
  /**
   * Stops kube-apiserver only (etcd keeps running with its data): clients see connection refused
   * until startApiServer(). Lets a test choose how long the API server stays away.
   */
  stopApiServer(): Promise<void>;
  /** Starts a stopped kube-apiserver again on the same port against the same etcd; resolves when ready. */
  startApiServer(): Promise<void>;
  /** Stops kube-apiserver and etcd by PID and removes dir. Idempotent. */
  stop(): Promise<void>;
}

export interface KubectlOptions {
  /** Whose kubeconfig to use (default admin). */
  user?: EnvtestUser;
  /** Written to kubectl's stdin (e.g. a manifest for `apply -f -`). */
  input?: string;
  /** Default 60 s. */
  timeoutMs?: number;
}

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const ASSETS_SCRIPT = join(REPO_ROOT, 'scripts', 'envtest-assets.sh');
const STOP_GRACE_MS = 10_000;

// ---------------------------------------------------------------------------------------------
// Assets

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function runAssetsScript(): Promise<string> {
  return new Promise((resolvePath, reject) => {
    process.stderr.write(
      `[envtest] no KUBEBUILDER_ASSETS: running ${ASSETS_SCRIPT} (first run builds for minutes)\n`,
    );
    const child = spawn('bash', [ASSETS_SCRIPT], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      out += d;
    });
    const timer = setTimeout(() => child.kill('SIGTERM'), 45 * 60_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`envtest: cannot run ${ASSETS_SCRIPT}: ${err.message}`));
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      const dir = out.trim().split('\n').pop() ?? '';
      if (code === 0 && dir) resolvePath(dir);
      else
        reject(
          new Error(
            `envtest: ${ASSETS_SCRIPT} failed (${code ?? signal}); cannot get kube-apiserver/etcd/kubectl. ` +
              'Run it by hand to see why, or set KUBEBUILDER_ASSETS to a directory holding the three binaries.',
          ),
        );
    });
  });
}

let assetsPromise: Promise<ControlPlaneAssets> | undefined;

/** Locates kube-apiserver, etcd and kubectl (building them via scripts/envtest-assets.sh if needed). */
export function resolveAssets(): Promise<ControlPlaneAssets> {
  assetsPromise ??= (async () => {
    const env = process.env;
    let dir = env.KUBEBUILDER_ASSETS;
    const explicit = {
      kubeApiServer: env.TEST_ASSET_KUBE_APISERVER,
      etcd: env.TEST_ASSET_ETCD,
      kubectl: env.TEST_ASSET_KUBECTL,
    };
    if (!dir && !(explicit.kubeApiServer && explicit.etcd && explicit.kubectl)) dir = await runAssetsScript();
    const pick = (given: string | undefined, name: string): string => {
      const path = given || join(dir ?? '', name);
      if (!isExecutable(path)) {
        throw new Error(
          `envtest: ${name} not found or not executable at ${path}. Set KUBEBUILDER_ASSETS to a ` +
            'setup-envtest style directory (kube-apiserver, etcd, kubectl) or run scripts/envtest-assets.sh.',
        );
      }
      return path;
    };
    return {
      kubeApiServer: pick(explicit.kubeApiServer, 'kube-apiserver'),
      etcd: pick(explicit.etcd, 'etcd'),
      kubectl: pick(explicit.kubectl, 'kubectl'),
    };
  })();
  // A failed lookup is not cached: the next call tries again.
  assetsPromise.catch(() => {
    assetsPromise = undefined;
  });
  return assetsPromise;
}

// ---------------------------------------------------------------------------------------------
// Processes

let setprivChecked: boolean | undefined;

/** Wrap in `setpriv --pdeathsig SIGKILL` when available: the child dies even if we are SIGKILLed. */
function withParentDeathSignal(bin: string, args: string[]): [string, string[]] {
  setprivChecked ??= isExecutable('/usr/bin/setpriv');
  return setprivChecked ? ['/usr/bin/setpriv', ['--pdeathsig', 'SIGKILL', '--', bin, ...args]] : [bin, args];
}

const tempDirs = new Set<string>();
const livePids = new Set<number>();
let exitHookInstalled = false;

function startManaged(
  name: string,
  bin: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  echo?: boolean,
): Managed {
  const [cmd, argv] = withParentDeathSignal(bin, args);
  const proc = startProcess(cmd, argv, { name, env, echo, maxLines: 2000 });
  livePids.add(proc.pid);
  void proc.exited.then(() => livePids.delete(proc.pid));
  return proc;
}

function trackTempDir(dir: string): void {
  tempDirs.add(dir);
  installExitHook();
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // test/support/processes.ts kills its children on exit too; killing ours here first means
  // etcd no longer writes into the directory being removed.
  process.on('exit', () => {
    for (const pid of livePids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    for (const d of tempDirs) {
      try {
        rmSync(d, { recursive: true, force: true, maxRetries: 3, retryDelay: 20 });
      } catch {
        // best effort
      }
    }
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function tailOf(p: Managed, n = 25): string {
  return p.lines
    .slice(-n)
    .map((l) => `  ${l.text}`)
    .join('\n');
}

/** Merge flags: an extra `--name[=value]` replaces a default with the same name. */
function mergeFlags(defaults: string[], extra: string[]): string[] {
  const nameOf = (f: string) => f.replace(/^--?/, '').split('=')[0];
  for (const f of extra) {
    if (!f.startsWith('-'))
      throw new Error(`envtest: extra flag ${JSON.stringify(f)} must look like --name=value`);
  }
  const overridden = new Set(extra.map(nameOf));
  return [...defaults.filter((f) => !overridden.has(nameOf(f))), ...extra];
}

interface HttpResult {
  status: number;
  body: string;
}

function httpsGet(url: string, ca: string, token: string, timeoutMs = 2000): Promise<HttpResult> {
  return new Promise((resolveRes, reject) => {
    const req = request(
      url,
      { ca, headers: { Authorization: `Bearer ${token}` }, timeout: timeoutMs },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => resolveRes({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

async function waitUntil(
  what: string,
  proc: Managed,
  timeoutMs: number,
  probe: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exitCode: number | string | undefined;
  void proc.exited.then((c) => {
    exitCode = c;
  });
  let lastError = '';
  while (Date.now() < deadline) {
    if (exitCode !== undefined) {
      throw new Error(`envtest: ${what}: process exited (${exitCode}); last output:\n${tailOf(proc)}`);
    }
    try {
      if (await probe()) return;
    } catch (err) {
      lastError = (err as Error).message;
    }
    await sleep(100);
  }
  throw new Error(
    `envtest: ${what} not ready within ${timeoutMs} ms (${lastError}); last output:\n${tailOf(proc)}`,
  );
}

const ADDRESS_IN_USE = /address already in use/i;

const DIR_PREFIX = 'mailplus-envtest-';
const OWNER_FILE = 'owner.pid';
const PKI_DIR_FILE = 'pki.dir';

/** Removes the temp dirs of control planes whose test process died without cleaning up (SIGKILL). */
async function removeStaleDirs(): Promise<void> {
  let entries: string[];
  try {
    entries = (await readdir(tmpdir())).filter((e) => e.startsWith(DIR_PREFIX));
  } catch {
    return;
  }
  for (const entry of entries) {
    const dir = join(tmpdir(), entry);
    try {
      const owner = Number((await readFile(join(dir, OWNER_FILE), 'utf8')).trim());
      if (!Number.isInteger(owner) || owner <= 0 || (await isAlive(owner))) continue;
      const pkiDir = (await readFile(join(dir, PKI_DIR_FILE), 'utf8').catch(() => '')).trim();
      if (pkiDir.startsWith(tmpdir())) await rm(pkiDir, { recursive: true, force: true });
      await rm(dir, { recursive: true, force: true });
    } catch {
      // not ours, or already gone
    }
  }
}

async function isAlive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A zombie (killed, not yet reaped) still answers kill(pid, 0).
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return !/^\d+ \(.*\) Z/s.test(stat);
}

// ---------------------------------------------------------------------------------------------
// Kubeconfig / tokens

function kubeconfigYaml(
  server: string,
  caPem: string,
  user: string,
  token: string,
  namespace?: string,
): string {
  const ca = Buffer.from(caPem).toString('base64');
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: envtest',
    '  cluster:',
    `    server: ${server}`,
    `    certificate-authority-data: ${ca}`,
    'users:',
    `- name: ${user}`,
    '  user:',
    `    token: ${token}`,
    'contexts:',
    '- name: envtest',
    '  context:',
    '    cluster: envtest',
    `    user: ${user}`,
    ...(namespace ? [`    namespace: ${namespace}`] : []),
    'current-context: envtest',
    '',
  ].join('\n');
}

const SA_GROUPS = [
  'system:serviceaccounts',
  `system:serviceaccounts:${OPERATOR_NAMESPACE}`,
  'system:authenticated',
];

// ---------------------------------------------------------------------------------------------
// The control plane

export async function startControlPlane(opts: StartControlPlaneOptions = {}): Promise<ControlPlane> {
  const assets = await resolveAssets();
  const startTimeoutMs = opts.startTimeoutMs ?? 60_000;
  await removeStaleDirs();
  const dir = await mkdtemp(join(tmpdir(), DIR_PREFIX));
  trackTempDir(dir);
  await writeFile(join(dir, OWNER_FILE), `${process.pid}\n`);

  let etcd: Managed | undefined;
  let apiServer: Managed | undefined;
  let pki: TestPki | undefined;
  let stopped = false;

  const stopAll = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    // kube-apiserver first (it would otherwise log etcd errors), then etcd.
    if (apiServer) await apiServer.stop(STOP_GRACE_MS);
    if (etcd) await etcd.stop(STOP_GRACE_MS);
    if (pki) {
      await pki.cleanup();
      tempDirs.delete(pki.dir);
    }
    await rm(dir, { recursive: true, force: true, maxRetries: 3 });
    tempDirs.delete(dir);
  };

  try {
    // --- PKI, service-account keys, tokens --------------------------------------------------
    const certs = await createTestPki(); // CA + serving cert with SANs localhost, 127.0.0.1, ::1
    pki = certs;
    trackTempDir(certs.dir);
    await writeFile(join(dir, PKI_DIR_FILE), `${certs.dir}\n`);
    const sa = generateKeyPairSync('ec', {
      namedCurve: 'P-256',
      privateKeyEncoding: { type: 'sec1', format: 'pem' },
      publicKeyEncoding: { type: 'spki', format: 'pem' },
    });
    const saKeyFile = join(dir, 'sa.key');
    const saPubFile = join(dir, 'sa.pub');
    await writeFile(saKeyFile, sa.privateKey, { mode: 0o600 });
    await writeFile(saPubFile, sa.publicKey);
    const caFile = join(dir, 'ca.crt');
    await writeFile(caFile, certs.ca);

    const token = () => randomBytes(24).toString('hex');
    const tokens: Record<EnvtestUser, string> = { admin: token(), operator: token(), relay: token() };
    const userNames: Record<EnvtestUser, string> = {
      admin: 'envtest-admin',
      operator: OPERATOR_USER,
      relay: RELAY_USER,
    };
    const tokenFile = join(dir, 'tokens.csv');
    // token,user,uid,"group1,group2"
    await writeFile(
      tokenFile,
      [
        `${tokens.admin},${userNames.admin},envtest-admin,"system:masters,system:authenticated"`,
        `${tokens.operator},${userNames.operator},mailplus-operator-uid,"${SA_GROUPS.join(',')}"`,
        `${tokens.relay},${userNames.relay},mailplus-relay-uid,"${SA_GROUPS.join(',')}"`,
        '',
      ].join('\n'),
      { mode: 0o600 },
    );

    // --- etcd ---------------------------------------------------------------------------------
    let etcdUrl = '';
    for (let attempt = 1; ; attempt++) {
      const [clientPort, peerPort] = await distinctFreePorts(2);
      etcdUrl = `http://127.0.0.1:${clientPort}`;
      const peerUrl = `http://127.0.0.1:${peerPort}`;
      const dataDir = join(dir, `etcd-data-${attempt}`);
      const args = mergeFlags(
        [
          '--name=envtest',
          `--data-dir=${dataDir}`,
          `--listen-client-urls=${etcdUrl}`,
          `--advertise-client-urls=${etcdUrl}`,
          `--listen-peer-urls=${peerUrl}`,
          `--initial-advertise-peer-urls=${peerUrl}`,
          `--initial-cluster=envtest=${peerUrl}`,
          '--initial-cluster-state=new',
          '--logger=zap',
          '--log-outputs=stderr',
          '--log-level=warn',
        ],
        opts.extraEtcdArgs ?? [],
      );
      const env = { ...process.env };
      if (process.arch === 'arm64') env.ETCD_UNSUPPORTED_ARCH = 'arm64'; // etcd 3.4 refuses otherwise
      const proc = startManaged('etcd', assets.etcd, args, env, opts.echo);
      etcd = proc;
      try {
        await waitUntil('etcd', proc, startTimeoutMs, async () => {
          const res = await fetch(`${etcdUrl}/health`, { signal: AbortSignal.timeout(2000) });
          return res.ok && (await res.text()).includes('"health":"true"');
        });
        break;
      } catch (err) {
        await proc.stop(2000);
        if (attempt < 3 && proc.lines.some((l) => ADDRESS_IN_USE.test(l.text))) continue;
        throw err;
      }
    }

    // --- kube-apiserver -------------------------------------------------------------------------
    let port = 0;
    let server = '';
    let apiArgs: string[] = [];
    const buildApiArgs = (p: number): string[] =>
      mergeFlags(
        [
          '--advertise-address=127.0.0.1',
          '--bind-address=127.0.0.1',
          `--secure-port=${p}`,
          '--insecure-port=0',
          `--etcd-servers=${etcdUrl}`,
          `--cert-dir=${join(dir, 'apiserver-certs')}`,
          `--tls-cert-file=${certs.server.certPath}`,
          `--tls-private-key-file=${certs.server.keyPath}`,
          `--client-ca-file=${certs.caPath}`,
          `--token-auth-file=${tokenFile}`,
          '--authorization-mode=RBAC',
          `--service-account-issuer=https://kubernetes.default.svc.cluster.local`,
          `--service-account-key-file=${saPubFile}`,
          `--service-account-signing-key-file=${saKeyFile}`,
          '--service-cluster-ip-range=10.0.0.0/24',
          '--allow-privileged=true',
          // No controller-manager runs: the ServiceAccount admission plugin would reject pods
          // whose namespace has no "default" ServiceAccount (envtest disables it too).
          '--disable-admission-plugins=ServiceAccount',
          '--profiling=false',
        ],
        opts.extraApiServerArgs ?? [],
      );

    const startApiServer = async (): Promise<Managed> => {
      const proc = startManaged('kube-apiserver', assets.kubeApiServer, apiArgs, process.env, opts.echo);
      apiServer = proc;
      try {
        await waitUntil('kube-apiserver /readyz', proc, startTimeoutMs, async () => {
          const res = await httpsGet(`${server}/readyz`, certs.ca, tokens.admin);
          return res.status === 200;
        });
      } catch (err) {
        await proc.stop(2000);
        throw err;
      }
      return proc;
    };

    for (let attempt = 1; ; attempt++) {
      port = (await distinctFreePorts(1))[0];
      server = `https://127.0.0.1:${port}`;
      apiArgs = buildApiArgs(port);
      try {
        await startApiServer();
        break;
      } catch (err) {
        if (attempt < 3 && apiServer?.lines.some((l) => ADDRESS_IN_USE.test(l.text))) continue;
        throw err;
      }
    }
    // The "default" namespace is created shortly after readiness by the API server itself.
    await waitUntil('namespace "default"', apiServer!, startTimeoutMs, async () => {
      const res = await httpsGet(`${server}/api/v1/namespaces/default`, certs.ca, tokens.admin);
      return res.status === 200;
    });

    // --- kubeconfigs ------------------------------------------------------------------------------
    const kubeconfigs = {} as Record<EnvtestUser, string>;
    for (const user of ['admin', 'operator', 'relay'] as const) {
      const file = join(dir, `kubeconfig-${user}.yaml`);
      const ns = user === 'admin' ? undefined : OPERATOR_NAMESPACE;
      await writeFile(file, kubeconfigYaml(server, certs.ca, `envtest-${user}`, tokens[user], ns), {
        mode: 0o600,
      });
      kubeconfigs[user] = file;
    }

    let apiServerDown = false;
    const stopApiServer = async (): Promise<void> => {
      if (stopped) throw new Error('envtest: stopApiServer() after stop()');
      apiServerDown = true;
      if (apiServer) await apiServer.stop(STOP_GRACE_MS);
    };
    const startAgain = async (): Promise<void> => {
      if (stopped) throw new Error('envtest: startApiServer() after stop()');
      // Same port: a test's clients keep their kubeconfig. Retry briefly if the port lingers.
      for (let attempt = 1; ; attempt++) {
        try {
          await startApiServer();
          apiServerDown = false;
          return;
        } catch (err) {
          if (attempt < 5 && apiServer?.lines.some((l) => ADDRESS_IN_USE.test(l.text))) {
            await sleep(500);
            continue;
          }
          throw err;
        }
      }
    };
    const restartApiServer = async (): Promise<void> => {
      await stopApiServer();
      await startAgain();
    };

    const cp: ControlPlane = {
      dir,
      server,
      port,
      etcdUrl,
      caPem: certs.ca,
      caFile,
      kubeconfigAdmin: kubeconfigs.admin,
      kubeconfigFor: (user) => kubeconfigs[user],
      adminToken: tokens.admin,
      tokens,
      userNames,
      assets,
      apiServerPid: () => apiServer!.pid,
      etcdPid: () => etcd!.pid,
      restartApiServer,
      stopApiServer,
      startApiServer: async () => {
        if (!apiServerDown) throw new Error('envtest: startApiServer() while kube-apiserver runs');
        await startAgain();
      },
      stop: stopAll,
    };

    if (opts.crdDir) cp.crds = await applyCrds(cp, opts.crdDir, startTimeoutMs);
    return cp;
  } catch (err) {
    await stopAll().catch(() => {});
    throw err;
  }
}

/** `count` different ports that were free a moment ago. */
async function distinctFreePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  for (let i = 0; ports.size < count && i < 50; i++) ports.add(await freePort());
  if (ports.size < count) throw new Error('envtest: could not find free loopback ports');
  return [...ports];
}

export interface AppliedCrds {
  /** `customresourcedefinition.apiextensions.k8s.io/NAME` of every CRD applied (all Established). */
  crds: string[];
  /**
   * How many `x-kubernetes-validations` (CEL) blocks were removed before applying because the
   * server predates CEL (v1.20 rejects them under server-side apply). 0 on servers that know CEL.
   */
  celRulesDropped: number;
}

/** Deletes every `x-kubernetes-validations` key below node; returns how many. */
function dropCelRules(node: unknown): number {
  if (Array.isArray(node)) return node.reduce((n: number, v) => n + dropCelRules(v), 0);
  if (!node || typeof node !== 'object') return 0;
  const obj = node as Record<string, unknown>;
  let n = 0;
  if ('x-kubernetes-validations' in obj) {
    delete obj['x-kubernetes-validations'];
    n++;
  }
  for (const v of Object.values(obj)) n += dropCelRules(v);
  return n;
}

/**
 * Applies all manifests in crdDir (server-side apply, field manager "envtest") and waits until its
 * CRDs are Established. kube-apiserver v1.20 has no CEL: server-side apply of a CRD containing
 * `x-kubernetes-validations` fails there ("field not declared in schema"), so on such a server the
 * rules are removed from the CRDs (as the server itself silently does on create/update) and the
 * apply is repeated; celRulesDropped tells how many. Any other failure throws.
 */
export async function applyCrds(cp: ControlPlane, crdDir: string, timeoutMs = 60_000): Promise<AppliedCrds> {
  const files = (await readdir(crdDir))
    .filter((f) => /\.(ya?ml|json)$/.test(f))
    .sort()
    .map((f) => join(crdDir, f));
  if (files.length === 0) throw new Error(`envtest: no *.yaml/*.yml/*.json manifests in ${crdDir}`);
  const apply = (paths: string[]) =>
    kubectl(
      cp,
      ['apply', '--server-side', '--field-manager=envtest', '--force-conflicts', '-o', 'name'].concat(
        paths.flatMap((f) => ['-f', f]),
      ),
      { timeoutMs },
    );
  let out: string;
  let celRulesDropped = 0;
  try {
    out = await apply(files);
  } catch (err) {
    if (!/x-kubernetes-validations/.test((err as Error).message)) throw err;
    const strippedDir = join(cp.dir, 'crds-without-cel');
    await mkdir(strippedDir, { recursive: true });
    const stripped: string[] = [];
    for (const file of files) {
      const docs = parseAllDocuments(await readFile(file, 'utf8')).map((d) => d.toJS() as unknown);
      for (const doc of docs) {
        if ((doc as { kind?: unknown } | null)?.kind === 'CustomResourceDefinition')
          celRulesDropped += dropCelRules(doc);
      }
      const target = join(strippedDir, basename(file).replace(/\.json$/, '.yaml'));
      await writeFile(
        target,
        docs
          .filter((d) => d != null)
          .map((d) => stringify(d))
          .join('---\n'),
      );
      stripped.push(target);
    }
    process.stderr.write(
      `[envtest] this kube-apiserver has no CEL: applying ${crdDir} without its ` +
        `${celRulesDropped} x-kubernetes-validations block(s)\n`,
    );
    out = await apply(stripped);
  }
  const crds = out
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith('customresourcedefinition'));
  if (crds.length > 0) {
    const secs = Math.max(1, Math.round(timeoutMs / 1000));
    await kubectl(cp, ['wait', '--for=condition=Established', `--timeout=${secs}s`, ...crds], {
      timeoutMs: timeoutMs + 10_000,
    });
  }
  return { crds, celRulesDropped };
}

/** Runs the kubectl binary against the control plane (admin unless opts.user); returns stdout. */
export async function kubectl(cp: ControlPlane, args: string[], opts: KubectlOptions = {}): Promise<string> {
  const user = opts.user ?? 'admin';
  const timeoutMs = opts.timeoutMs ?? 60_000;
  // A private discovery cache: ports get reused, and ~/.kube/cache could hold another run's API list.
  const fullArgs = [
    `--kubeconfig=${cp.kubeconfigFor(user)}`,
    `--cache-dir=${join(cp.dir, 'kube-cache')}`,
    ...args,
  ];
  await mkdir(join(cp.dir, 'kube-cache'), { recursive: true });
  return new Promise((resolveOut, reject) => {
    const child = execFile(
      cp.assets.kubectl,
      fullArgs,
      {
        timeout: timeoutMs,
        killSignal: 'SIGKILL',
        maxBuffer: 64 * 1024 * 1024,
        env: { ...process.env, KUBECONFIG: '' },
      },
      (err, stdout, stderr) => {
        if (err) {
          const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string };
          const why = e.killed ? `timed out after ${timeoutMs} ms` : `exit ${e.code}`;
          reject(
            new Error(
              `kubectl ${args.join(' ')} (as ${user}) failed (${why}):\n${stderr || stdout || e.message}`,
            ),
          );
        } else {
          resolveOut(stdout);
        }
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}
