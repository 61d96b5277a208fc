import type net from 'node:net';
import type { Logger } from '../../platform/log.ts';
import type { DnsblChecker } from './check.ts';
import { DNSBL_REPLY, type DnsblPolicy } from './policy.ts';

/**
 * The relay-wide DNSBL check, before the greeting: a listed client is greeted with
 * `554 5.7.1 Service unavailable; client [IP] blocked using ZONE` and disconnected (RFC 5321 §3.1:
 * 554 is the refusal a server may give instead of 220); with failClosed, a failed lookup gets
 * `421 4.7.1` (come back later). Resolves true when the session may start.
 */
export function dnsblConnectGate(
  checker: DnsblChecker,
  policy: DnsblPolicy,
  logger: Logger,
): (socket: net.Socket, ip: string | undefined) => Promise<boolean> {
  return async (socket, ip) => {
    if (!ip) return true;
    const v = await checker.check(ip, policy, 'relay');
    if (socket.destroyed) return false;
    if (v.verdict === 'reject') {
      logger.info('client refused at connect: DNS blocklist', {
        client: ip,
        zone: v.zone,
        score: v.score,
        listedBy: v.listedBy,
      });
      socket.end(`554 ${DNSBL_REPLY.listed(ip, v.zone)}\r\n`);
      return false;
    }
    if (v.verdict === 'tempfail') {
      logger.warn('client deferred at connect: DNS blocklist lookup failed', {
        client: ip,
        failed: v.failed,
      });
      socket.end(`421 ${DNSBL_REPLY.tempfail(ip)}\r\n`);
      return false;
    }
    if (v.verdict === 'failed_open') {
      logger.warn('DNS blocklist lookup failed, client let through (fail open)', {
        client: ip,
        failed: v.failed,
      });
    }
    return true;
  };
}
