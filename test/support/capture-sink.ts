// An upstream MTA for integration tests: records every message it accepts (envelope,
// exact content as received, TLS state) and misbehaves on request (per-recipient replies,
// delays, dropping the connection mid-DATA, refusing connections).
// Built on smtp-server, which delays its greeting by 100 ms (not configurable) and un-stuffs
// dot lines: `data` is the content as an upstream MTA sees it.
import type { AddressInfo, Server, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { SMTPServer, type SMTPServerAddress, type SMTPServerSession } from 'smtp-server';
import { freePort } from './processes.ts';

export interface Reply {
  code: number;
  /** Text after the code, e.g. '5.1.1 no such user'. */
  message: string;
}

export type Phase = 'connect' | 'mailFrom' | 'rcptTo' | 'data';

export interface SinkBehaviour {
  /** Reply per recipient address (lower-cased match); others get 250. */
  rcpt?: Record<string, Reply>;
  /** Reply to MAIL FROM (instead of 250). */
  mailFrom?: Reply;
  /** Final reply after DATA (instead of 250). */
  data?: Reply;
  /** Milliseconds to wait before replying in each phase ('connect' delays the greeting further). */
  delayMs?: Partial<Record<Phase, number>>;
  /** At the final dot, call `reached` and hold the final reply until `release` settles. */
  holdData?: { reached(): void; release: Promise<unknown> };
  /** Destroy the connection once this many bytes of DATA content have arrived. */
  dropAfterDataBytes?: number;
  /** Nothing listens on the returned port (connections are refused). */
  refuse?: boolean;
}

export interface SinkTlsOptions {
  key: string;
  cert: string;
  /** Implicit TLS (TLS from the first byte, "SMTPS"); otherwise STARTTLS is offered. */
  implicit?: boolean;
  /** Ask for a client certificate and verify it against this CA (it stays optional). */
  requestCert?: boolean;
  ca?: string;
}

export interface CapturedMessage {
  /** Envelope sender ('' for the null sender <>). */
  mailFrom: string;
  rcptTo: string[];
  /** Content exactly as received (after dot un-stuffing), without the terminating dot line. */
  data: Buffer;
  /** The EHLO/HELO name the client gave. */
  heloName: string;
  tls: { secure: boolean; protocol?: string; cipher?: string; servername?: string; clientCertCN?: string };
  remoteAddress: string;
  receivedAt: number;
}

export interface CaptureSink {
  port: number;
  host: string;
  messages: CapturedMessage[];
  /** Number of connections accepted so far (including dropped ones). */
  connections(): number;
  waitForMessages(n: number, timeoutMs?: number): Promise<CapturedMessage[]>;
  /** Forgets the recorded messages and counters; behaviour stays unless given. */
  reset(behaviour?: SinkBehaviour): void;
  close(): Promise<void>;
}

export interface CaptureSinkOptions {
  /** Defaults to 0 (an ephemeral port). */
  port?: number;
  host?: string;
  tls?: SinkTlsOptions;
  behaviour?: SinkBehaviour;
  /** SIZE announced in EHLO (bytes); 0 = no limit. Default 64 MiB. */
  size?: number;
}

const sleep = (ms: number | undefined): Promise<void> =>
  ms ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve();

function replyError(r: Reply): Error {
  const err = new Error(r.message) as Error & { responseCode: number };
  err.responseCode = r.code;
  return err;
}

const addr = (a: SMTPServerAddress | false): string => (a ? a.address : '');

export async function startCaptureSink(opts: CaptureSinkOptions = {}): Promise<CaptureSink> {
  const host = opts.host ?? '127.0.0.1';
  let behaviour: SinkBehaviour = opts.behaviour ?? {};
  const messages: CapturedMessage[] = [];
  let connectionCount = 0;
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const w of waiters) w();
  };

  const waitForMessages = (n: number, timeoutMs = 5000): Promise<CapturedMessage[]> =>
    new Promise((resolve, reject) => {
      const check = () => {
        if (messages.length < n) return;
        waiters.delete(check);
        clearTimeout(timer);
        resolve(messages.slice());
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(
          new Error(`capture sink: expected ${n} message(s) within ${timeoutMs} ms, got ${messages.length}`),
        );
      }, timeoutMs);
      waiters.add(check);
      check();
    });

  if (behaviour.refuse || opts.behaviour?.refuse) {
    const port = opts.port || (await freePort(host));
    return {
      port,
      host,
      messages,
      connections: () => 0,
      waitForMessages,
      reset: (b) => {
        messages.length = 0;
        if (b) behaviour = b;
      },
      close: async () => {},
    };
  }

  // The raw sockets, to drop a connection mid-DATA: keyed by the client's address:port.
  const sockets = new Map<string, Socket>();
  const tls = opts.tls;
  const server = new SMTPServer({
    // not this host's name, which a relay started without --hostname uses too (a loop to it)
    name: 'capture-sink.localhost',
    secure: tls?.implicit ?? false,
    key: tls?.key,
    cert: tls?.cert,
    ca: tls?.ca,
    requestCert: tls?.requestCert ?? false,
    rejectUnauthorized: false,
    disabledCommands: tls ? ['AUTH'] : ['AUTH', 'STARTTLS'],
    authOptional: true,
    disableReverseLookup: true,
    banner: 'capture-sink',
    size: opts.size ?? 64 * 1024 * 1024,
    logger: false,
    onConnect(_session, cb) {
      connectionCount++;
      sleep(behaviour.delayMs?.connect).then(() => cb());
    },
    onMailFrom(_address, _session, cb) {
      const b = behaviour;
      sleep(b.delayMs?.mailFrom).then(() =>
        cb(b.mailFrom && b.mailFrom.code >= 400 ? replyError(b.mailFrom) : null),
      );
    },
    onRcptTo(address, _session, cb) {
      const b = behaviour;
      const r = b.rcpt?.[address.address.toLowerCase()];
      sleep(b.delayMs?.rcptTo).then(() => cb(r && r.code >= 400 ? replyError(r) : null));
    },
    onData(stream, session, cb) {
      const b = behaviour;
      const chunks: Buffer[] = [];
      let bytes = 0;
      let dropped = false;
      stream.on('data', (chunk: Buffer) => {
        if (dropped) return;
        chunks.push(chunk);
        bytes += chunk.length;
        if (b.dropAfterDataBytes !== undefined && bytes >= b.dropAfterDataBytes) {
          dropped = true;
          sockets.get(`${session.remoteAddress}:${session.remotePort}`)?.destroy();
        }
      });
      stream.on('end', () => {
        if (dropped) return;
        const rec = record(session, Buffer.concat(chunks));
        b.holdData?.reached();
        Promise.all([sleep(b.delayMs?.data), b.holdData?.release]).then(() => {
          if (b.data && b.data.code >= 400) return cb(replyError(b.data));
          messages.push(rec);
          notify();
          cb(null, b.data?.message ?? 'capture-sink: queued');
        });
      });
    },
  });

  const record = (session: SMTPServerSession, data: Buffer): CapturedMessage => {
    const cipher = session.tlsOptions || undefined;
    let clientCertCN: string | undefined;
    // After STARTTLS smtp-server replaces its socket; the peer certificate is on the TLS one.
    const conns = (server as unknown as { connections?: Set<{ _socket?: TLSSocket }> }).connections ?? [];
    const conn = [...conns].find((c) => c._socket?.remotePort === session.remotePort);
    if (session.secure && conn?._socket?.getPeerCertificate) {
      const cn = conn._socket.getPeerCertificate()?.subject?.CN;
      clientCertCN = (Array.isArray(cn) ? cn[0] : cn) || undefined;
    }
    return {
      mailFrom: addr(session.envelope.mailFrom),
      rcptTo: session.envelope.rcptTo.map((r) => r.address),
      data,
      heloName: session.hostNameAppearsAs,
      tls: {
        secure: session.secure,
        protocol: cipher ? cipher.version : undefined,
        cipher: cipher ? cipher.name : undefined,
        servername: (session as SMTPServerSession & { servername?: string }).servername,
        clientCertCN,
      },
      remoteAddress: session.remoteAddress,
      receivedAt: Date.now(),
    };
  };

  server.on('error', () => {
    // Client resets (e.g. our own dropped connections) surface here; they are not test failures.
  });
  // smtp-server keeps its net/tls server at `.server`.
  const netServer = (server as unknown as { server: Server }).server;
  const trackSocket = (socket: Socket) => {
    const key = `${socket.remoteAddress}:${socket.remotePort}`;
    sockets.set(key, socket);
    socket.once('close', () => sockets.delete(key));
  };
  netServer.on(tls?.implicit ? 'secureConnection' : 'connection', trackSocket);

  await new Promise<void>((resolve, reject) => {
    netServer.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      netServer.off('error', reject);
      resolve();
    });
  });
  const port = (netServer.address() as AddressInfo).port;

  return {
    port,
    host,
    messages,
    connections: () => connectionCount,
    waitForMessages,
    reset(b) {
      messages.length = 0;
      connectionCount = 0;
      if (b) behaviour = b;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets.values()) s.destroy();
        server.close(() => resolve());
      }),
  };
}
