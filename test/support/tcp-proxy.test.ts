// The fault-injection proxy against a real echo server on loopback: forwarding, freeze (nothing
// moves, nothing closes) and thaw, freezing new connections too, resets, refusal, counters.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.ts';

interface Client {
  socket: net.Socket;
  received(): string;
  closed: Promise<string>;
  connected: Promise<void>;
}

function connect(port: number): Client {
  const socket = net.connect({ host: '127.0.0.1', port });
  let data = '';
  socket.on('data', (b) => {
    data += b.toString();
  });
  const closed = new Promise<string>((resolve) => {
    let code = 'closed';
    socket.on('error', (e: NodeJS.ErrnoException) => {
      code = e.code ?? e.message;
    });
    socket.on('close', () => resolve(code));
  });
  const connected = new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  return { socket, received: () => data, closed, connected };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, fn: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

describe('tcp-proxy', () => {
  let echo: net.Server;
  let proxy: TcpProxy;
  const clients: Client[] = [];
  const open = (port = proxy.port) => {
    const cl = connect(port);
    clients.push(cl);
    return cl;
  };

  beforeAll(async () => {
    echo = net.createServer((s) => {
      s.on('error', () => {});
      s.pipe(s);
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    proxy = await startTcpProxy({
      target: { host: '127.0.0.1', port: (echo.address() as net.AddressInfo).port },
    });
  });

  afterAll(async () => {
    for (const cl of clients) cl.socket.destroy();
    await proxy?.close();
    await new Promise<void>((r) => echo.close(() => r()));
  });

  it('forwards bytes both ways and counts them', async () => {
    const cl = open();
    cl.socket.write('hello');
    await until('echo', () => cl.received() === 'hello');
    expect(proxy.counters()).toMatchObject({ accepted: 1, active: 1, bytesUp: 5, bytesDown: 5 });
  });

  it('freeze() stops existing connections without closing them; new ones still work; thaw() resumes', async () => {
    const old = open();
    old.socket.write('a');
    await until('echo a', () => old.received() === 'a');
    proxy.freeze();
    old.socket.write('b');
    const fresh = open();
    fresh.socket.write('new');
    await until('a new connection works while others are frozen', () => fresh.received() === 'new');
    await sleep(200);
    expect(old.received(), 'nothing comes back through a frozen connection').toBe('a');
    expect(old.socket.destroyed, 'and it is not closed').toBe(false);
    expect(proxy.counters().frozen).toBeGreaterThanOrEqual(2);
    proxy.thaw();
    await until('held bytes flow after thaw', () => old.received() === 'ab');
    expect(proxy.counters().frozen).toBe(0);
  });

  it('freeze({ newConnections: true }) blackholes new connections too (TCP connects, nothing flows)', async () => {
    proxy.freeze({ newConnections: true });
    const cl = open();
    await cl.connected;
    cl.socket.write('x');
    await sleep(200);
    expect(cl.received()).toBe('');
    proxy.thaw();
    await until('flows after thaw', () => cl.received() === 'x');
  });

  it('resetAll() resets every connection (frozen ones too)', async () => {
    const accepted = proxy.counters().accepted;
    const a = open();
    const b = open();
    await until('both accepted by the proxy', () => proxy.counters().accepted === accepted + 2);
    proxy.freeze();
    const before = proxy.counters().resets;
    proxy.resetAll();
    expect(await a.closed).toBe('ECONNRESET');
    expect(await b.closed).toBe('ECONNRESET');
    expect(proxy.counters()).toMatchObject({ active: 0 });
    expect(proxy.counters().resets).toBeGreaterThanOrEqual(before + 2);
    proxy.thaw();
  });

  it("refuse(true) resets new connections and counts them; mode 'close' gives ECONNREFUSED; refuse(false) restores", async () => {
    await proxy.refuse(true);
    const r = open();
    expect(await r.closed).toBe('ECONNRESET');
    expect(proxy.counters().refused).toBe(1);
    await proxy.refuse(true, { mode: 'close' });
    const port = proxy.port;
    const c = open(port);
    expect(await c.closed).toBe('ECONNREFUSED');
    await proxy.refuse(false);
    expect(proxy.port).toBe(port);
    const ok = open();
    ok.socket.write('back');
    await until('works again', () => ok.received() === 'back');
  });
});
