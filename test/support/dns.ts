// A real, throwaway authoritative DNS server for tests: NSD (Debian package `nsd`, installed by
// scripts/ci-deps.sh) on a free 127.0.0.1 port, UDP and TCP, serving zones the test writes as zone
// files into a temp dir. Stopped by PID (SIGTERM, then SIGKILL) and the directory removed.
// Zones can be replaced while it runs (setZone rewrites the file and SIGHUPs nsd, which reloads it).
//
// Later checks (SPF, DKIM, DMARC, ARC) add TXT records the same way as the DNSBL tests add A
// records: startDnsServer({ zones: [{ zone: 'example.test', records: [txt('_dmarc', 'v=DMARC1; p=reject')] }] }).
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, type Managed, startProcess } from './processes.ts';

export interface DnsRecord {
  /** Owner name relative to the zone ('@' for the apex) or absolute with a trailing dot. */
  name: string;
  type: 'A' | 'AAAA' | 'TXT' | 'MX' | 'CNAME' | 'NS' | 'PTR';
  /** Presentation-format data, e.g. '127.0.0.2', '10 mx.example.test.', or a quoted TXT string (use txt()). */
  data: string;
  /** Seconds; default the zone's ttl. */
  ttl?: number;
}

export interface DnsZone {
  /** e.g. 'zen.example' (no trailing dot). */
  zone: string;
  records: DnsRecord[];
  /** Default TTL of the zone's records and its negative-answer TTL (SOA minimum). Default 300. */
  ttl?: number;
}

export interface DnsServer {
  host: string;
  port: number;
  /** 'HOST:PORT', what --dns-server takes. */
  server: string;
  readonly pid: number;
  /** Adds or replaces a zone and waits until nsd serves its new serial. */
  setZone(zone: DnsZone): Promise<void>;
  /** nsd's log (start-up, zone loads, errors; nsd does not log individual queries). */
  log(): Promise<string>;
  stop(): Promise<void>;
}

/** A TXT record; long strings are split into the 255-byte character-strings DNS requires. */
export function txt(name: string, value: string, ttl?: number): DnsRecord {
  const parts: string[] = [];
  for (let i = 0; i < value.length; i += 255) parts.push(value.slice(i, i + 255));
  const quoted = (parts.length ? parts : ['']).map((p) => `"${p.replace(/["\\]/g, '\\$&')}"`).join(' ');
  return { name, type: 'TXT', data: quoted, ttl };
}

/** The owner name a DNS blocklist lists an address under: 4.3.2.1 for 1.2.3.4, nibbles for IPv6. */
export function dnsblName(ip: string): string {
  if (ip.includes(':')) {
    const [head, tail = ''] = ip.split('::');
    const h = head ? head.split(':') : [];
    const t = tail ? tail.split(':') : [];
    const groups = ip.includes('::') ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h;
    return groups
      .map((g) => g.padStart(4, '0'))
      .join('')
      .split('')
      .reverse()
      .join('.');
  }
  return ip.split('.').reverse().join('.');
}

/** A-record listing `ip` in a DNSBL zone with return code `code` (default 127.0.0.2). */
export function listing(ip: string, code = '127.0.0.2', ttl?: number): DnsRecord {
  return { name: dnsblName(ip), type: 'A', data: code, ttl };
}

export function findNsd(): string | undefined {
  for (const p of ['/usr/sbin/nsd', '/usr/bin/nsd']) if (existsSync(p)) return p;
  return undefined;
}

function zoneFile(z: DnsZone, serial: number): string {
  const ttl = z.ttl ?? 300;
  const lines = [
    `$ORIGIN ${z.zone}.`,
    `$TTL ${ttl}`,
    `@ IN SOA ns.${z.zone}. hostmaster.${z.zone}. ${serial} 3600 600 86400 ${ttl}`,
    `@ IN NS ns.${z.zone}.`,
  ];
  if (!z.records.some((r) => r.name === 'ns')) lines.push('ns IN A 127.0.0.1');
  for (const r of z.records) lines.push(`${r.name} ${r.ttl ?? ttl} IN ${r.type} ${r.data}`);
  return `${lines.join('\n')}\n`;
}

