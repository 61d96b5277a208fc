// The I/O half of relay reports: asks every live relay pod which config it serves (GET /config on
// its admin port), on a steady interval and, after a publish, quickly until each relay serves the
// new hash. Relays are internet-facing and may be compromised: every request has a hard deadline
// (also against an answer dripping in byte by byte), a bounded answer size, at most one request
// per relay at a time and a bounded number in flight overall, so a relay that hangs or floods
// cannot slow the operator or the other relays' reports.
import type { Logger } from '../platform/log.ts';
import { http } from '../platform/node-http.ts';
import type { OperatorMetrics } from './metrics.ts';
import { type ConfigAnswer, parseConfigAnswer, type RelayTarget, type Scrape } from './relay-reports.ts';

export interface RelayScraperOptions {
  /** Steady interval between two questions to one relay (default 10 s). */
  intervalMs?: number;
  /** After a publish: interval while a relay does not serve the new hash yet (default 250 ms)... */
  fastIntervalMs?: number;
  /** ...for at most this long (default 30 s). */
  fastForMs?: number;
  /** Hard deadline of one request, connect to last byte (default 2 s). */
  timeoutMs?: number;
  /** Larger answers are cut off and count as errors (default 64 KiB; a real one is ~150 bytes). */
  maxBytes?: number;
  /** Requests in flight at once, over all relays (default 8). */
  concurrency?: number;
  /** A relay's report changed (hash or reachability): re-evaluate Programmed. */
  onChange(): void;
  metrics: OperatorMetrics;
  logger: Logger;
}

interface Fetched {
  status: number;
  body: string;
}

/** GET with a hard deadline and a size bound; rejects with a short reason. */
export function boundedGet(url: string, timeoutMs: number, maxBytes: number): Promise<Fetched> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { accept: 'application/json' }, agent: false }, (res) => {
      const declared = Number(res.headers['content-length']);
      if (Number.isFinite(declared) && declared > maxBytes) {
        req.destroy(new Error(`answer larger than ${maxBytes} bytes`));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > maxBytes) {
          req.destroy(new Error(`answer larger than ${maxBytes} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
      );
      res.on('error', reject);
    });
    const deadline = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    req.on('error', (err: NodeJS.ErrnoException) => reject(new Error(err.code ?? err.message)));
    req.on('close', () => clearTimeout(deadline));
  });
}

const sameAnswer = (a: ConfigAnswer | undefined, b: ConfigAnswer): boolean =>
  a !== undefined && JSON.stringify(a) === JSON.stringify(b);

export class RelayScraper {
  private readonly o: Required<Omit<RelayScraperOptions, 'onChange' | 'metrics' | 'logger'>> &
    RelayScraperOptions;
  private targets: RelayTarget[] = [];
  private readonly results = new Map<string, Scrape>();
  private readonly inFlight = new Set<string>();
  private running = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** After a publish: the hash relays should reach, and until when to ask quickly. */
  private want: { hash: string; until: number } | undefined;

  constructor(opts: RelayScraperOptions) {
    this.o = {
      intervalMs: 10_000,
      fastIntervalMs: 250,
      fastForMs: 30_000,
      timeoutMs: 2_000,
      maxBytes: 64 * 1024,
      concurrency: 8,
      ...opts,
    };
  }

  /** The latest answer of each relay, by pod name. */
  get scrapes(): ReadonlyMap<string, Scrape> {
    return this.results;
  }

  /** Answers older than this no longer count (three missed intervals). */
  get maxAgeMs(): number {
    return 3 * this.o.intervalMs + this.o.timeoutMs;
  }

  /** The live relays now; new ones (or ones with a new address) are asked at once. */
  setTargets(targets: RelayTarget[]): void {
    this.targets = targets;
    const ids = new Set(targets.map((t) => t.id));
    for (const id of this.results.keys()) if (!ids.has(id)) this.results.delete(id);
    this.pump();
  }

  /** A config with this hash was just published: ask relays quickly until they serve it. */
  expect(hash: string): void {
    this.want = { hash, until: Date.now() + this.o.fastForMs };
    this.pump();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** When a target is due next (ms since the epoch). */
  private dueAt(t: RelayTarget): number {
    const s = this.results.get(t.id);
    if (!s || s.url !== t.url) return 0;
    const steady = s.at + this.o.intervalMs;
    const w = this.want;
    if (w && Date.now() < w.until && !('hash' in s.answer && s.answer.hash === w.hash)) {
      return Math.min(steady, s.at + this.o.fastIntervalMs);
    }
    return steady;
  }

  private pump(): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    const now = Date.now();
    let next = Number.POSITIVE_INFINITY;
    for (const t of this.targets) {
      if (this.inFlight.has(t.id)) continue;
      const due = this.dueAt(t);
      if (due <= now && this.running < this.o.concurrency) {
        void this.ask(t);
      } else {
        next = Math.min(next, Math.max(due, now + 10));
      }
    }
    if (Number.isFinite(next)) {
      this.timer = setTimeout(() => this.pump(), next - now);
      this.timer.unref();
    }
  }

  private async ask(t: RelayTarget): Promise<void> {
    this.inFlight.add(t.id);
    this.running++;
    let answer: ConfigAnswer;
    try {
      const res = await boundedGet(t.url, this.o.timeoutMs, this.o.maxBytes);
      answer = parseConfigAnswer(res.status, res.body);
    } catch (err) {
      answer = { error: (err as Error).message };
    } finally {
      this.inFlight.delete(t.id);
      this.running--;
    }
    this.o.metrics.relayScrapesTotal.inc({ result: 'error' in answer ? 'error' : 'success' });
    // the target may have gone (or moved) while we asked
    const current = this.targets.find((x) => x.id === t.id);
    if (!this.stopped && current?.url === t.url) {
      const before = this.results.get(t.id);
      this.results.set(t.id, { url: t.url, answer, at: Date.now() });
      const changed = !sameAnswer(before?.url === t.url ? before.answer : undefined, answer);
      if (changed) {
        if ('error' in answer) {
          this.o.logger.warn('relay config not readable', {
            relay: t.id,
            url: t.url,
            error: answer.error,
            hint: 'the operator asks each ready relay pod for GET /config on its admin port: check NetworkPolicy (operator → relay admin port) and the relay',
          });
        } else if (before && 'error' in before.answer) {
          this.o.logger.info('relay config readable again', { relay: t.id, url: t.url });
        }
        this.o.onChange();
      }
    }
    this.pump();
  }
}
