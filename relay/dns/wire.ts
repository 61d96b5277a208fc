import { randomInt } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { connect, isIP } from 'node:net';
import {
  type Answer,
  type DecodedPacket,
  decode,
  encode,
  type Packet,
  RECURSION_DESIRED,
  type RecordType,
  streamDecode,
  streamEncode,
} from 'dns-packet';

/**
 * One DNS question asked of one server on the wire (RFC 1035 over UDP, again over TCP when the
 * answer comes back truncated — RFC 7766), with the whole response kept: node:dns resolves TXT, MX
 * and PTR records without their TTLs and drops the SOA of a negative answer, and the relay's cache
 * of sender-authentication records needs both (RFC 2308).
 */

export interface DnsServerAddress {
  host: string;
  port: number;
}

export interface WireResponse {
  /** NOERROR, NXDOMAIN, SERVFAIL, REFUSED, … */
  rcode: string;
  answers: Answer[];
  authorities: Answer[];
}

/** EDNS0 payload size of the DNS Flag Day 2020 recommendation: no IP fragmentation. */
const UDP_PAYLOAD = 1232;

/** 'IP', 'IP:PORT' or '[IPv6]:PORT' (node:dns getServers() forms) as host and port. */
export function serverAddress(server: string): DnsServerAddress {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(server);
  if (bracketed) return { host: bracketed[1], port: Number(bracketed[2] ?? 53) };
  if (isIP(server)) return { host: server, port: 53 };
  const i = server.lastIndexOf(':');
  return { host: server.slice(0, i), port: Number(server.slice(i + 1)) };
}

export class DnsTimeout extends Error {
  readonly code = 'ETIMEOUT';
}

function queryPacket(id: number, name: string, type: RecordType, udp: boolean): Packet {
  return {
    type: 'query',
    id,
    flags: RECURSION_DESIRED,
    questions: [{ type, name }],
    ...(udp ? { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: UDP_PAYLOAD } as Answer] } : {}),
  };
}

/** A response to our question (same id, same name and type), or undefined for anything else. */
function matching(p: DecodedPacket, id: number, name: string, type: RecordType): WireResponse | undefined {
  const q = p.questions?.[0];
  if (p.type !== 'response' || p.id !== id || !q || q.type !== type) return undefined;
  if (q.name.toLowerCase() !== name.toLowerCase()) return undefined;
  const rcode = (p as DecodedPacket & { rcode?: string }).rcode ?? 'NOERROR';
  return { rcode, answers: p.answers ?? [], authorities: p.authorities ?? [] };
}

function overUdp(
  server: DnsServerAddress,
  name: string,
  type: RecordType,
  timeoutMs: number,
): Promise<WireResponse | 'truncated'> {
  const id = randomInt(0, 65536);
  const socket = createSocket(isIP(server.host) === 6 ? 'udp6' : 'udp4');
  return new Promise((resolve, reject) => {
    const done = (settle: () => void) => {
      clearTimeout(timer);
      socket.close();
      settle();
    };
    const timer = setTimeout(
      () =>
        done(() => reject(new DnsTimeout(`no answer from ${server.host}:${server.port} in ${timeoutMs} ms`))),
      timeoutMs,
    );
    socket.on('error', (err) => done(() => reject(err)));
    socket.on('message', (msg, from) => {
      // answers from elsewhere, and undecodable or unrelated ones, are ignored (spoofing, late replies)
      if (from.port !== server.port || (isIP(server.host) === 4 && from.address !== server.host)) return;
      let p: DecodedPacket;
      try {
        p = decode(msg);
      } catch {
        return;
      }
      const r = matching(p, id, name, type);
      if (r) done(() => resolve(p.flag_tc ? 'truncated' : r));
    });
    socket.send(encode(queryPacket(id, name, type, true)), server.port, server.host);
  });
}

function overTcp(
  server: DnsServerAddress,
  name: string,
  type: RecordType,
  timeoutMs: number,
): Promise<WireResponse> {
  const id = randomInt(0, 65536);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: server.host, port: server.port });
    let buf = Buffer.alloc(0);
    const done = (settle: () => void) => {
      clearTimeout(timer);
      socket.destroy();
      settle();
    };
    const timer = setTimeout(
      () => done(() => reject(new DnsTimeout(`no answer over TCP from ${server.host}:${server.port}`))),
      timeoutMs,
    );
    socket.on('error', (err) => done(() => reject(err)));
    socket.on('connect', () => socket.write(streamEncode(queryPacket(id, name, type, false))));
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
      let r: WireResponse | undefined;
      try {
        r = matching(streamDecode(buf) as DecodedPacket, id, name, type);
      } catch {
        r = undefined;
      }
      done(() => (r ? resolve(r) : reject(new Error(`malformed answer over TCP from ${server.host}`))));
    });
    socket.on('end', () => done(() => reject(new Error(`${server.host} closed the TCP connection`))));
  });
}

/** Asks one server once: UDP, then TCP when the UDP answer was truncated; each leg within timeoutMs. */
export async function queryServer(
  server: DnsServerAddress,
  name: string,
  type: RecordType,
  timeoutMs: number,
): Promise<WireResponse> {
  const udp = await overUdp(server, name, type, timeoutMs);
  return udp === 'truncated' ? overTcp(server, name, type, timeoutMs) : udp;
}
