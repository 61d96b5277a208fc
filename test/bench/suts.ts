// Systems under test for the relay benchmark. Each starts on a loopback port, forwards
// *@bench.test to the sink, and is stopped by PID.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { canConnect, freePort, killOnExit, type Managed, startProcess } from '../support/processes.ts';
import { findBinary } from '../support/smtp-sink.ts';
import { type AuthSetup, inResolvNamespace } from './auth-setup.ts';
import { benchRelayConfig } from './relay-config.ts';

const run = promisify(execFile);
const REPO = resolve(import.meta.dirname, '../..');
const NODE = join(REPO, 'node_modules/.bin/node');

export interface RunningSut {
  port: number;
  /** Root PID (the process tree under it is measured). */
  pid: number;
  /** Further processes of the system outside that tree (Postfix's milters), measured with it. */
  otherPids?: number[];
  /** Queueing MTA: an acknowledged message may not have reached the sink yet. */
  queueing: boolean;
  /** The relay's admin port (/metrics), for mailplus. */
  admin?: number;
  /** How the system's process ended if it is gone before stop() (exit code or signal, last stderr line). */
  gone?(): string | undefined;
  stop(): Promise<void>;
}

export interface Sut {
  name: string;
  /** Why it cannot run here (missing binary...), or undefined. */
  unavailable(): string | undefined;
  /**
   * `relayArgs`: extra `mailplus relay` flags (the abuse cell's limits); other systems ignore them.
   * `auth`: verify SPF/DKIM/DMARC against the run's DNS server, annotating or enforcing.
   */
  start(sinkPort: number, relayArgs?: string[], auth?: AuthSetup): Promise<RunningSut>;
  /** Why it cannot verify sender authentication here, or undefined. */
  authUnavailable?(): string | undefined;
}

// ---------------------------------------------------------------- Mail-Plus relay
export const mailplus: Sut = {
  name: 'mailplus',
  unavailable: () => (existsSync(join(REPO, 'bin/mailplus.js')) ? undefined : 'bin/mailplus.js not found'),
  authUnavailable: () => undefined,
  async start(sinkPort, relayArgs = [], auth) {
    const dir = await mkdtemp(join(tmpdir(), 'mailplus-bench-relay-'));
    const config = join(dir, 'relay-config.json');
    await writeFile(config, JSON.stringify(benchRelayConfig(sinkPort, '127.0.0.1', auth?.mode), null, 2));
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
        ...(auth ? ['--dns-server', auth.dns.server] : []),
        ...relayArgs,
      ],
      { cwd: REPO, name: 'mailplus relay', env: { ...process.env, MAILPLUS_LOG_LEVEL: 'warn' } },
    );
    await proc.waitForPort(port, '127.0.0.1', 15_000);
    let gone: string | undefined;
    void proc.exited.then((how) => {
      const err = proc.lines.filter((l) => l.stream === 'stderr' && l.text.trim());
      // V8's fatal line (heap limit) says why; the stack frames after it do not
      const last = (err.find((l) => /FATAL ERROR|out of memory/i.test(l.text)) ?? err.at(-1))?.text;
      gone = `exited ${how}${last ? `: ${last.trim().slice(0, 120)}` : ''}`;
    });
    return {
      port,
      pid: proc.pid,
      queueing: false,
      admin,
      gone: () => gone,
      async stop() {
        await proc.stop(5000);
        await rm(dir, { recursive: true, force: true });
      },
    };
  },
};

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
  authUnavailable() {
    if (process.getuid?.() !== 0) return 'the milters run in a private mount namespace: needs root';
    for (const [bin, pkg] of AUTH_TOOLS) {
      try {
        findBinary(bin);
      } catch {
        return `${bin} not found: install the Debian package ${pkg} (scripts/ci-deps.sh)`;
      }
    }
    return undefined;
  },
  async start(sinkPort, _relayArgs, auth) {
    const bin = findBinary('postfix');
    const dir = await mkdtemp(join(tmpdir(), 'mailplus-bench-postfix-'));
    await chmod(dir, 0o755);
    const port = await freePort();
    const milters = auth ? await startMilters(dir, auth) : undefined;
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
smtpd_recipient_restrictions =${milters ? ' check_policy_service unix:private/policy-spf' : ''}
${milters ? postfixAuthMainCf(milters.ports) : ''}
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
      `127.0.0.1:${port} inet n - n - - smtpd\n${POSTFIX_SERVICES.trimStart()}${milters ? POLICYD_SPF_SERVICE(dir) : ''}`,
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
    if (auth) {
      // master and every child it spawns (policyd-spf) resolve through the run's DNS server
      const [cmd, args] = inResolvNamespace(auth.dns.resolvConf, [bin, '-c', dir, 'start']);
      await run(cmd, args, { timeout: 60_000 }).catch((e) => {
        throw new Error(`postfix -c <dir> start (auth) failed: ${(e as { stderr?: string }).stderr || e}`);
      });
    } else {
      await pf('start');
    }
    const pidText = readFileSync(join(dir, 'queue/pid/master.pid'), 'utf8');
    const pid = Number(pidText.trim());
    const forget = killOnExit(pid);
    await waitForListener(port, '127.0.0.1', 10_000);
    return {
      port,
      pid,
      otherPids: milters?.procs.map((p) => p.pid),
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
        for (const m of milters?.procs ?? []) await m.stop(3000);
        await rm(dir, { recursive: true, force: true });
      },
    };
  },
};

