// Service names for the test cluster (test/cluster/cluster.sh): CoreDNS is not packaged in
// Debian, so this small authoritative server answers the part of the Kubernetes DNS spec pods
// use, from the API server's Services and Endpoints (listed every second):
//
//   <service>.<namespace>.svc.<domain>   A: the ClusterIP, or for a headless Service the ready
//                                        endpoint addresses
//   <hostname>.<service>.<namespace>.svc.<domain>   A: that endpoint (StatefulSet pods)
//   AAAA and other types of a known name: no data (NOERROR, empty), so resolvers fall back to A
//   anything else: NXDOMAIN (it never forwards: the cluster has no route out)
//
//   node test/cluster/cluster-dns.ts --kubeconfig FILE --listen 10.201.0.1:53 [--domain cluster.local]
//
// UDP and TCP (RFC 1035 4.2.2 length prefix). Answers carry TTL 5 s.
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';

export const TYPE_A = 1;
export const TYPE_AAAA = 28;
const CLASS_IN = 1;
const RCODE_NOERROR = 0;
const RCODE_FORMERR = 1;
const RCODE_NXDOMAIN = 3;
const RCODE_NOTIMP = 4;
const TTL_SECONDS = 5;

/** Lower-case FQDN without the trailing dot -> IPv4 addresses. */
export type Records = Map<string, string[]>;

export interface Question {
  id: number;
  flags: number;
  name: string;
  type: number;
  qclass: number;
  /** Bytes of the question section (name + type + class), echoed in the answer. */
  raw: Buffer;
}

/** Parses a query's header and first question; throws on a malformed message. */
export function parseQuery(msg: Buffer): Question {
  if (msg.length < 12) throw new Error('dns: message shorter than a header');
  const id = msg.readUInt16BE(0);
  const flags = msg.readUInt16BE(2);
  if (msg.readUInt16BE(4) !== 1) throw new Error('dns: expected exactly one question');
  const labels: string[] = [];
  let off = 12;
  for (;;) {
    if (off >= msg.length) throw new Error('dns: question name runs past the message');
    const len = msg[off];
    if (len === 0) break;
    if (len > 63) throw new Error('dns: compressed or oversized label in a question');
    labels.push(msg.toString('latin1', off + 1, off + 1 + len));
    off += 1 + len;
  }
  off += 1;
  if (off + 4 > msg.length) throw new Error('dns: question truncated');
  const type = msg.readUInt16BE(off);
  const qclass = msg.readUInt16BE(off + 2);
  return { id, flags, name: labels.join('.').toLowerCase(), type, qclass, raw: msg.subarray(12, off + 4) };
}

