// A UDP forwarder in front of a test DNS server (test/support/dns.ts) that counts the queries it
// sees per name and can swallow some (never answering them) to make a resolver time out: the
// DNSBL tests use it to prove that cached answers are not asked again and that a silent zone is a
// timeout. Loopback only; closed by the test.
import { createSocket, type RemoteInfo } from 'node:dgram';

export interface DnsProxy {
  /** 'HOST:PORT', what --dns-server takes. */
  server: string;
  port: number;
  /** Queries seen, lower-case name without the trailing dot, in arrival order. */
  queries: string[];
  /** How many queries for names equal to or under `suffix`. */
  count(suffix: string): number;
  close(): Promise<void>;
}

/** The first question's QNAME of a DNS message (RFC 1035 §4.1.2), lower-case. */
export function questionName(msg: Buffer): string | undefined {
  let off = 12;
  const labels: string[] = [];
  while (off < msg.length) {
    const len = msg[off];
    if (len === 0) return labels.join('.').toLowerCase();
    if (len > 63) return undefined; // no compression in a question we forward
    labels.push(msg.subarray(off + 1, off + 1 + len).toString('latin1'));
    off += 1 + len;
  }
  return undefined;
}

/** Bytes of the first question (QNAME, QTYPE, QCLASS). */
function questionLength(msg: Buffer): number {
  let off = 12;
  while (off < msg.length && msg[off] !== 0) off += 1 + msg[off];
  return off + 1 + 4 - 12;
}

export async function startDnsProxy(opts: {
  /** The real server, 'HOST:PORT'. */
  upstream: string;
  /** Names for which no answer is ever sent (the query is still counted). */
  silent?: (name: string) => boolean;
  /** Names answered SERVFAIL (RCODE 2) by the forwarder itself, as a broken recursive resolver would. */
  servfail?: (name: string) => boolean;
}): Promise<DnsProxy> {
  const [upHost, upPort] = [
    opts.upstream.slice(0, opts.upstream.lastIndexOf(':')),
    Number(opts.upstream.split(':').pop()),
  ];
  const front = createSocket('udp4');
  const queries: string[] = [];
  // one upstream socket per query: the answer goes back to whoever asked
  const inflight = new Set<ReturnType<typeof createSocket>>();
  front.on('message', (msg: Buffer, from: RemoteInfo) => {
    const name = questionName(msg) ?? '?';
    queries.push(name);
    if (opts.silent?.(name)) return;
    if (opts.servfail?.(name)) {
      // the query with QR set and RCODE 2: the question section stays, no answers
      const reply = Buffer.from(msg);
      reply[2] |= 0x80;
      reply[3] = (reply[3] & 0xf0) | 0x80 | 2;
      reply.writeUInt16BE(0, 6);
      reply.writeUInt16BE(0, 8);
      reply.writeUInt16BE(0, 10);
      front.send(reply.subarray(0, 12 + questionLength(msg)), from.port, from.address);
      return;
    }
    const up = createSocket('udp4');
    inflight.add(up);
    const done = () => {
      clearTimeout(timer);
      inflight.delete(up);
      up.close();
    };
    const timer = setTimeout(done, 5000);
    up.on('message', (answer) => {
      front.send(answer, from.port, from.address);
      done();
    });
    up.on('error', done);
    up.send(msg, upPort, upHost);
  });
  await new Promise<void>((resolve) => front.bind(0, '127.0.0.1', resolve));
  const port = front.address().port;
  return {
    server: `127.0.0.1:${port}`,
    port,
    queries,
    count: (suffix) => {
      const s = suffix.toLowerCase();
      return queries.filter((q) => q === s || q.endsWith(`.${s}`)).length;
    },
    close: async () => {
      for (const s of inflight) s.close();
      inflight.clear();
      await new Promise<void>((resolve) => front.close(() => resolve()));
    },
  };
}
