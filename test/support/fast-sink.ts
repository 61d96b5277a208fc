// A fast counting SMTP sink for benchmarks and big-message tests: no greeting delay,
// pipelining, DATA scanned with Buffer.indexOf (never per byte). It counts messages and
// bytes and records one identifier per message -- the X-Bench-Id header if present in the
// first 8 KiB (verifying peers prepend their headers above it), else the first recipient --
// so a benchmark can check exactly-once delivery.
// Run it in-process (startFastSink) or as its own process (test/bench/fast-sink-main.ts).
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';

export interface FastSinkStats {
  connections: number;
  messages: number;
  /** Content bytes (between DATA and the terminating dot line, dot-stuffed as sent). */
  bytes: number;
  /** Distinct identifiers seen. */
  unique: number;
  /** Identifiers seen more than once, with their counts (first 100). */
  duplicates: Record<string, number>;
  duplicateCount: number;
  firstAt?: number;
  lastAt?: number;
}

export interface FastSink {
  port: number;
  host: string;
  stats(): FastSinkStats;
  /** id -> times received. */
  ids(): Map<string, number>;
  reset(): void;
  close(): Promise<void>;
}

export interface FastSinkOptions {
  port?: number;
  host?: string;
  /** SIZE announced in EHLO; default 64 MiB. */
  size?: number;
}

const TERM = Buffer.from('\r\n.\r\n');
const CRLF = Buffer.from('\r\n');
const ID_HEADER = /^X-Bench-Id:[ \t]*(\S+)/im;
const HEAD_BYTES = 8192;

