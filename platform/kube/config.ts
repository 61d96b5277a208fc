// Where the API server is and who we are to it, from a kubeconfig (kubectl's rules) or the pod's
// service account. Our own small loader instead of @kubernetes/client-node: that library and its
// HTTP stack took about 80 MB of the operator's memory just loaded (docs/benchmarks.md).
//
// Supported: server + certificate-authority(-data) + insecure-skip-tls-verify + tls-server-name;
// token, tokenFile, client-certificate(-data) + client-key(-data), username/password, and exec
// credential plugins (client.authentication.k8s.io/v1 and v1beta1: how EKS, GKE and AKS sign in
// since kubectl 1.26 removed the built-in auth providers). The legacy `auth-provider` and
// `proxy-url` are refused with an error that says so, never ignored.

import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { parse as parseYaml } from 'yaml';

/** Where a pod's service-account token, CA and namespace are mounted. */
export const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface ExecPlugin {
  command: string;
  args: string[];
  env: Array<{ name: string; value: string }>;
  apiVersion: string;
}

export interface Credentials {
  token?: string;
  cert?: string;
  key?: string;
}

/** One resolved context: what a client needs to connect and authenticate. */
export interface KubeConnection {
  server: string;
  ca?: string;
  insecureSkipTLSVerify?: boolean;
  tlsServerName?: string;
  cert?: string;
  key?: string;
  token?: string;
  /** Re-read on use (service-account tokens rotate; client-go re-reads them too). */
  tokenFile?: string;
  username?: string;
  password?: string;
  exec?: ExecPlugin;
  /** The context's namespace (or the service account's). */
  namespace?: string;
  /** For messages: the kubeconfig file(s) or "in-cluster service account". */
  source: string;
}

type Named<T> = { name?: string } & Record<string, T | undefined>;
interface RawConfig {
  clusters?: Array<Named<Record<string, unknown>>>;
  users?: Array<Named<Record<string, unknown>>>;
  contexts?: Array<Named<Record<string, unknown>>>;
  'current-context'?: string;
}

function fileOrData(
  base: string,
  entry: Record<string, unknown>,
  field: string,
  what: string,
): string | undefined {
  const data = entry[`${field}-data`];
  if (typeof data === 'string' && data) return Buffer.from(data, 'base64').toString('utf8');
  const file = entry[field];
  if (typeof file !== 'string' || !file) return undefined;
  const path = isAbsolute(file) ? file : join(base, file);
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`kubeconfig ${what} ${field} ${path}: ${(err as Error).message}`);
  }
}

function pick(list: RawConfig['clusters'], name: string | undefined, key: string) {
  const hit = list?.find((e) => e?.name === name);
  return hit?.[key] as Record<string, unknown> | undefined;
}

/**
 * The current context of a kubeconfig text. `base`: the directory relative paths in it are
 * resolved against (the file's own, as kubectl does).
 */
export function connectionFromKubeconfig(text: string, base: string, source: string): KubeConnection {
  let raw: RawConfig;
  try {
    raw = (parseYaml(text) ?? {}) as RawConfig;
  } catch (err) {
    throw new Error(`kubeconfig ${source}: not YAML: ${(err as Error).message}`);
  }
  return resolve(raw, base, source);
}

function resolve(
  raw: RawConfig,
  base: string | ((section: string, name?: string) => string),
  source: string,
) {
  const baseOf = typeof base === 'string' ? () => base : base;
  const current = raw['current-context'];
  if (!current) throw new Error(`kubeconfig ${source} has no current cluster; set current-context`);
  const ctx = pick(raw.contexts, current, 'context');
  if (!ctx) throw new Error(`kubeconfig ${source}: current-context "${current}" is not among its contexts`);
  const clusterName = ctx.cluster as string | undefined;
  const userName = ctx.user as string | undefined;
  const cluster = pick(raw.clusters, clusterName, 'cluster');
  if (!cluster || typeof cluster.server !== 'string' || !cluster.server)
    throw new Error(`kubeconfig ${source}: context "${current}" names no cluster with a server`);
  if (cluster['proxy-url'])
    throw new Error(
      `kubeconfig ${source}: cluster "${clusterName}" uses proxy-url, which Mail-Plus does not support`,
    );
  const user = pick(raw.users, userName, 'user') ?? {};
  if (user['auth-provider'])
    throw new Error(
      `kubeconfig ${source}: user "${userName}" uses the legacy auth-provider, which Mail-Plus does not support: use the provider's exec credential plugin (as kubectl 1.26+ requires)`,
    );
  const cb = baseOf('cluster', clusterName);
  const ub = baseOf('user', userName);
  const conn: KubeConnection = {
    server: cluster.server.replace(/\/+$/, ''),
    ca: fileOrData(cb, cluster, 'certificate-authority', `cluster "${clusterName}"`),
    insecureSkipTLSVerify: cluster['insecure-skip-tls-verify'] === true,
    tlsServerName: (cluster['tls-server-name'] as string | undefined) || undefined,
    cert: fileOrData(ub, user, 'client-certificate', `user "${userName}"`),
    key: fileOrData(ub, user, 'client-key', `user "${userName}"`),
    token: (user.token as string | undefined) || undefined,
    username: (user.username as string | undefined) || undefined,
    password: (user.password as string | undefined) || undefined,
    namespace: (ctx.namespace as string | undefined) || undefined,
    source,
  };
  const tokenFile = user.tokenFile as string | undefined;
  if (!conn.token && tokenFile) conn.tokenFile = isAbsolute(tokenFile) ? tokenFile : join(ub, tokenFile);
  const exec = user.exec as Record<string, unknown> | undefined;
  if (exec) {
    if (typeof exec.command !== 'string' || !exec.command)
      throw new Error(`kubeconfig ${source}: user "${userName}" has an exec plugin without a command`);
    conn.exec = {
      command: exec.command,
      args: Array.isArray(exec.args) ? exec.args.map(String) : [],
      env: Array.isArray(exec.env)
        ? (exec.env as Array<{ name: string; value: string }>).map((e) => ({
            name: String(e.name),
            value: String(e.value),
          }))
        : [],
      apiVersion: String(exec.apiVersion ?? 'client.authentication.k8s.io/v1'),
    };
  }
  return conn;
}

