// A loopback TCP proxy for fault injection between a client and a real server (the API server in
// test/operator/watch-stall.test.ts). Bytes pass through unchanged (TLS included), and the test can:
// - freeze(): stop forwarding in both directions on the open connections WITHOUT closing them, the
//   way a half-open / blackholed connection behaves (the client's writes still succeed locally,
//   nothing ever comes back, no FIN, no RST); `{ newConnections: true }` freezes the ones accepted
//   from now on too (a full blackhole);
// - thaw(): forward again (connections frozen by freeze() and new ones);
// - resetAll(): destroy every connection with a TCP RST on both sides;
// - refuse(true): new connections fail, either reset right after accept ('reset', the default:
//   every attempt is counted) or with ECONNREFUSED because nothing listens any more ('close');
// - counters: accepted / active / refused / resets and bytes each way.
import net from 'node:net';

export interface TcpProxyOptions {
  /** Where to forward to. */
  target: { host: string; port: number };
  /** Port to listen on (127.0.0.1); 0 = any free port. */
  port?: number;
}

export interface FreezeOptions {
  /** Also freeze connections accepted from now on (default false: new connections work). */
  newConnections?: boolean;
}

export interface RefuseOptions {
  /**
   * 'reset' (default): accept, then RST at once (the client sees ECONNRESET; attempts are counted
   * in `refused`). 'close': stop listening (the client sees ECONNREFUSED; nothing is counted).
   */
  mode?: 'reset' | 'close';
}

export interface ProxyCounters {
  /** Connections accepted and forwarded (refused ones not included). */
  accepted: number;
  /** Connections currently open (frozen ones included). */
  active: number;
  /** Connections currently frozen. */
  frozen: number;
  /** Attempts refused in 'reset' mode. */
  refused: number;
  /** Connections destroyed by resetAll(). */
  resets: number;
  /** Client → server bytes forwarded. */
  bytesUp: number;
  /** Server → client bytes forwarded. */
  bytesDown: number;
}

interface Conn {
  client: net.Socket;
  server: net.Socket;
  frozen: boolean;
  closed: boolean;
}

export interface TcpProxy {
  readonly port: number;
  /** `${host}:${port}` of the proxy. */
  readonly address: string;
  freeze(opts?: FreezeOptions): void;
  thaw(): void;
  resetAll(): void;
  refuse(on: boolean, opts?: RefuseOptions): Promise<void>;
  counters(): ProxyCounters;
  close(): Promise<void>;
}

export async function startTcpProxy(opts: TcpProxyOptions): Promise<TcpProxy> {
  const conns = new Set<Conn>();
  const c: Omit<ProxyCounters, 'active' | 'frozen'> = {
    accepted: 0,
    refused: 0,
    resets: 0,
    bytesUp: 0,
    bytesDown: 0,
  };
  let freezeNew = false;
  let refusing: 'reset' | 'close' | undefined;
  let closed = false;
  let port = opts.port ?? 0;

  const drop = (conn: Conn) => {
    if (conn.closed) return;
    conn.closed = true;
    conns.delete(conn);
    conn.client.destroy();
    conn.server.destroy();
  };

  /** Forward from → to, pausing on back-pressure and while frozen. */
  const pipe = (conn: Conn, from: net.Socket, to: net.Socket, up: boolean) => {
    from.on('data', (chunk: Buffer) => {
      if (up) c.bytesUp += chunk.length;
      else c.bytesDown += chunk.length;
      if (!to.write(chunk)) from.pause();
    });
    to.on('drain', () => {
      if (!conn.frozen) from.resume();
    });
    from.on('end', () => to.end());
  };

  const setFrozen = (conn: Conn, frozen: boolean) => {
    conn.frozen = frozen;
    // a paused socket is not read: its bytes stay in the kernel (TCP flow control does the rest),
    // and neither its data nor its FIN reaches the other side
    for (const s of [conn.client, conn.server]) {
      if (frozen) s.pause();
      else s.resume();
    }
  };

  const onConnection = (client: net.Socket) => {
    if (refusing === 'reset' || closed) {
      c.refused++;
      client.resetAndDestroy();
      return;
    }
    c.accepted++;
    const server = net.connect({ host: opts.target.host, port: opts.target.port });
    const conn: Conn = { client, server, frozen: false, closed: false };
    conns.add(conn);
    client.setNoDelay(true);
    server.setNoDelay(true);
    pipe(conn, client, server, true);
    pipe(conn, server, client, false);
    if (freezeNew) setFrozen(conn, true);
    // one side gone for good (error, or both directions ended): close the other
    for (const s of [client, server]) {
      s.on('error', () => {
        const other = s === client ? server : client;
        if (!other.destroyed) other.resetAndDestroy();
        drop(conn);
      });
      s.on('close', () => drop(conn));
    }
  };

  let listener = net.createServer({ pauseOnConnect: false }, onConnection);
  const listen = (srv: net.Server) =>
    new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, '127.0.0.1', () => {
        srv.off('error', reject);
        port = (srv.address() as net.AddressInfo).port;
        resolve();
      });
    });
  const stopListening = (srv: net.Server) =>
    new Promise<void>((resolve) => {
      // close() stops accepting at once; its callback waits for open connections, so don't wait
      srv.close();
      setImmediate(resolve);
    });
  await listen(listener);

  return {
    get port() {
      return port;
    },
    get address() {
      return `127.0.0.1:${port}`;
    },
    freeze(fo: FreezeOptions = {}) {
      freezeNew = !!fo.newConnections;
      for (const conn of conns) setFrozen(conn, true);
    },
    thaw() {
      freezeNew = false;
      for (const conn of conns) setFrozen(conn, false);
    },
    resetAll() {
      for (const conn of [...conns]) {
        c.resets++;
        conn.closed = true;
        conns.delete(conn);
        conn.client.resetAndDestroy();
        conn.server.resetAndDestroy();
      }
    },
    async refuse(on: boolean, ro: RefuseOptions = {}) {
      const mode = on ? (ro.mode ?? 'reset') : undefined;
      if (mode === refusing) return;
      if (refusing === 'close') {
        // listen again on the same port (loopback; nobody else is expected to grab it meanwhile)
        listener = net.createServer(onConnection);
        await listen(listener);
      }
      refusing = mode;
      if (mode === 'close') await stopListening(listener);
    },
    counters() {
      let frozen = 0;
      for (const conn of conns) if (conn.frozen) frozen++;
      return { ...c, active: conns.size, frozen };
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const conn of [...conns]) {
        conn.closed = true;
        conns.delete(conn);
        conn.client.destroy();
        conn.server.destroy();
      }
      if (refusing !== 'close') {
        await new Promise<void>((resolve) => listener.close(() => resolve()));
      }
    },
  };
}
