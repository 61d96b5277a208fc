import net from 'node:net';

/**
 * PROXY protocol v1 (text) and v2 (binary) header parser, as sent by HAProxy, AWS NLB, and
 * Kubernetes load balancers. Pure: feed it the bytes received so far; it says whether the header is
 * complete, broken, or needs more bytes. Only ever used for peers in the trusted proxy CIDRs.
 */

export interface ProxyHeader {
  version: 1 | 2;
  /** LOCAL: health check or proxy-originated connection, use the socket's own addresses. */
  command: 'PROXY' | 'LOCAL';
  /** TCP4 / TCP6 carry addresses; UNKNOWN (v1) and anything else (v2 UNSPEC, UDP, unix) do not. */
  family: 'TCP4' | 'TCP6' | 'UNKNOWN';
  sourceAddress?: string;
  sourcePort?: number;
  destinationAddress?: string;
  destinationPort?: number;
}

export type ProxyParseResult =
  | { status: 'incomplete' }
  | { status: 'error'; reason: string }
  | { status: 'ok'; header: ProxyHeader; length: number };

export const V1_MAX_LENGTH = 107;
/** 16-byte fixed part plus addresses and TLVs; AWS NLB TLVs are well under this. */
export const V2_MAX_LENGTH = 16 + 2048;
export const V2_SIGNATURE = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);
const V1_PREFIX = Buffer.from('PROXY ');

function isPrefixOf(buf: Buffer, sig: Buffer): boolean {
  const n = Math.min(buf.length, sig.length);
  return buf.subarray(0, n).equals(sig.subarray(0, n));
}

export function parseProxyHeader(buf: Buffer): ProxyParseResult {
  if (buf.length === 0) return { status: 'incomplete' };
  if (isPrefixOf(buf, V2_SIGNATURE)) {
    return buf.length < V2_SIGNATURE.length ? { status: 'incomplete' } : parseV2(buf);
  }
  if (isPrefixOf(buf, V1_PREFIX)) {
    return buf.length < V1_PREFIX.length ? { status: 'incomplete' } : parseV1(buf);
  }
  return { status: 'error', reason: 'not a PROXY protocol header' };
}

function validPort(s: string): number | null {
  if (!/^(0|[1-9]\d{0,4})$/.test(s)) return null;
  const n = Number(s);
  return n <= 65535 ? n : null;
}

function parseV1(buf: Buffer): ProxyParseResult {
  const lf = buf.indexOf(0x0a);
  if (lf < 0) {
    return buf.length >= V1_MAX_LENGTH
      ? { status: 'error', reason: 'v1 header longer than 107 bytes' }
      : { status: 'incomplete' };
  }
  if (lf + 1 > V1_MAX_LENGTH) return { status: 'error', reason: 'v1 header longer than 107 bytes' };
  if (lf === 0 || buf[lf - 1] !== 0x0d)
    return { status: 'error', reason: 'v1 header not terminated by CRLF' };
  const line = buf.subarray(0, lf - 1).toString('latin1');
  const parts = line.split(' ');
  if (parts[1] === 'UNKNOWN') {
    return { status: 'ok', header: { version: 1, command: 'PROXY', family: 'UNKNOWN' }, length: lf + 1 };
  }
  if (parts.length !== 6) return { status: 'error', reason: 'v1 header: wrong number of fields' };
  const [, fam, src, dst, sport, dport] = parts;
  if (fam !== 'TCP4' && fam !== 'TCP6')
    return { status: 'error', reason: `v1 header: unknown family ${fam}` };
  const check = fam === 'TCP4' ? net.isIPv4 : net.isIPv6;
  if (!check(src) || !check(dst)) return { status: 'error', reason: 'v1 header: bad address' };
  const sp = validPort(sport);
  const dp = validPort(dport);
  if (sp === null || dp === null) return { status: 'error', reason: 'v1 header: bad port' };
  return {
    status: 'ok',
    header: {
      version: 1,
      command: 'PROXY',
      family: fam,
      sourceAddress: src,
      sourcePort: sp,
      destinationAddress: dst,
      destinationPort: dp,
    },
    length: lf + 1,
  };
}

function ipv6At(buf: Buffer, off: number): string {
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(off + i * 2).toString(16));
  // canonical compressed form via the URL parser would be overkill: net accepts the full form
  return groups.join(':');
}

function parseV2(buf: Buffer): ProxyParseResult {
  if (buf.length < 16) return { status: 'incomplete' };
  const verCmd = buf[12];
  if (verCmd >> 4 !== 2) return { status: 'error', reason: `v2 header: unsupported version ${verCmd >> 4}` };
  const cmd = verCmd & 0x0f;
  if (cmd > 1) return { status: 'error', reason: `v2 header: unknown command ${cmd}` };
  const famProto = buf[13];
  const len = buf.readUInt16BE(14);
  const total = 16 + len;
  if (total > V2_MAX_LENGTH)
    return { status: 'error', reason: `v2 header longer than ${V2_MAX_LENGTH} bytes` };
  if (buf.length < total) return { status: 'incomplete' };
  if (cmd === 0) {
    return { status: 'ok', header: { version: 2, command: 'LOCAL', family: 'UNKNOWN' }, length: total };
  }
  if (famProto === 0x11) {
    if (len < 12) return { status: 'error', reason: 'v2 header: TCP4 address block too short' };
    return {
      status: 'ok',
      header: {
        version: 2,
        command: 'PROXY',
        family: 'TCP4',
        sourceAddress: `${buf[16]}.${buf[17]}.${buf[18]}.${buf[19]}`,
        destinationAddress: `${buf[20]}.${buf[21]}.${buf[22]}.${buf[23]}`,
        sourcePort: buf.readUInt16BE(24),
        destinationPort: buf.readUInt16BE(26),
      },
      length: total,
    };
  }
  if (famProto === 0x21) {
    if (len < 36) return { status: 'error', reason: 'v2 header: TCP6 address block too short' };
    return {
      status: 'ok',
      header: {
        version: 2,
        command: 'PROXY',
        family: 'TCP6',
        sourceAddress: ipv6At(buf, 16),
        destinationAddress: ipv6At(buf, 32),
        sourcePort: buf.readUInt16BE(48),
        destinationPort: buf.readUInt16BE(50),
      },
      length: total,
    };
  }
  // UNSPEC, UDP, unix sockets: the spec says to accept the connection and use the real addresses
  return { status: 'ok', header: { version: 2, command: 'PROXY', family: 'UNKNOWN' }, length: total };
}