/**
 * KUBECONFIG's files merged the way kubectl merges them (the first file to set a map key or a
 * named entry wins; relative paths resolve against the file that holds the entry).
 */
function loadFiles(files: string[]): KubeConnection {
  const merged: RawConfig = { clusters: [], users: [], contexts: [] };
  const baseOf = new Map<string, string>();
  for (const file of files) {
    let raw: RawConfig;
    try {
      raw = (parseYaml(readFileSync(file, 'utf8')) ?? {}) as RawConfig;
    } catch (err) {
      throw new Error(`kubeconfig ${file}: ${(err as Error).message}`);
    }
    merged['current-context'] ??= raw['current-context'] || undefined;
    for (const section of ['clusters', 'users', 'contexts'] as const) {
      for (const entry of raw[section] ?? []) {
        if (merged[section]?.some((e) => e.name === entry?.name)) continue;
        merged[section]?.push(entry);
        baseOf.set(`${section.slice(0, -1)}/${entry?.name}`, dirname(file));
      }
    }
  }
  return resolve(
    merged,
    (section, name) => baseOf.get(`${section}/${name}`) ?? process.cwd(),
    files.join(':'),
  );
}

/** The pod's service account (KUBERNETES_SERVICE_HOST/PORT, its token, CA and namespace files). */
export function inClusterConnection(): KubeConnection | undefined {
  const host = process.env.KUBERNETES_SERVICE_HOST;
  const port = process.env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) return undefined;
  const read = (f: string) => {
    try {
      return readFileSync(join(SA_DIR, f), 'utf8');
    } catch {
      return undefined;
    }
  };
  if (!existsSync(join(SA_DIR, 'token'))) return undefined;
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    ca: read('ca.crt'),
    tokenFile: join(SA_DIR, 'token'),
    namespace: read('namespace')?.trim() || undefined,
    source: 'in-cluster service account',
  };
}

/** --kubeconfig FILE, else KUBECONFIG, else ~/.kube/config, else the in-cluster service account. */
export function loadConnection(file?: string): KubeConnection {
  if (file) return loadFiles([file]);
  // as kubectl: files KUBECONFIG names that do not exist are skipped (it may list optional ones)
  const env = process.env.KUBECONFIG?.split(':').filter(Boolean);
  if (env?.length) {
    const present = env.filter((f) => existsSync(f));
    if (present.length === 0) throw new Error(`KUBECONFIG names no file that exists: ${env.join(':')}`);
    return loadFiles(present);
  }
  const home = join(homedir(), '.kube', 'config');
  if (existsSync(home)) return loadFiles([home]);
  const pod = inClusterConnection();
  if (pod) return pod;
  throw new Error(
    'no kubeconfig found: pass --kubeconfig FILE, set KUBECONFIG, or run in a pod with a service account',
  );
}

interface ExecCredential {
  status?: {
    token?: string;
    clientCertificateData?: string;
    clientKeyData?: string;
    expirationTimestamp?: string;
  };
}

/** Runs an exec credential plugin (KUBERNETES_EXEC_INFO as kubectl sets it). */
export function runExecPlugin(plugin: ExecPlugin): Promise<{ creds: Credentials; expiresAt: number }> {
  const env = { ...process.env };
  for (const e of plugin.env) env[e.name] = e.value;
  env.KUBERNETES_EXEC_INFO = JSON.stringify({
    apiVersion: plugin.apiVersion,
    kind: 'ExecCredential',
    spec: { interactive: false },
  });
  return new Promise((resolvePlugin, reject) => {
    execFile(
      plugin.command,
      plugin.args,
      { env, timeout: 60_000, maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        if (err) {
          reject(
            new Error(
              `exec credential plugin ${plugin.command} failed: ${String(stderr).trim() || err.message}`,
            ),
          );
          return;
        }
        let cred: ExecCredential;
        try {
          cred = JSON.parse(stdout) as ExecCredential;
        } catch {
          reject(new Error(`exec credential plugin ${plugin.command} printed no ExecCredential JSON`));
          return;
        }
        const s = cred.status ?? {};
        if (!s.token && !(s.clientCertificateData && s.clientKeyData)) {
          reject(
            new Error(
              `exec credential plugin ${plugin.command} returned neither a token nor a client certificate`,
            ),
          );
          return;
        }
        const expiresAt = s.expirationTimestamp
          ? Date.parse(s.expirationTimestamp)
          : Number.POSITIVE_INFINITY;
        resolvePlugin({
          creds: { token: s.token, cert: s.clientCertificateData, key: s.clientKeyData },
          expiresAt: Number.isNaN(expiresAt) ? Number.POSITIVE_INFINITY : expiresAt,
        });
      },
    );
  });
}
