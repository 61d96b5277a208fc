import type { SMTPServerDataStream } from 'smtp-server';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import { noteStreamedBytes } from './gc-pacer.ts';

/**
 * DATA pass-through without un-stuffing.
 *
 * Why: smtp-server's SMTPStream removes stuffing dots with a per-byte JavaScript loop (plus a
 * setImmediate per escaped dot), and the upstream leg would have to stuff them again byte by byte.
 * That was ~60% of the relay's CPU for large messages, while the bytes on the wire are the same on
 * both sides. So in data mode this parser emits the RAW, still dot-stuffed content up to and
 * including the CRLF before the terminating <CRLF>.<CRLF>; the upstream leg sends it as is and adds
 * the terminator itself. Only <CRLF>.<CRLF> ends a message.
 *
 * Size: byteLength / sizeExceeded count raw bytes, so stuffing dots count toward the size limit
 * (at most one byte per line; RFC 1870 SIZE is an estimate anyway and every MTA counts differently).
 *
 * Smuggling guard (SMTP smuggling, CVE-2023-51764 and friends): a line-leading dot is only valid as
 * "<CR><LF>.." (a stuffed dot) or as the terminator. Every "\n." must be preceded by "\r" and
 * followed by "." or "\r\n"; any "\r." (bare CR before a dot) is refused. Both 2-byte sequences are
 * found with Buffer.indexOf (native), never a per-byte loop. Bare LF or CR elsewhere is harmless
 * without a dot and is relayed as is. On a violation the stream stops emitting (the offending bytes
 * never reach the upstream), sets `badLineEnding` on the data stream, emits 'bad-line-ending', and
 * keeps reading until the real terminator, so the session stays in sync.
 */

export interface RawDataStreamExtras {
  badLineEnding?: boolean;
}
export type RawSMTPDataStream = SMTPServerDataStream & RawDataStreamExtras;

const TERMINATOR = Buffer.from('\r\n.\r\n');
const LF_DOT = Buffer.from('\n.');
const CR_DOT = Buffer.from('\r.');
const VIRTUAL_CRLF = Buffer.from('\r\n');
const EMPTY = Buffer.alloc(0);
/**
 * Bytes held back per chunk so that sequences straddling chunk boundaries are seen whole. Only
 * needed when those bytes contain a CR or LF: every sequence of interest (<CRLF>.<CRLF>, "\n.",
 * "\r.") starts with one. Otherwise (most chunks of a message body) the chunk is forwarded
 * whole, without a copy: a copy per socket read doubled the short-lived buffer memory of the
 * DATA path.
 */
const TAIL = 4;
/** Stands in for "a plain byte (not CR, not LF)" before a chunk (see _feedDataStream). */
const PLAIN = Buffer.from('x');

/** True when the last TAIL bytes of buf contain neither CR nor LF. */
function plainTail(buf: Buffer): boolean {
  for (let i = buf.length - TAIL; i < buf.length; i++) {
    const c = buf[i];
    if (c === 0x0d || c === 0x0a) return false;
  }
  return true;
}

/**
 * Finds a dot-line violation in buf[0, scanEnd). Returns its position or -1. Positions whose
 * verdict needs bytes not yet received are left undecided (they lie in the held-back tail).
 */
export function findDotViolation(buf: Buffer, scanEnd: number, complete: boolean): number {
  const cr = buf.indexOf(CR_DOT);
  if (cr >= 0 && cr + 1 < scanEnd) return cr;
  // p = 0 is either the virtual CR that starts the data or a byte decided in the previous round
  let p = buf.indexOf(LF_DOT, 1);
  while (p >= 0 && p < scanEnd) {
    if (buf[p - 1] !== 0x0d) return p;
    const next = p + 2 < buf.length ? buf[p + 2] : -1;
    if (next === 0x2e) {
      // stuffed dot: fine
    } else if (next === 0x0d) {
      const after = p + 3 < buf.length ? buf[p + 3] : -1;
      if (after === -1 && !complete) return -1;
      if (after !== 0x0a) return p;
      // the terminator itself: only reached when the caller scans past it, which it does not
    } else if (next === -1) {
      if (!complete) return -1;
      return p;
    } else {
      return p;
    }
    p = buf.indexOf(LF_DOT, p + 1);
  }
  return -1;
}

