import net from 'node:net';
import tls from 'node:tls';
import { hashConfig } from '../../../contract/config/hash.ts';
import type { RelayConfig, Route, Tenant } from '../../../contract/config/types.gen.ts';
import { ReplyParser, type SmtpReply } from '../../upstream/reply.ts';

/** Test-only helpers: relay configs with a valid hash, and a raw SMTP client for protocol edge cases. */

export function upstreamOf(port: number, host = '127.0.0.1') {
  return { host, port, tls: 'none' as const, verify: false };
}

export function forward(
  name: string,
  recipients: string[],
  ports: number[],
  extra: Partial<Route> = {},
): Route {
  return {
    name,
    priority: 100,
    recipients,
    senders: [],
    action: { forward: { upstreams: ports.map((p) => upstreamOf(p)) } },
    ...extra,
  };
}

export function reject(
  name: string,
  recipients: string[],
  code: number,
  enhancedCode: string,
  message: string,
): Route {
  return {
    name,
    priority: 100,
    recipients,
    senders: [],
    action: { reject: { code, enhancedCode, message } },
  };
}

export function tenant(
  name: string,
  domains: string[],
  routes: Route[],
  extra: Partial<Tenant> = {},
): Tenant {
  return { name, domains, clientCIDRs: [], requireTLS: false, limits: {}, routes, ...extra };
}

export function relayConfig(tenants: Tenant[]): RelayConfig {
  const body = { apiVersion: 'relay.mailplus.io/v1alpha1' as const, kind: 'RelayConfig' as const, tenants };
  return { ...body, hash: hashConfig(body) };
}

export class RawClient {
  readonly socket: net.Socket;
  private readonly parser = new ReplyParser();
  private readonly queue: SmtpReply[] = [];
  private waiters: Array<(r: SmtpReply | undefined) => void> = [];
  private ended = false;
  readonly closed: Promise<void>;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      for (const r of this.parser.push(chunk)) {
        const w = this.waiters.shift();
        if (w) w(r);
        else this.queue.push(r);
      }
    });
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.ended = true;
        for (const w of this.waiters.splice(0)) w(undefined);
        resolve();
      });
    });
    socket.on('error', () => {});
  }

  static connect(port: number, opts: { host?: string; prefix?: Buffer } = {}): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host: opts.host ?? '127.0.0.1' }, () => {
        if (opts.prefix) socket.write(opts.prefix);
        resolve(new RawClient(socket));
      });
      socket.once('error', reject);
    });
  }

  /** The next reply; undefined if the connection closed first. */
  read(timeoutMs = 5000): Promise<SmtpReply | undefined> {
    const r = this.queue.shift();
    if (r) return Promise.resolve(r);
    if (this.ended) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('RawClient: no reply in time')), timeoutMs);
      this.waiters.push((x) => {
        clearTimeout(timer);
        resolve(x);
      });
    });
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  async cmd(line: string): Promise<SmtpReply | undefined> {
    this.write(`${line}\r\n`);
    return this.read();
  }

  close(): void {
    this.socket.destroy();
  }

  /** After a 220 to STARTTLS: handshake over the same socket, returns the client for the TLS session. */
  startTls(opts: tls.ConnectionOptions = {}): Promise<RawClient> {
    this.socket.removeAllListeners('data');
    return new Promise((resolve, reject) => {
      const t = tls.connect({ socket: this.socket, rejectUnauthorized: false, ...opts }, () =>
        resolve(new RawClient(t)),
      );
      t.once('error', reject);
    });
  }

  /** Greeting + EHLO. */
  async hello(name = 'client.test'): Promise<SmtpReply | undefined> {
    await this.read();
    return this.cmd(`EHLO ${name}`);
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Splits the relay's Received header (the first field, with its continuation lines) off delivered content. */
export function splitReceived(data: Buffer): { received: string; rest: Buffer } {
  const text = data.toString('latin1');
  if (!text.startsWith('Received: ')) return { received: '', rest: data };
  let end = text.indexOf('\r\n') + 2;
  while (text[end] === '\t' || text[end] === ' ') end = text.indexOf('\r\n', end) + 2;
  return { received: text.slice(0, end), rest: data.subarray(end) };
}