function config(dir: string, host: string, port: number, zones: Iterable<string>): string {
  const zoneBlocks = [...zones].map((z) => `zone:\n  name: "${z}"\n  zonefile: "${z}.zone"\n`).join('');
  return `server:
  ip-address: ${host}@${port}
  port: ${port}
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "${dir}"
  database: ""
  zonelistfile: "${dir}/zone.list"
  xfrdfile: "${dir}/xfrd.state"
  xfrdir: "${dir}"
  pidfile: "${dir}/nsd.pid"
  logfile: "${dir}/nsd.log"
  server-count: 1
  verbosity: 1
  hide-version: yes
  refuse-any: yes
remote-control:
  control-enable: no
${zoneBlocks}`;
}

/**
 * `host`/`port`: where nsd listens (default 127.0.0.1 and a free port). A resolver that reads
 * /etc/resolv.conf (libc, the benchmark's milters) only ever asks port 53, hence the option of
 * port 53 on a loopback address of the caller's choosing.
 */
export async function startDnsServer(
  opts: { zones?: DnsZone[]; host?: string; port?: number } = {},
): Promise<DnsServer> {
  const nsd = findNsd();
  if (!nsd)
    throw new Error('nsd not found (/usr/sbin/nsd): install the Debian package nsd (scripts/ci-deps.sh)');
  const dir = await mkdtemp(join(tmpdir(), 'mailplus-dns-'));
  const host = opts.host ?? '127.0.0.1';
  const port = opts.port ?? (await freePort());
  const zones = new Map<string, DnsZone>();
  // per zone, so that a reload can be confirmed by the serial nsd serves
  const serials = new Map<string, number>();
  let serial = 1;
  for (const z of opts.zones ?? []) {
    zones.set(z.zone, z);
    serials.set(z.zone, serial);
    await writeFile(join(dir, `${z.zone}.zone`), zoneFile(z, serial));
  }
  const confPath = join(dir, 'nsd.conf');
  const log = () => readFile(join(dir, 'nsd.log'), 'utf8').catch(() => '');
  const { Resolver } = await import('node:dns/promises');
  const probe = new Resolver({ timeout: 500, tries: 2 });
  probe.setServers([`${host}:${port}`]);
  const servesSerial = async (zone: string, want: number) => {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const soa = await probe.resolveSoa(zone).catch(() => undefined);
      if (soa?.serial === want) return;
      if (Date.now() > deadline)
        throw new Error(`nsd did not load zone ${zone} serial ${want}:\n${await log()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  let proc: Managed | undefined;
  // nsd learns new zones only from its config at start (or nsd-control, which needs TLS keys):
  // a new zone restarts it on the same port, a changed zone is reloaded with SIGHUP
  const launch = async () => {
    await writeFile(confPath, config(dir, host, port, zones.keys()));
    // -d: stay in the foreground, so the PID we hold is nsd's main process (it kills its workers)
    proc = startProcess(nsd, ['-d', '-c', confPath], { name: 'nsd', group: true });
    await proc.waitForPort(port, host, 15_000);
    for (const [z, n] of serials) await servesSerial(z, n);
  };
  const stop = async () => {
    await proc?.stop(3000);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await launch();
  } catch (err) {
    const text = await log();
    await stop();
    throw new Error(`nsd did not start: ${(err as Error).message}\n${text}`);
  }
  return {
    host,
    port,
    server: `${host}:${port}`,
    get pid() {
      return proc?.pid ?? 0;
    },
    async setZone(z) {
      serial++;
      const added = !zones.has(z.zone);
      zones.set(z.zone, z);
      serials.set(z.zone, serial);
      await writeFile(join(dir, `${z.zone}.zone`), zoneFile(z, serial));
      if (added) {
        await proc?.stop(3000);
        await launch();
        return;
      }
      // SIGHUP: nsd rereads the zone files that changed
      if (proc) process.kill(proc.pid, 'SIGHUP');
      await servesSerial(z.zone, serial);
    },
    log,
    stop,
  };
}