/** The response to a question, given the current records. */
export function answer(q: Question, records: Records): Buffer {
  const opcode = (q.flags >> 11) & 0xf;
  const rd = q.flags & 0x0100;
  let rcode = RCODE_NOERROR;
  let ips: string[] = [];
  if (opcode !== 0) rcode = RCODE_NOTIMP;
  else if (q.qclass !== CLASS_IN) rcode = RCODE_NOTIMP;
  else {
    const known = records.get(q.name);
    if (!known) rcode = RCODE_NXDOMAIN;
    else if (q.type === TYPE_A) ips = known;
  }
  const header = Buffer.alloc(12);
  header.writeUInt16BE(q.id, 0);
  // QR=1, opcode echoed, AA=1, RD echoed, RA=0.
  header.writeUInt16BE(0x8000 | (opcode << 11) | 0x0400 | rd | rcode, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(ips.length, 6);
  const rrs = ips.map((ip) => {
    const rr = Buffer.alloc(16);
    rr.writeUInt16BE(0xc00c, 0); // pointer to the question's name
    rr.writeUInt16BE(TYPE_A, 2);
    rr.writeUInt16BE(CLASS_IN, 4);
    rr.writeUInt32BE(TTL_SECONDS, 6);
    rr.writeUInt16BE(4, 10);
    ip.split('.').forEach((o, i) => {
      rr[12 + i] = Number(o);
    });
    return rr;
  });
  return Buffer.concat([header, q.raw, ...rrs]);
}

/** FORMERR for a message that cannot be parsed (when at least the ID can be read). */
export function formatError(msg: Buffer): Buffer | undefined {
  if (msg.length < 2) return undefined;
  const header = Buffer.alloc(12);
  header.writeUInt16BE(msg.readUInt16BE(0), 0);
  header.writeUInt16BE(0x8000 | RCODE_FORMERR, 2);
  return header;
}

export interface ServiceView {
  namespace: string;
  name: string;
  clusterIP?: string;
}
export interface EndpointsView {
  namespace: string;
  name: string;
  addresses: Array<{ ip: string; hostname?: string }>;
}

const isIPv4 = (ip: string | undefined): ip is string => !!ip && /^\d{1,3}(\.\d{1,3}){3}$/.test(ip);

/** The DNS records the Kubernetes DNS spec gives these Services and their ready endpoints. */
export function recordsFor(services: ServiceView[], endpoints: EndpointsView[], domain: string): Records {
  const records: Records = new Map();
  const eps = new Map(endpoints.map((e) => [`${e.namespace}/${e.name}`, e.addresses]));
  for (const s of services) {
    const fqdn = `${s.name}.${s.namespace}.svc.${domain}`.toLowerCase();
    const addresses = eps.get(`${s.namespace}/${s.name}`) ?? [];
    if (s.clusterIP && s.clusterIP !== 'None') {
      if (isIPv4(s.clusterIP)) records.set(fqdn, [s.clusterIP]);
      continue;
    }
    // Headless: the ready endpoints, and a name per endpoint with a hostname.
    records.set(fqdn, addresses.map((a) => a.ip).filter(isIPv4));
    for (const a of addresses) {
      if (a.hostname && isIPv4(a.ip)) records.set(`${a.hostname}.${fqdn}`.toLowerCase(), [a.ip]);
    }
  }
  return records;
}

async function loadRecords(api: CoreV1Api, domain: string): Promise<Records> {
  const [svcs, eps] = await Promise.all([
    api.listServiceForAllNamespaces(),
    api.listEndpointsForAllNamespaces(),
  ]);
  return recordsFor(
    svcs.items.map((s) => ({
      namespace: s.metadata?.namespace ?? '',
      name: s.metadata?.name ?? '',
      clusterIP: s.spec?.clusterIP,
    })),
    eps.items.map((e) => ({
      namespace: e.metadata?.namespace ?? '',
      name: e.metadata?.name ?? '',
      addresses: (e.subsets ?? []).flatMap((ss) =>
        (ss.addresses ?? []).map((a) => ({ ip: a.ip, hostname: a.hostname })),
      ),
    })),
    domain,
  );
}

function respond(msg: Buffer, records: Records): Buffer | undefined {
  try {
    return answer(parseQuery(msg), records);
  } catch {
    return formatError(msg);
  }
}

/** Serves `records()` on host:port over UDP and TCP; resolves once both listen. */
export async function serve(
  host: string,
  port: number,
  records: () => Records,
): Promise<{ close(): Promise<void>; port: number }> {
  // Port 0: the UDP socket picks a free port, and TCP must get the same number, which another
  // process may hold; pick again rather than fail.
  for (let attempt = 1; ; attempt++) {
    try {
      return await serveOn(host, port, records);
    } catch (err) {
      if (port !== 0 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 20) throw err;
    }
  }
}

async function serveOn(
  host: string,
  port: number,
  records: () => Records,
): Promise<{ close(): Promise<void>; port: number }> {
  const udp = createSocket(host.includes(':') ? 'udp6' : 'udp4');
  udp.on('message', (msg, rinfo) => {
    const out = respond(msg, records());
    if (out) udp.send(out, rinfo.port, rinfo.address);
  });
  await new Promise<void>((res, rej) => {
    udp.once('error', rej);
    udp.bind(port, host, () => res());
  });
  const boundPort = udp.address().port;
  const tcp = createServer((sock) => {
    let buf = Buffer.alloc(0);
    sock.setTimeout(10_000, () => sock.destroy());
    sock.on('error', () => sock.destroy());
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
        buf = buf.subarray(2 + msg.length);
        const out = respond(msg, records());
        if (!out) return sock.destroy();
        const len = Buffer.alloc(2);
        len.writeUInt16BE(out.length);
        sock.write(Buffer.concat([len, out]));
      }
    });
  });
  await new Promise<void>((res, rej) => {
    tcp.once('error', (err) => {
      udp.close();
      rej(err);
    });
    tcp.listen(boundPort, host, () => res());
  });
  return {
    port: boundPort,
    close: () =>
      new Promise<void>((res) => {
        udp.close();
        tcp.close(() => res());
      }),
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      kubeconfig: { type: 'string' },
      listen: { type: 'string', default: '127.0.0.1:53' },
      domain: { type: 'string', default: 'cluster.local' },
    },
    strict: true,
  });
  if (!values.kubeconfig) throw new Error('cluster-dns: --kubeconfig is required');
  const i = values.listen.lastIndexOf(':');
  const host = values.listen.slice(0, i);
  const port = Number(values.listen.slice(i + 1));
  const kc = new KubeConfig();
  kc.loadFromFile(values.kubeconfig);
  const api = kc.makeApiClient(CoreV1Api);
  const domain = values.domain.replace(/\.$/, '').toLowerCase();
  let current: Records = await loadRecords(api, domain);
  let lastError = '';
  const timer = setInterval(() => {
    loadRecords(api, domain).then(
      (r) => {
        current = r;
        lastError = '';
      },
      (err: unknown) => {
        // Keep answering from the last good view; log each new error once.
        const text = err instanceof Error ? err.message : String(err);
        if (text !== lastError)
          console.error(JSON.stringify({ level: 'error', msg: 'listing services failed', err: text }));
        lastError = text;
      },
    );
  }, 1000);
  const server = await serve(host, port, () => current);
  console.error(
    JSON.stringify({ level: 'info', msg: 'cluster DNS listening', listen: values.listen, domain }),
  );
  const stop = () => {
    clearInterval(timer);
    void server.close().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err: unknown) => {
    console.error(JSON.stringify({ level: 'fatal', msg: err instanceof Error ? err.message : String(err) }));
    process.exit(1);
  });
}
