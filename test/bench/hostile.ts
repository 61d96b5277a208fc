// Hostile clients for the relay benchmark's abuse cell, all from one loopback address that is not
// the load generator's (Linux routes all of 127.0.0.0/8 to lo):
//  - idle holders: MAIL + RCPT to a served domain (the relay opens an upstream connection for it),
//    then NOOP every second to keep the session alive; reconnect whenever the relay closes them;
//  - junk senders: MAIL + 1,000 pipelined RCPTs to domains nobody serves, RSET, again; reconnect
//    when the relay closes them.
// Bounded: every client stops when stop() is called, and each loop has a hard iteration cap.
import { connect, type Socket } from 'node:net';

export interface HostileOptions {
  port: number;
  from: string;
  holders: number;
  junk: number;
  rcptsPerJunkTransaction: number;
  /** Served domain the holders' RCPTs go to (the relay opens an upstream connection for them). */
  servedDomain: string;
}

export interface HostileStats {
  /** Holder RCPTs answered 250 (each one an upstream connection taken). */
  holdsTaken: number;
  /** Holder RCPTs refused, by reply (e.g. "450 4.7.1 Error: too much mail"). */
  holdsRefused: Record<string, number>;
  /** Junk RCPTs sent and answered. */
  junkRcpts: number;
  junkTransactions: number;
  /** Connection refusals before or instead of the greeting, and closes by the relay, by reply ('421 4.4.2'...). */
  closedBy: Record<string, number>;
  connections: number;
}

const inc = (m: Record<string, number>, k: string) => {
  m[k] = (m[k] ?? 0) + 1;
};

/** A line-based SMTP reader: final reply lines only. */
class Conn {
  private buf = '';
  private lines: string[] = [];
  private waiting: ((l: string | undefined) => void) | undefined;
  closed = false;
  readonly sock: Socket;

  constructor(sock: Socket) {
    this.sock = sock;
    sock.setNoDelay(true);
    sock.on('data', (d: Buffer) => {
      this.buf += d.toString('latin1');
      for (let i = this.buf.indexOf('\n'); i !== -1; i = this.buf.indexOf('\n')) {
        const line = this.buf.slice(0, i).replace(/\r$/, '');
        this.buf = this.buf.slice(i + 1);
        if (line[3] !== '-') this.lines.push(line);
      }
      this.wake();
    });
    const end = () => {
      this.closed = true;
      this.wake();
    };
    sock.on('close', end);
    sock.on('error', end);
  }

  private wake() {
    if (!this.waiting) return;
    if (this.lines.length || this.closed) {
      const w = this.waiting;
      this.waiting = undefined;
      w(this.lines.shift());
    }
  }

  /** Next final reply line; undefined when closed; bounded by timeoutMs. */
  reply(timeoutMs = 30_000): Promise<string | undefined> {
    if (this.lines.length) return Promise.resolve(this.lines.shift());
    if (this.closed) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.waiting = undefined;
        resolve(undefined);
      }, timeoutMs);
      this.waiting = (l) => {
        clearTimeout(t);
        resolve(l);
      };
    });
  }

  write(s: string) {
    if (!this.closed) this.sock.write(s);
  }

  destroy() {
    this.sock.destroy();
  }
}

function open(port: number, from: string): Promise<Conn | undefined> {
  return new Promise((resolve) => {
    const sock = connect({ port, host: '127.0.0.1', localAddress: from });
    sock.once('connect', () => resolve(new Conn(sock)));
    sock.once('error', () => resolve(undefined));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** A reply without host names and addresses, e.g. '421 4.7.0 Error: too many connections'. */
const codeOf = (line: string) =>
  line
    .replace(/^(\d{3} [245]\.\d+\.\d+) \S+ Error:/, '$1 Error:')
    .replace(/ from \S+$/, '')
    .slice(0, 70);

export function startHostile(o: HostileOptions): { stop(): Promise<HostileStats> } {
  const stats: HostileStats = {
    holdsTaken: 0,
    holdsRefused: {},
    junkRcpts: 0,
    junkTransactions: 0,
    closedBy: {},
    connections: 0,
  };
  let stopped = false;
  const live = new Set<Conn>();

  /** Greeting + EHLO; false when the relay refused or closed (counted). */
  async function session(): Promise<Conn | undefined> {
    const c = await open(o.port, o.from);
    if (!c) return undefined;
    stats.connections++;
    live.add(c);
    const greeting = await c.reply();
    if (!greeting?.startsWith('220')) {
      if (greeting) inc(stats.closedBy, codeOf(greeting));
      c.destroy();
      live.delete(c);
      return undefined;
    }
    c.write('EHLO hostile.test\r\n');
    if (!(await c.reply())?.startsWith('250')) {
      c.destroy();
      live.delete(c);
      return undefined;
    }
    return c;
  }

  /** The relay's last words on a closing session. */
  async function closing(c: Conn, last: string | undefined) {
    if (last?.startsWith('421')) inc(stats.closedBy, codeOf(last));
    c.destroy();
    live.delete(c);
  }

  async function holder(n: number) {
    for (let round = 0; round < 10_000 && !stopped; round++) {
      const c = await session();
      if (!c) {
        await sleep(1000);
        continue;
      }
      c.write(`MAIL FROM:<idle${n}@hostile.test>\r\nRCPT TO:<held${n}-${round}@${o.servedDomain}>\r\n`);
      await c.reply();
      const rcpt = await c.reply();
      if (rcpt?.startsWith('250')) stats.holdsTaken++;
      else if (rcpt && !rcpt.startsWith('421')) inc(stats.holdsRefused, codeOf(rcpt));
      let last = rcpt;
      while (!stopped && !c.closed && !last?.startsWith('421')) {
        await sleep(1000);
        c.write('NOOP\r\n');
        last = await c.reply();
      }
      await closing(c, last);
    }
  }

  async function junk(n: number) {
    const rcpts = Array.from(
      { length: o.rcptsPerJunkTransaction },
      (_, i) => `RCPT TO:<u${i}@junk${n}-${i % 13}.invalid>\r\n`,
    ).join('');
    for (let round = 0; round < 10_000 && !stopped; round++) {
      const c = await session();
      if (!c) {
        await sleep(1000);
        continue;
      }
      let last: string | undefined = '250';
      while (!stopped && !c.closed && !last?.startsWith('421')) {
        c.write(`MAIL FROM:<junk${n}@hostile.test>\r\n${rcpts}RSET\r\n`);
        for (let i = 0; i < o.rcptsPerJunkTransaction + 2; i++) {
          last = await c.reply();
          if (last === undefined || last.startsWith('421')) break;
          if (i > 0 && i <= o.rcptsPerJunkTransaction) stats.junkRcpts++;
        }
        if (last?.startsWith('250')) stats.junkTransactions++;
      }
      await closing(c, last);
    }
  }

  const runs = [
    ...Array.from({ length: o.holders }, (_, i) => holder(i)),
    ...Array.from({ length: o.junk }, (_, i) => junk(i)),
  ];
  return {
    async stop() {
      stopped = true;
      for (const c of live) c.write('QUIT\r\n');
      await Promise.race([Promise.all(runs), sleep(5000)]);
      for (const c of live) c.destroy();
      return stats;
    },
  };
}
