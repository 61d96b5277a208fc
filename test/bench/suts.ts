// Systems under test for the relay benchmark. Each starts on a loopback port, forwards
// *@bench.test to the sink, and is stopped by PID.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { findNsd, startDnsServer, txt } from '../support/dns.ts';
import { canConnect, freePort, killOnExit, startProcess } from '../support/processes.ts';
import { findBinary } from '../support/smtp-sink.ts';
import { benchRelayConfig } from './relay-config.ts';

const run = promisify(execFile);
const REPO = resolve(import.meta.dirname, '../..');
const NODE = join(REPO, 'node_modules/.bin/node');

export interface RunningSut {
  port: number;
  /** Root PID (the process tree under it is measured). */
  pid: number;
  /** Queueing MTA: an acknowledged message may not have reached the sink yet. */
  queueing: boolean;
  /** The relay's admin port (/metrics), for mailplus. */
  admin?: number;
  stop(): Promise<void>;
}

export interface Sut {
  name: string;
  /** Why it cannot run here (missing binary...), or undefined. */
  unavailable(): string | undefined;
  /** `relayArgs`: extra `mailplus relay` flags (the abuse cell's limits); other systems ignore them. */
  start(sinkPort: number, relayArgs?: string[]): Promise<RunningSut>;
}

// ---------------------------------------------------------------- Mail-Plus relay
export const mailplus: Sut = relaySut('mailplus');

/**
 * The relay with sender authentication on for the bench tenant (SPF, DKIM, ARC, DMARC per message,
 * against NSD on loopback serving the load's sender domain: SPF pass for 127.0.0.0/8, DMARC
 * p=reject). smtp-source's messages are unsigned, so DKIM finds nothing to verify: the cost measured
 * is the lookups, the hashing pass and holding messages up to holdBytes.
 */
export const mailplusAnnotate: Sut = relaySut('mailplus-annotate', 'annotate');
export const mailplusEnforce: Sut = relaySut('mailplus-enforce', 'enforce');

function relaySut(name: string, authMode?: 'annotate' | 'enforce'): Sut {
  return {
    name,
    unavailable: () => {
      if (!existsSync(join(REPO, 'bin/mailplus.js'))) return 'bin/mailplus.js not found';
      if (authMode && !findNsd()) return 'nsd not found (scripts/ci-deps.sh installs it)';
      return undefined;
    },
    start: (sinkPort, relayArgs = []) => startRelaySut(sinkPort, relayArgs, authMode),
  };
}

