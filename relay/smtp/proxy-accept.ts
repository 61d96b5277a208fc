import type net from 'node:net';
import { type ProxyHeader, parseProxyHeader } from './proxy-protocol.ts';

export type ProxyReadResult =
  | { ok: true; header: ProxyHeader }
  | { ok: false; reason: 'timeout' | 'closed' | 'error'; detail: string };

/**
 * Reads a PROXY header off a freshly accepted socket from a trusted proxy. Bytes after the header
 * (a client that talks early, or an eager proxy) are unshifted back into the socket for the SMTP
 * session. The socket is left paused; whoever takes it over resumes it (pipe does).
 */
export function readProxyHeader(socket: net.Socket, timeoutMs: number): Promise<ProxyReadResult> {
  return new Promise((resolve) => {
    let buf: Buffer = Buffer.alloc(0);
    let settled = false;
    const finish = (r: ProxyReadResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('error', onClose);
      socket.pause();
      resolve(r);
    };
    const onData = (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      const r = parseProxyHeader(buf);
      if (r.status === 'incomplete') return;
      if (r.status === 'error') return finish({ ok: false, reason: 'error', detail: r.reason });
      const rest = buf.subarray(r.length);
      finish({ ok: true, header: r.header });
      if (rest.length) socket.unshift(rest);
    };
    const onClose = () =>
      finish({ ok: false, reason: 'closed', detail: 'connection closed before the PROXY header' });
    const timer = setTimeout(
      () => finish({ ok: false, reason: 'timeout', detail: `no PROXY header within ${timeoutMs} ms` }),
      timeoutMs,
    );
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.once('error', onClose);
  });
}
