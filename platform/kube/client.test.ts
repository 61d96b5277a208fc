// The client against a loopback HTTP server that answers as the API server does (JSON, v1 Status
// errors, chunked watch streams); the real API server is the peer of test/operator/*.

import { getEventListeners } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { queryObjects } from 'node:v8';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { apiErrorText, apiStatus, KubeApiError, KubeClient, microTime, PATCH } from './client.ts';
import type { KubeConnection } from './config.ts';

type Handler = (req: IncomingMessage, body: string, res: ServerResponse) => void;

describe('KubeClient', () => {
  let server: Server;
  let handler: Handler;
  let dir: string;
  let base: string;
  const clients: KubeClient[] = [];
  const client = (c: Partial<KubeConnection> = {}) => {
    const k = new KubeClient({ server: base, source: 'test', ...c });
    clients.push(k);
    return k;
  };

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kube-client-'));
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => handler(req, body, res));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterEach(async () => {
    for (const k of clients.splice(0)) k.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  it('sends JSON with the content type asked for and parses the answer', async () => {
    const seen: Array<{ method?: string; url?: string; type?: string; body: string; auth?: string }> = [];
    handler = (req, body, res) => {
      seen.push({
        method: req.method,
        url: req.url,
        type: req.headers['content-type'],
        body,
        auth: req.headers.authorization,
      });
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ kind: 'ConfigMap', metadata: { name: 'x', resourceVersion: '7' } }));
    };
    const k = client({ token: 't0k' });
    const got = await k.request<{ metadata: { resourceVersion: string } }>('PATCH', '/api/v1/x', {
      query: { fieldManager: 'me', force: true, empty: undefined },
      body: { data: { a: 'b' } },
      contentType: PATCH.apply,
    });
    expect(got.metadata.resourceVersion).toBe('7');
    expect(seen).toEqual([
      {
        method: 'PATCH',
        url: '/api/v1/x?fieldManager=me&force=true',
        type: 'application/apply-patch+yaml',
        body: '{"data":{"a":"b"}}',
        auth: 'Bearer t0k',
      },
    ]);
  });

  it('turns an error answer into a KubeApiError with the Status message', async () => {
    handler = (_req, _body, res) => {
      res.statusCode = 422;
      res.end(JSON.stringify({ kind: 'Status', reason: 'Invalid', message: 'spec.x: Invalid value' }));
    };
    const err = await client()
      .get('/apis/x')
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KubeApiError);
    expect(apiStatus(err)).toBe(422);
    expect((err as KubeApiError).reason).toBe('Invalid');
    expect(apiErrorText(err)).toBe('HTTP 422: spec.x: Invalid value');
  });

  it('gives up on a request past its deadline', async () => {
    handler = () => {
      // never answers
    };
    const started = Date.now();
    const err = (await client()
      .get('/slow', { timeoutMs: 300 })
      .catch((e: unknown) => e)) as Error;
    expect(err.name).toBe('TimeoutError');
    expect(err.message).toMatch(/^GET \/slow: no answer from 127\.0\.0\.1:\d+ within 300 ms$/);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it("aborts with the caller's signal, and leaves no signal or listener behind once answered", async () => {
    handler = (_req, _body, res) => {
      res.end('{}');
    };
    const c = client();
    const ctl = new AbortController();
    // live AbortSignals after a full GC: a call's deadline and its link to the caller's signal
    // must not outlive the call by the deadline's 30 s
    const signals = () => queryObjects(AbortSignal, { format: 'count' }) as number;
    await c.get('/warm', { signal: ctl.signal });
    const before = signals();
    for (let i = 0; i < 20; i++) await c.get('/x', { signal: ctl.signal });
    expect(signals() - before).toBeLessThan(5);
    expect(getEventListeners(ctl.signal, 'abort')).toHaveLength(0);
    handler = () => {
      // never answers
    };
    const pending = c.get('/slow', { signal: ctl.signal }).catch((e: unknown) => e);
    setTimeout(() => ctl.abort(new Error('leadership lost')), 50);
    expect(String(await pending)).toMatch(/abort|leadership lost/i);
  });

  it('streams watch events split anywhere across chunks, ERROR events included', async () => {
    handler = (req, _body, res) => {
      expect(req.url).toBe('/api/v1/configmaps?resourceVersion=5&watch=true');
      res.writeHead(200, { 'Content-Type': 'application/json' });
      const text = [
        { type: 'ADDED', object: { metadata: { name: 'a', resourceVersion: '6' } } },
        { type: 'BOOKMARK', object: { metadata: { resourceVersion: '8' } } },
        { type: 'ERROR', object: { kind: 'Status', code: 410, message: 'too old' } },
      ]
        .map((e) => JSON.stringify(e))
        .join('\n');
      // byte by byte for the first event, then the rest without a final newline
      let i = 0;
      const tick = () => {
        if (i < 40) {
          res.write(text.slice(i, i + 1));
          i++;
          setImmediate(tick);
        } else res.end(text.slice(i));
      };
      tick();
    };
    const events: Array<[string, unknown]> = [];
    await client().watch('/api/v1/configmaps', (type, obj) => events.push([type, obj]), {
      query: { resourceVersion: '5' },
    });
    expect(events.map(([t]) => t)).toEqual(['ADDED', 'BOOKMARK', 'ERROR']);
    expect(events[2][1]).toMatchObject({ code: 410 });
  });

  it('rejects a refused watch with its status, and drops a watch that goes silent', async () => {
    handler = (_req, _body, res) => {
      res.statusCode = 410;
      res.end(JSON.stringify({ kind: 'Status', code: 410, message: 'gone' }));
    };
    const refused = await client()
      .watch('/w', () => {})
      .catch((e: unknown) => e);
    expect(apiStatus(refused)).toBe(410);

    handler = (_req, _body, res) => {
      res.writeHead(200);
      res.write('\n');
      // then nothing, connection open
    };
    const started = Date.now();
    const opened: number[] = [];
    const silent = await client()
      .watch('/w', () => {}, { idleMs: 300, onOpen: () => opened.push(1) })
      .catch((e: unknown) => e);
    expect((silent as Error).name).toBe('TimeoutError');
    expect(opened).toEqual([1]);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('requests reuse a pooled connection; a watch always opens its own', async () => {
    let connections = 0;
    server.on('connection', () => connections++);
    handler = (req, _body, res) => {
      if (req.url?.includes('watch=true')) {
        res.writeHead(200);
        res.end(`${JSON.stringify({ type: 'BOOKMARK', object: { metadata: { resourceVersion: '1' } } })}\n`);
        return;
      }
      res.end('{}');
    };
    const k = client();
    await k.get('/a');
    await k.get('/a');
    expect(connections).toBe(1);
    // a pooled connection that went dark would swallow the watch request (firewall drill, e2e)
    await k.watch('/w', () => {});
    expect(connections).toBe(2);
    await k.watch('/w', () => {});
    expect(connections).toBe(3);
  });

  it('re-reads a tokenFile on every request (service-account tokens rotate)', async () => {
    const auths: Array<string | undefined> = [];
    handler = (req, _body, res) => {
      auths.push(req.headers.authorization);
      res.end('{}');
    };
    const file = join(dir, 'token');
    writeFileSync(file, 'first\n');
    const k = client({ tokenFile: file });
    await k.get('/a');
    writeFileSync(file, 'second\n');
    await k.get('/a');
    expect(auths).toEqual(['Bearer first', 'Bearer second']);
  });

  it('runs an exec credential plugin, caches its token, and runs it again after a 401', async () => {
    const counter = join(dir, 'runs');
    const plugin = join(dir, 'plugin.mjs');
    writeFileSync(counter, '0');
    writeFileSync(
      plugin,
      `import { readFileSync, writeFileSync } from 'node:fs';
const n = Number(readFileSync(${JSON.stringify(counter)}, 'utf8')) + 1;
writeFileSync(${JSON.stringify(counter)}, String(n));
const info = JSON.parse(process.env.KUBERNETES_EXEC_INFO);
process.stdout.write(JSON.stringify({ apiVersion: info.apiVersion, kind: 'ExecCredential',
  status: { token: process.env.PREFIX + n, expirationTimestamp: new Date(Date.now() + 3600e3).toISOString() } }));
`,
    );
    const auths: Array<string | undefined> = [];
    let revoked = '';
    handler = (req, _body, res) => {
      auths.push(req.headers.authorization);
      if (req.headers.authorization === revoked) {
        res.statusCode = 401;
        res.end(JSON.stringify({ kind: 'Status', code: 401, message: 'Unauthorized' }));
        return;
      }
      res.end('{}');
    };
    const k = client({
      exec: {
        command: process.execPath,
        args: [plugin],
        env: [{ name: 'PREFIX', value: 'tok-' }],
        apiVersion: 'client.authentication.k8s.io/v1',
      },
    });
    await k.get('/a');
    await k.get('/a');
    revoked = 'Bearer tok-1';
    await k.get('/a');
    expect(auths).toEqual(['Bearer tok-1', 'Bearer tok-1', 'Bearer tok-1', 'Bearer tok-2']);
  });

  it('writes MicroTime with microseconds (the API server refuses milliseconds)', () => {
    expect(microTime(new Date('2026-12-04T10:11:12.345Z'))).toBe('2026-12-04T10:11:12.345000Z');
  });
});