export async function startFastSink(opts: FastSinkOptions = {}): Promise<FastSink> {
  const host = opts.host ?? '127.0.0.1';
  const size = opts.size ?? 64 * 1024 * 1024;
  const ehlo = Buffer.from(
    `250-fast-sink\r\n250-PIPELINING\r\n250-SIZE ${size}\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n`,
  );
  let counts = new Map<string, number>();
  let stats: FastSinkStats = emptyStats();
  const sockets = new Set<Socket>();

  const onMessage = (id: string, bytes: number) => {
    const n = (counts.get(id) ?? 0) + 1;
    counts.set(id, n);
    stats.messages++;
    stats.bytes += bytes;
    if (n === 1) stats.unique++;
    else stats.duplicateCount++;
    const now = Date.now();
    stats.firstAt ??= now;
    stats.lastAt = now;
  };

  const server: Server = createServer((socket) => {
    sockets.add(socket);
    stats.connections++;
    socket.setNoDelay(true);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    handle(socket);
  });

  const handle = (socket: Socket) => {
    let inData = false;
    let cmdBuf: Buffer = Buffer.alloc(0);
    // data state
    let tail = Buffer.from(CRLF); // last <=4 bytes of content so far, seeded with DATA's CRLF
    let head: Buffer[] = [];
    let headLen = 0;
    let msgBytes = 0;
    let firstRcpt = '';
    let hasRcpt = false;
    let seq = 0;

    const finishMessage = () => {
      const headText = Buffer.concat(head).subarray(0, HEAD_BYTES).toString('latin1');
      const id = ID_HEADER.exec(headText)?.[1] ?? firstRcpt;
      onMessage(id, msgBytes);
      inData = false;
      hasRcpt = false;
      firstRcpt = '';
      head = [];
      headLen = 0;
      msgBytes = 0;
      return `250 2.0.0 Ok: queued as ${(++seq).toString(16)}\r\n`;
    };

    const addContent = (buf: Buffer) => {
      if (buf.length === 0) return;
      msgBytes += buf.length;
      if (headLen < HEAD_BYTES) {
        const part = buf.subarray(0, HEAD_BYTES - headLen);
        head.push(Buffer.from(part));
        headLen += part.length;
      }
    };

    // Feeds DATA content; returns the index in chunk just past the terminator, or -1.
    const scanData = (chunk: Buffer): number => {
      // A terminator straddling the previous chunk and this one: search the seam only.
      const seamHead = chunk.subarray(0, 4);
      const seam = Buffer.concat([tail, seamHead]);
      const s = seam.indexOf(TERM);
      if (s !== -1 && s + TERM.length > tail.length) {
        const endInChunk = s + TERM.length - tail.length;
        // content ends at the CR that starts the terminator; anything of it already counted stays counted
        addContent(chunk.subarray(0, Math.max(0, s - tail.length)));
        return endInChunk;
      }
      // The very first content line being "." (empty message) is the seam case with tail = CRLF.
      const i = chunk.indexOf(TERM);
      if (i !== -1) {
        addContent(chunk.subarray(0, i));
        return i + TERM.length;
      }
      addContent(chunk);
      tail =
        chunk.length >= 4
          ? Buffer.from(chunk.subarray(chunk.length - 4))
          : Buffer.concat([tail, chunk]).subarray(-4);
      return -1;
    };

    const command = (line: string): string => {
      const verb = line.slice(0, 4).toUpperCase();
      switch (verb) {
        case 'EHLO':
          return ehlo.toString('latin1');
        case 'HELO':
          return '250 fast-sink\r\n';
        case 'MAIL':
          hasRcpt = false;
          firstRcpt = '';
          return '250 2.1.0 Ok\r\n';
        case 'RCPT': {
          if (!hasRcpt) {
            const m = /<([^>]*)>/.exec(line);
            firstRcpt = m ? m[1] : line.slice(8).trim();
          }
          hasRcpt = true;
          return '250 2.1.5 Ok\r\n';
        }
        case 'DATA':
          if (!hasRcpt) return '503 5.5.1 Error: need RCPT command\r\n';
          inData = true;
          tail = Buffer.from(CRLF);
          return '354 End data with <CR><LF>.<CR><LF>\r\n';
        case 'RSET':
          hasRcpt = false;
          firstRcpt = '';
          return '250 2.0.0 Ok\r\n';
        case 'NOOP':
          return '250 2.0.0 Ok\r\n';
        case 'QUIT':
          return '221 2.0.0 Bye\r\n';
        default:
          return '502 5.5.2 Error: command not recognized\r\n';
      }
    };

    socket.on('data', (chunk: Buffer) => {
      let out = '';
      let buf = chunk;
      let quit = false;
      // bounded: every iteration consumes at least one line or the rest of the chunk
      for (let guard = 0; guard < 100_000 && buf.length > 0; guard++) {
        if (inData) {
          const end = scanData(buf);
          if (end === -1) {
            buf = Buffer.alloc(0);
            break;
          }
          out += finishMessage();
          buf = buf.subarray(end);
          continue;
        }
        cmdBuf = cmdBuf.length ? Buffer.concat([cmdBuf, buf]) : buf;
        buf = Buffer.alloc(0);
        let nl = cmdBuf.indexOf(10);
        while (nl !== -1 && !inData) {
          const line = cmdBuf.subarray(0, nl).toString('latin1').replace(/\r$/, '');
          cmdBuf = cmdBuf.subarray(nl + 1);
          out += command(line);
          if (line.toUpperCase().startsWith('QUIT')) {
            quit = true;
            break;
          }
          nl = cmdBuf.indexOf(10);
        }
        if (quit) break;
        if (inData) {
          buf = cmdBuf;
          cmdBuf = Buffer.alloc(0);
        } else if (cmdBuf.length > 64 * 1024) {
          out += '500 5.5.2 Line too long\r\n';
          quit = true;
          break;
        } else {
          cmdBuf = Buffer.from(cmdBuf); // detach from the big chunk
        }
      }
      if (out) socket.write(out);
      if (quit) socket.end();
    });
    socket.write('220 fast-sink ESMTP\r\n');
  };

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: opts.port ?? 0, host, backlog: 1024 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;

  return {
    port,
    host,
    stats: () => {
      const duplicates: Record<string, number> = {};
      if (stats.duplicateCount) {
        let n = 0;
        for (const [id, c] of counts) {
          if (c > 1 && n++ < 100) duplicates[id] = c;
        }
      }
      return { ...stats, duplicates };
    },
    ids: () => new Map(counts),
    reset() {
      counts = new Map();
      stats = emptyStats();
      stats.connections = sockets.size;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

function emptyStats(): FastSinkStats {
  return { connections: 0, messages: 0, bytes: 0, unique: 0, duplicates: {}, duplicateCount: 0 };
}