async function startRelaySut(
  sinkPort: number,
  extraArgs: string[],
  authMode: 'annotate' | 'enforce' | undefined,
): Promise<RunningSut> {
  const dir = await mkdtemp(join(tmpdir(), 'mailplus-bench-relay-'));
  const config = join(dir, 'relay-config.json');
  const dns = authMode ? await startDnsServer({ zones: [SOURCE_ZONE] }) : undefined;
  const authentication = authMode
    ? {
        mode: authMode,
        authservId: 'relay.bench.test',
        holdBytes: 262_144,
        rejectQuarantine: false,
        deferOnLookupFailure: true,
      }
    : undefined;
  await writeFile(config, JSON.stringify(benchRelayConfig(sinkPort, '127.0.0.1', authentication), null, 2));
  const relayArgs = dns ? [...extraArgs, '--dns-server', dns.server] : extraArgs;
  const port = await freePort();
  const admin = await freePort();
  const proc = startProcess(
    NODE,
    [
      'bin/mailplus.js',
      'relay',
      '--config',
      config,
      '--listen',
      `127.0.0.1:${port}`,
      '--admin-listen',
      `127.0.0.1:${admin}`,
      // the load generator (smtp-source, the probe: 127.0.0.1) is our own sender, exempt from the
      // per-client fairness limits as Postfix exempts $mynetworks; the abuse cell's hostile
      // clients connect from other loopback addresses, to which the limits apply
      '--client-limit-exempt',
      '127.0.0.1/32',
      ...relayArgs,
    ],
    { cwd: REPO, name: 'mailplus relay', env: { ...process.env, MAILPLUS_LOG_LEVEL: 'warn' } },
  );
  await proc.waitForPort(port, '127.0.0.1', 15_000);
  return {
    port,
    pid: proc.pid,
    queueing: false,
    admin,
    async stop() {
      await proc.stop(5000);
      await dns?.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------- Postfix
const POSTFIX_SERVICES = `
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`;

export const postfix: Sut = {
  name: 'postfix',
  unavailable() {
    try {
      findBinary('postfix');
      return process.getuid?.() === 0 ? undefined : 'postfix needs root to start';
    } catch (e) {
      return (e as Error).message;
    }
  },
  async start(sinkPort) {
    const bin = findBinary('postfix');
    const dir = await mkdtemp(join(tmpdir(), 'mailplus-bench-postfix-'));
    await chmod(dir, 0o755);
    const port = await freePort();
    const mainCf = `
compatibility_level = 3.6
config_directory = ${dir}
queue_directory = ${dir}/queue
data_directory = ${dir}/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix-sut.test
mydomain = test
myorigin = $myhostname
mydestination =
local_transport = error:no local delivery
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = bench.test
transport_maps = inline:{ bench.test=smtp:[127.0.0.1]:${sinkPort} }
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_peername_lookup = no
smtp_host_lookup = native
smtp_dns_support_level = disabled
disable_dns_lookups = yes
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
default_process_limit = 150
smtp_destination_concurrency_limit = 50
initial_destination_concurrency = 50
smtp_destination_rate_delay = 0
in_flow_delay = 0
message_size_limit = 67108864
smtpd_tls_security_level = none
smtp_tls_security_level = none
biff = no
append_dot_mydomain = no
maillog_file = ${dir}/maillog
maillog_file_prefixes = ${dir}
syslog_name = postfix-bench
`;
    await writeFile(join(dir, 'main.cf'), mainCf);
    await writeFile(
      join(dir, 'master.cf'),
      `127.0.0.1:${port} inet n - n - - smtpd\n${POSTFIX_SERVICES.trimStart()}`,
    );
    const pf = async (...args: string[]) => {
      try {
        return await run(bin, ['-c', dir, ...args], { timeout: 60_000 });
      } catch (e) {
        const err = e as { stdout?: string; stderr?: string; message: string };
        throw new Error(
          `postfix -c <dir> ${args.join(' ')} failed (see maillog in a kept dir): ${err.stderr || err.message}`,
        );
      }
    };
    // queue and data directories: postfix check creates the rest with the right owners
    await mkdir(join(dir, 'queue'));
    await mkdir(join(dir, 'data'));
    await run('chown', ['postfix', join(dir, 'data')]);
    await pf('check').catch(() => undefined); // warns (exit 1) about queue dir owners; harmless here
    await pf('start');
    const pidText = readFileSync(join(dir, 'queue/pid/master.pid'), 'utf8');
    const pid = Number(pidText.trim());
    const forget = killOnExit(pid);
    await waitForListener(port, '127.0.0.1', 10_000);
    return {
      port,
      pid,
      queueing: true,
      async stop() {
        try {
          await pf('stop');
        } catch {
          // fall through to the kill below
        }
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
        forget();
        await rm(dir, { recursive: true, force: true });
      },
    };
  },
};

async function waitForListener(port: number, host: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 1000 && Date.now() < deadline; i++) {
    if (await canConnect(port, host)) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${host}:${port} not accepting within ${timeoutMs} ms`);
}

/** Messages still in a Postfix instance's queue (for diagnostics). */
export async function postfixQueueCount(queueDir: string): Promise<number> {
  let n = 0;
  for (const sub of ['incoming', 'active', 'deferred']) {
    try {
      n += (await readdir(join(queueDir, sub), { recursive: true })).length;
    } catch {
      // missing
    }
  }
  return n;
}

// ---------------------------------------------------------------- Haraka
/**
 * Haraka's bin script: HARAKA_BIN, else the repo's node_modules (devDependency `Haraka`).
 */
function harakaBin(): string | undefined {
  const candidates = [process.env.HARAKA_BIN, join(REPO, 'node_modules/Haraka/bin/haraka')];
  return candidates.find((c): c is string => !!c && existsSync(c));
}

export const haraka: Sut = harakaSut('haraka', false);

/**
 * Haraka verifying senders with its own plugins, the counterpart of mailplus-annotate: `spf` (MAIL
 * FROM and HELO, Received-SPF header; no rejections, its default) and `dkim` (verify, its default;
 * Authentication-Results). Haraka has no DMARC plugin of its own. Both plugins ask node:dns's
 * default resolver, which a 1-line plugin points at the same NSD as our relay's --dns-server.
 */
export const harakaVerify: Sut = harakaSut('haraka-verify', true);

/** The load's sender domain as the verification cells' NSD serves it. */
export const SOURCE_ZONE = {
  zone: 'source.test',
  records: [txt('@', 'v=spf1 ip4:127.0.0.0/8 -all'), txt('_dmarc', 'v=DMARC1; p=reject')],
};

function harakaSut(name: string, verify: boolean): Sut {
  return {
    name,
    unavailable: () => {
      if (!harakaBin())
        return 'Haraka not installed (devDependency `Haraka`, or set HARAKA_BIN=<path>/bin/haraka)';
      if (verify && !findNsd()) return 'nsd not found (scripts/ci-deps.sh installs it)';
      return undefined;
    },
    start: (sinkPort) => startHaraka(sinkPort, verify),
  };
}

async function startHaraka(sinkPort: number, verify: boolean): Promise<RunningSut> {
  const bin = harakaBin()!;
  const dns = verify ? await startDnsServer({ zones: [SOURCE_ZONE] }) : undefined;
  const dir = await mkdtemp(join(tmpdir(), 'mailplus-bench-haraka-'));
  const port = await freePort();
  await mkdir(join(dir, 'config'), { recursive: true });
  await mkdir(join(dir, 'plugins'), { recursive: true });
  const files: Record<string, string> = {
    // nodes=0: one process, no cluster (like one relay pod process)
    'config/smtp.ini': `listen=127.0.0.1:${port}\nnodes=0\ninactivity_timeout=60\n`,
    'config/plugins': `${dns ? 'bench_dns\n' : ''}bench_no_rdns\n${dns ? 'spf\ndkim\n' : ''}rcpt_to.in_host_list\nqueue/smtp_forward\n`,
    ...(dns
      ? {
          // the load comes from loopback, which the spf plugin skips as private address space:
          // checked like a public client, as our relay checks it
          'plugins/bench_dns.js':
            `exports.register = function () { const dns = require('node:dns'); dns.setServers(['${dns.server}']); dns.promises.setServers(['${dns.server}']); };\n` +
            'exports.hook_connect_init = function (next, connection) { connection.remote.is_private = false; next(); };\n',
        }
      : {}),
    'config/host_list': 'bench.test\n',
    'config/me': 'haraka-sut.test\n',
    'config/smtp_forward.ini': `host=127.0.0.1\nport=${sinkPort}\nenable_tls=false\n`,
    'config/log.ini': '[main]\nlevel=warn\n',
    // Haraka reads its defaults from this file (greeting...): start from its own copy
    'config/connection.ini': readFileSync(join(dirname(bin), '../config/connection.ini'), 'utf8').replace(
      /^bytes=\d+/m,
      'bytes=67108864',
    ),
    // no DNS on connect: answer the rDNS hook ourselves
    'plugins/bench_no_rdns.js': "exports.hook_lookup_rdns = function (next) { next(OK, 'localhost'); };\n",
    'package.json': '{"name":"haraka-bench","private":true}\n',
  };
  for (const [f, text] of Object.entries(files)) await writeFile(join(dir, f), text);
  const proc = startProcess(NODE, [bin, '-c', dir], { name: 'haraka' });
  await proc.waitForPort(port, '127.0.0.1', 20_000);
  return {
    port,
    pid: proc.pid,
    queueing: false,
    async stop() {
      await proc.stop(5000);
      await dns?.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------- ceiling
/** No system under test: the load goes straight into the sink. */
export const ceiling: Sut = {
  name: 'ceiling',
  unavailable: () => undefined,
  async start(sinkPort) {
    return { port: sinkPort, pid: 0, queueing: false, stop: async () => {} };
  },
};

export const ALL_SUTS: Sut[] = [
  mailplus,
  mailplusAnnotate,
  mailplusEnforce,
  postfix,
  haraka,
  harakaVerify,
  ceiling,
];