// ---------------------------------------------------------------- Postfix's sender authentication
/** Programs of the verifying Postfix and the Debian packages that ship them. */
const AUTH_TOOLS: Array<[string, string]> = [
  ['opendkim', 'opendkim'],
  ['opendmarc', 'opendmarc'],
  ['policyd-spf', 'postfix-policyd-spf-python'],
  ['unshare', 'util-linux'],
];

const POSTFIX_AUTHSERV_ID = 'postfix-sut.test';

/** policyd-spf as Debian's README sets it up: a spawn service, one process per smtpd connection. */
const POLICYD_SPF_SERVICE = (dir: string) =>
  `policy-spf unix - n n - 0 spawn user=policyd-spf argv=${findBinary('policyd-spf')} ${dir}/policyd-spf.conf\n`;

function postfixAuthMainCf(ports: { opendkim: number; opendmarc: number }): string {
  return `policy-spf_time_limit = 3600s
# opendkim first: opendmarc reads its Authentication-Results (and policyd-spf's) from the header
smtpd_milters = inet:127.0.0.1:${ports.opendkim}, inet:127.0.0.1:${ports.opendmarc}
non_smtpd_milters =
milter_default_action = tempfail
milter_protocol = 6`;
}

/**
 * opendkim (verify only) and opendmarc, each in the foreground in a mount namespace that resolves
 * through the run's DNS server, listening on loopback TCP for this Postfix. Neither skips the load
 * generator's 127.0.0.1 (their default InternalHosts / IgnoreHosts), and policyd-spf checks it too
 * (its default skip_addresses is loopback): the bench's sender is a stranger to them, as to us.
 */
async function startMilters(
  dir: string,
  auth: AuthSetup,
): Promise<{ ports: { opendkim: number; opendmarc: number }; procs: Managed[] }> {
  const ports = { opendkim: await freePort(), opendmarc: await freePort() };
  const enforce = auth.mode === 'enforce';
  const noHosts = join(dir, 'no-hosts');
  // TEST-NET-1: nothing here connects from it
  await writeFile(noHosts, '192.0.2.255\n');
  await writeFile(
    join(dir, 'opendkim.conf'),
    `Syslog no
Mode v
Socket inet:${ports.opendkim}@127.0.0.1
UserID opendkim
AuthservID ${POSTFIX_AUTHSERV_ID}
AlwaysAddARHeader yes
InternalHosts ${noHosts}
Nameservers ${auth.dns.host}
`,
  );
  await writeFile(
    join(dir, 'opendmarc.conf'),
    `Syslog false
Socket inet:${ports.opendmarc}@127.0.0.1
UserID opendmarc
AuthservID ${POSTFIX_AUTHSERV_ID}
TrustedAuthservIDs ${POSTFIX_AUTHSERV_ID}
IgnoreHosts ${noHosts}
RejectFailures ${enforce}
SPFSelfValidate true
RequiredHeaders false
FailureReports false
PublicSuffixList /usr/share/publicsuffix/public_suffix_list.dat
`,
  );
  await writeFile(
    join(dir, 'policyd-spf.conf'),
    `debugLevel = 0
TestOnly = 1
HELO_reject = ${enforce ? 'Fail' : 'False'}
Mail_From_reject = ${enforce ? 'Fail' : 'False'}
PermError_reject = False
TempError_Defer = ${enforce ? 'True' : 'False'}
skip_addresses = 192.0.2.255/32
Header_Type = AR
Authserv_Id = ${POSTFIX_AUTHSERV_ID}
`,
  );
  const procs: Managed[] = [];
  try {
    for (const [name, argv, port] of [
      ['opendkim', [findBinary('opendkim'), '-f', '-x', join(dir, 'opendkim.conf')], ports.opendkim],
      ['opendmarc', [findBinary('opendmarc'), '-f', '-c', join(dir, 'opendmarc.conf')], ports.opendmarc],
    ] as const) {
      const [cmd, args] = inResolvNamespace(auth.dns.resolvConf, [...argv]);
      const proc = startProcess(cmd, args, { name });
      procs.push(proc);
      await proc.waitForPort(port, '127.0.0.1', 10_000).catch((e) => {
        throw new Error(
          `${name} did not listen: ${(e as Error).message}\n${proc.lines.map((l) => l.text).join('\n')}`,
        );
      });
    }
  } catch (e) {
    for (const p of procs) await p.stop(2000);
    throw e;
  }
  return { ports, procs };
}

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