export class RawDataStream extends SMTPStream {
  /** Bytes not yet emitted: the held-back tail (or the virtual CRLF at data start). */
  private pending: Buffer = EMPTY;
  /** How many leading bytes of `pending` are virtual (the CRLF that conceptually precedes DATA). */
  private virtualBytes = 0;
  private bad = false;

  override startDataMode(maxBytes?: number | string | null): SMTPServerDataStream {
    const stream = super.startDataMode(maxBytes) as RawSMTPDataStream;
    stream.badLineEnding = false;
    // "<CRLF>.<CRLF>" at the very start (an empty message is just ".\r\n") and a dot line as the
    // first line are handled by pretending the data is preceded by the CRLF that ended DATA
    this.pending = VIRTUAL_CRLF;
    this.virtualBytes = 2;
    this.bad = false;
    return stream;
  }

  override _feedDataStream(chunk: Buffer, done: (err?: Error | null) => void): void {
    noteStreamedBytes(chunk.length);
    const dataStream = this._dataStream as RawSMTPDataStream;
    let buf: Buffer;
    let virt: number;
    // Is buf[0] a real byte that no earlier round has judged? Only on the zero-copy path below.
    let headUndecided = false;
    if (this.pending.length) {
      buf = Buffer.concat([this.pending, chunk]);
      virt = this.virtualBytes;
    } else if (chunk.length > TAIL) {
      // The previous round emitted everything because it ended on plain bytes (no CR or LF in its
      // last TAIL bytes): nothing straddles the boundary, so the chunk is scanned and forwarded as
      // is, without copying it. Its first byte follows a plain byte (not CR).
      buf = chunk;
      virt = 0;
      headUndecided = true;
    } else {
      // A short chunk after plain bytes: stand a plain virtual byte in for the one before it.
      buf = Buffer.concat([PLAIN, chunk]);
      virt = PLAIN.length;
    }
    const end = buf.indexOf(TERMINATOR);
    // "\n." at buf[0]: the byte before it was plain, so this LF is bare (findDotViolation only
    // looks from position 1, where the previous byte is in buf)
    const headBad = headUndecided && buf[0] === 0x0a && buf[1] === 0x2e;

    if (end >= 0) {
      if (!this.bad && (headBad || findDotViolation(buf, end + 1, true) >= 0)) this.flagBad(dataStream);
      const contentEnd = Math.max(virt, end + 2);
      this._countDataBytes(contentEnd - virt);
      this.pending = EMPTY;
      this.virtualBytes = 0;
      const content = !this.bad && contentEnd > virt ? buf.subarray(virt, contentEnd) : false;
      this._endDataMode(content, buf.subarray(end + TERMINATOR.length), done);
      return;
    }

    if (!this.bad && (headBad || findDotViolation(buf, buf.length, false) >= 0)) this.flagBad(dataStream);
    let out: Buffer;
    if (buf.length - virt > TAIL && plainTail(buf)) {
      // nothing at the end can start a terminator or a dot-line sequence: emit it all, hold nothing
      out = buf.subarray(virt);
      this.pending = EMPTY;
    } else {
      const emitEnd = buf.length - TAIL;
      if (emitEnd <= virt) {
        // too little to emit anything: keep it all (copied, the chunk may be reused by the socket)
        this.pending = Buffer.from(buf);
        this.virtualBytes = virt;
        done();
        return;
      }
      out = buf.subarray(virt, emitEnd);
      this.pending = Buffer.from(buf.subarray(emitEnd));
    }
    this.virtualBytes = 0;
    this._countDataBytes(out.length);
    if (this.bad || !dataStream.writable || dataStream.write(out) || dataStream.destroyed) {
      done();
      return;
    }
    // a stream that the application destroys never drains, it only closes
    const onDrain = () => {
      dataStream.removeListener('drain', onDrain);
      dataStream.removeListener('close', onDrain);
      done();
    };
    dataStream.once('drain', onDrain);
    dataStream.once('close', onDrain);
  }

  private flagBad(dataStream: RawSMTPDataStream): void {
    this.bad = true;
    dataStream.badLineEnding = true;
    dataStream.emit('bad-line-ending');
  }
}
