// The relay's listening socket: every connection passes here before smtp-server sees it. While
// draining it gets 421; from a trusted proxy its PROXY header is read first (the client address
// it names counts from then on); then the per-client and per-network connection limits, the
// relay-wide DNS blocklists, and the hand-over to the SMTP server.
import net from 'node:net';
import type { Logger } from '../platform/log.ts';
import type { RelayMetrics } from './observability/metrics.ts';
import { cidrMatcher } from './smtp/cidr.ts';
import type { ConnectionLimiter } from './smtp/fairness.ts';
import { readProxyHeader } from './smtp/proxy-accept.ts';
import { FAIRNESS_REPLY, SESSION_REPLY } from './smtp/replies.ts';
import type { RelaySmtpServer } from './smtp/smtp-server-overrides.ts';

type Remote = { address: string; port: number };

export interface FrontDeps {
  smtp: RelaySmtpServer;
  hostname: string;
  metrics: RelayMetrics;
  logger: Logger;
  connectionLimiter: ConnectionLimiter;
  /** CIDRs whose connections start with a PROXY header. */
  trustedProxies: string[];
  proxyHeaderTimeoutMs: number;
  /** The relay-wide DNSBL check before the greeting (false: refused and answered already). */
  connectGate?: (socket: net.Socket, client: string) => Promise<boolean>;
  isDraining(): boolean;
}

export class ConnectionFront {
  readonly server: net.Server;
  private readonly deps: FrontDeps;
  private readonly trusted: (ip: string | undefined) => boolean;
  /** Refusals by a connection limit are logged once a second at most, with a count. */
  private refusalLoggedAt = 0;
  private refusalsUnlogged = 0;

  constructor(deps: FrontDeps) {
    this.deps = deps;
    this.trusted = cidrMatcher(deps.trustedProxies);
    this.server = net.createServer((socket) => this.accept(socket));
  }

  private accept(socket: net.Socket): void {
    socket.on('error', () => {
      // a reset before the session starts; smtp-server handles errors after the hand-over
    });
    if (this.deps.isDraining()) {
      socket.end(`421 ${SESSION_REPLY.draining}\r\n`);
      return;
    }
    if (!this.trusted(socket.remoteAddress)) {
      this.handOver(socket);
      return;
    }
    readProxyHeader(socket, this.deps.proxyHeaderTimeoutMs).then((r) => {
      const m = this.deps.metrics;
      if (!r.ok) {
        m.proxyProtocolTotal.inc({ result: r.reason === 'timeout' ? 'timeout' : 'error' });
        this.deps.logger.warn('proxy protocol header refused', { reason: r.reason, detail: r.detail });
        socket.destroy();
        return;
      }
      const h = r.header;
      if (h.command === 'LOCAL' || h.family === 'UNKNOWN' || !h.sourceAddress) {
        // health checks of the proxy itself: the connection's own addresses apply
        m.proxyProtocolTotal.inc({ result: 'local' });
        return this.handOver(socket);
      }
      m.proxyProtocolTotal.inc({ result: 'ok' });
      this.handOver(socket, { address: h.sourceAddress, port: h.sourcePort ?? 0 });
    });
  }

  private handOver(socket: net.Socket, remote?: Remote): void {
    const client = remote?.address ?? socket.remoteAddress ?? '';
    const admitted = this.deps.connectionLimiter.admit(client);
    if (!admitted.ok) {
      this.deps.metrics.limitHitsTotal.inc({ limit: admitted.limit });
      this.logRefusal(client, admitted.limit);
      socket.end(`${FAIRNESS_REPLY.tooManyConnections(this.deps.hostname, client)}\r\n`);
      setTimeout(() => socket.destroy(), 5000).unref();
      return;
    }
    socket.once('close', admitted.release);
    const gate = this.deps.connectGate;
    if (!gate) {
      this.startSession(socket, remote);
      return;
    }
    gate(socket, client).then(
      (ok) => {
        if (ok && !socket.destroyed) this.startSession(socket, remote);
      },
      (err: Error) => {
        this.deps.logger.error('dnsbl check failed', { error: err.message });
        if (!socket.destroyed) this.startSession(socket, remote);
      },
    );
  }

  /** One line per second at most: a flood of refused connections must not flood the log too. */
  private logRefusal(client: string, limit: string): void {
    this.refusalsUnlogged++;
    if (Date.now() - this.refusalLoggedAt < 1000) return;
    this.deps.logger.warn('connection refused by a fairness limit', {
      clientIp: client,
      limit,
      refusedSinceLastLine: this.refusalsUnlogged,
    });
    this.refusalLoggedAt = Date.now();
    this.refusalsUnlogged = 0;
  }

  private startSession(socket: net.Socket, remote?: Remote): void {
    this.deps.metrics.sessionsTotal.inc();
    this.deps.metrics.sessionsActive.inc();
    this.deps.smtp.connect(socket, remote ? { remoteAddress: remote.address, remotePort: remote.port } : {});
  }
}
