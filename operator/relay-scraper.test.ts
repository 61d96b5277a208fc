// The operator's questions to relays, against real HTTP servers on loopback that behave as a
// compromised relay might: hang, flood, drip, lie in the wrong format, or answer honestly.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../platform/log.ts';
import { OperatorMetrics } from './metrics.ts';
import { boundedGet, RelayScraper } from './relay-scraper.ts';

const HASH = `sha256:${'b'.repeat(64)}`;
const servers: http.Server[] = [];

async function serve(handler: http.RequestListener): Promise<string> {
  const s = http.createServer(handler);
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}/config`;
}

afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

const quietLogger = () => createLogger(() => undefined);

describe('boundedGet', () => {
  it('gives up on a relay that never answers, and on one that drips its answer, at the deadline', async () => {
    const hang = await serve(() => undefined);
    const drip = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const t = setInterval(() => res.write(' '), 50);
      res.on('close', () => clearInterval(t));
    });
    for (const url of [hang, drip]) {
      const started = Date.now();
      await expect(boundedGet(url, 300, 1024)).rejects.toThrow('no answer within 300 ms');
      expect(Date.now() - started).toBeLessThan(2000);
    }
  });

  it('cuts off answers over the size bound (declared or streamed)', async () => {
    const declared = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': String(10 * 1024 * 1024) });
      res.write('x'.repeat(1000));
    });
    const streamed = await serve((_req, res) => {
      res.writeHead(200);
      for (let i = 0; i < 100; i++) res.write('x'.repeat(1024));
      res.end();
    });
    await expect(boundedGet(declared, 2000, 4096)).rejects.toThrow('answer larger than 4096 bytes');
    await expect(boundedGet(streamed, 2000, 4096)).rejects.toThrow('answer larger than 4096 bytes');
  });

  it('names a refused connection', async () => {
    const url = await serve(() => undefined);
    servers[0].close();
    await new Promise((r) => setTimeout(r, 50));
    await expect(boundedGet(url, 1000, 1024)).rejects.toThrow('ECONNREFUSED');
  });
});

describe('RelayScraper', () => {
  it('asks every target, keeps honest answers, records the rest as errors, and never exceeds its concurrency', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const slowHonest = (delayMs: number) => (_req: http.IncomingMessage, res: http.ServerResponse) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      setTimeout(() => {
        inFlight--;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ hash: HASH, generation: 1, loadedAt: null }));
      }, delayMs);
    };
    const targets = [];
    for (let i = 0; i < 6; i++) targets.push({ id: `honest-${i}`, url: await serve(slowHonest(100)) });
    targets.push({ id: 'hang', url: await serve(() => undefined) });
    targets.push({ id: 'junk', url: await serve((_q, res) => res.end('{"hash":"sha1:nope"}')) });
    const metrics = new OperatorMetrics();
    let changes = 0;
    const scraper = new RelayScraper({
      intervalMs: 60_000,
      timeoutMs: 400,
      concurrency: 2,
      onChange: () => changes++,
      metrics,
      logger: quietLogger(),
    });
    try {
      scraper.setTargets(targets);
      const deadline = Date.now() + 10_000;
      while (scraper.scrapes.size < targets.length && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(scraper.scrapes.size).toBe(targets.length);
      for (let i = 0; i < 6; i++) expect(scraper.scrapes.get(`honest-${i}`)?.answer).toEqual({ hash: HASH });
      expect(scraper.scrapes.get('hang')?.answer).toEqual({ error: 'no answer within 400 ms' });
      expect(scraper.scrapes.get('junk')?.answer).toEqual({ error: 'answer has no valid config hash' });
      expect(maxInFlight).toBeLessThanOrEqual(2);
      expect(changes).toBe(targets.length);
      const text = await metrics.registry.metrics();
      expect(text).toContain('mailplus_operator_relay_scrapes_total{result="success"} 6');
      expect(text).toContain('mailplus_operator_relay_scrapes_total{result="error"} 2');
      // a target that goes away takes its answer with it
      scraper.setTargets(targets.slice(0, 1));
      expect([...scraper.scrapes.keys()]).toEqual(['honest-0']);
    } finally {
      scraper.stop();
    }
  }, 20_000);

  it('after a publish, asks quickly until the relay serves the new hash, then only on its interval', async () => {
    let served = `sha256:${'0'.repeat(64)}`;
    let asked = 0;
    const url = await serve((_req, res) => {
      asked++;
      res.end(JSON.stringify({ hash: served }));
    });
    const scraper = new RelayScraper({
      intervalMs: 60_000,
      fastIntervalMs: 50,
      onChange: () => undefined,
      metrics: new OperatorMetrics(),
      logger: quietLogger(),
    });
    try {
      scraper.setTargets([{ id: 'r', url }]);
      while (asked < 1) await new Promise((r) => setTimeout(r, 10));
      await new Promise((r) => setTimeout(r, 300));
      expect(asked, 'steady state: one question per interval').toBe(1);
      scraper.expect(HASH);
      await new Promise((r) => setTimeout(r, 300));
      expect(asked, 'fast questions while the relay lags').toBeGreaterThan(3);
      served = HASH;
      await new Promise((r) => setTimeout(r, 200));
      const settled = asked;
      expect(scraper.scrapes.get('r')?.answer).toEqual({ hash: HASH });
      await new Promise((r) => setTimeout(r, 300));
      expect(asked, 'back to the interval once it serves the new hash').toBe(settled);
    } finally {
      scraper.stop();
    }
  }, 20_000);
});