export const haraka: Sut = {
  name: 'haraka',
  unavailable: () =>
    harakaBin()
      ? undefined
      : 'Haraka not installed (devDependency `Haraka`, or set HARAKA_BIN=<path>/bin/haraka)',
  authUnavailable() {
    for (const plugin of ['haraka-plugin-spf', 'haraka-plugin-dkim']) {
      if (!existsSync(join(REPO, 'node_modules', plugin)))
        return `${plugin} not installed (an optional dependency of the Haraka devDependency)`;
    }
    return undefined;
  },
  async start(sinkPort, _relayArgs, auth) {
    const bin = harakaBin()!;
    const dir = await mkdtemp(join(tmpdir(), 'mailplus-bench-haraka-'));
    const port = await freePort();
    await mkdir(join(dir, 'config'), { recursive: true });
    await mkdir(join(dir, 'plugins'), { recursive: true });
    const files: Record<string, string> = {
      // nodes=0: one process, no cluster (like one relay pod process)
      'config/smtp.ini': `listen=127.0.0.1:${port}\nnodes=0\ninactivity_timeout=60\n`,
      'config/plugins': auth
        ? 'bench_no_rdns\nbench_auth_dns\nspf\nrcpt_to.in_host_list\ndkim\nqueue/smtp_forward\n'
        : 'bench_no_rdns\nrcpt_to.in_host_list\nqueue/smtp_forward\n',
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
      ...(auth ? harakaAuthFiles(auth) : {}),
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
        await rm(dir, { recursive: true, force: true });
      },
    };
  },
};

/**
 * Haraka's own spf and dkim plugins (haraka-plugin-spf, haraka-plugin-dkim: verify), resolving through
 * the run's DNS server. Haraka ships no DMARC plugin; enforce is the spf plugin refusing SPF fail
 * (HELO and MAIL FROM) and deferring its temporary errors, the dkim plugin's verdicts stay annotations.
 */
function harakaAuthFiles(auth: AuthSetup): Record<string, string> {
  const enforce = auth.mode === 'enforce';
  return {
    'config/spf.ini': enforce
      ? '[deny]\nhelo_fail=true\nmfrom_fail=true\n[defer]\nhelo_temperror=true\nmfrom_temperror=true\n'
      : '[deny]\n',
    'config/dkim.ini': '[sign]\nenabled=false\n[verify]\nenabled=true\n',
    // Node's resolver for every plugin; and the load generator's 127.0.0.1 counts as a stranger
    // (the spf plugin skips private addresses, which would leave it nothing to check here)
    'plugins/bench_auth_dns.js': `const dns = require('node:dns');
exports.register = function () {
  dns.setServers([${JSON.stringify(auth.dns.server)}]);
  dns.promises.setServers([${JSON.stringify(auth.dns.server)}]);
};
exports.hook_connect_init = function (next, connection) {
  connection.remote.is_private = false;
  next();
};
`,
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

export const ALL_SUTS: Sut[] = [mailplus, postfix, haraka, ceiling];
