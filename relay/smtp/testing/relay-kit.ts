import type { RelayConfig } from '../../../contract/config/types.gen.ts';
import {
  type CaptureSink,
  type SinkBehaviour,
  startCaptureSink,
} from '../../../test/support/capture-sink.ts';
import { type Relay, type RelayOptions, startRelay } from '../../relay.ts';
import { RawClient } from './harness.ts';

/**
 * Test-only: a relay on loopback, capture sinks and raw SMTP clients, each closed by the test file's
 * afterEach through `cleanups`; and reply helpers that turn replies into comparable lines.
 */

export type Cleanups = Array<() => Promise<void> | void>;

export interface StartedRelay {
  relay: Relay;
  port: number;
  logs: Array<Record<string, unknown>>;
}

export function relayKit(cleanups: Cleanups) {
  return {
    async sink(behaviour?: SinkBehaviour): Promise<CaptureSink> {
      const s = await startCaptureSink({ behaviour });
      cleanups.push(() => s.close());
      return s;
    },

    async relayWith(
      config: RelayConfig | undefined,
      opts: Partial<RelayOptions> = {},
    ): Promise<StartedRelay> {
      const logs: Array<Record<string, unknown>> = [];
      const relay = await startRelay({
        listen: { host: '127.0.0.1', port: 0 },
        admin: { host: '127.0.0.1', port: 0 },
        hostname: 'relay.test',
        config,
        logSink: (l) => logs.push(JSON.parse(l)),
        upstream: {
          connectTimeoutMs: 2000,
          commandTimeoutMs: 5000,
          dataTimeoutMs: 5000,
          idleTimeoutMs: 1000,
        },
        ...opts,
      });
      cleanups.push(() => relay.close());
      return { relay, port: relay.address().smtp.port, logs };
    },

    /** Connected, greeted and EHLO'd (a 250 is required). */
    async client(port: number, name = 'client.test'): Promise<RawClient> {
      const c = await RawClient.connect(port);
      cleanups.push(() => c.close());
      const ehlo = await c.hello(name);
      if (ehlo?.code !== 250) throw new Error(`EHLO got ${line(ehlo)}`);
      return c;
    },
  };
}

export const line = (r: { code: number; lines: string[] } | undefined) =>
  r ? `${r.code} ${r.lines.join(' | ')}` : 'closed';

/** MAIL FROM then one RCPT per address; returns the RCPT replies as lines. */
export async function envelope(c: RawClient, from: string, to: string[], mailParams = ''): Promise<string[]> {
  const m = await c.cmd(`MAIL FROM:<${from}>${mailParams}`);
  if (m?.code !== 250) return [line(m)];
  const out: string[] = [];
  for (const r of to) out.push(line(await c.cmd(`RCPT TO:<${r}>`)));
  return out;
}

/** DATA, the content, the terminator; returns the final reply (or the refusal of DATA) as a line. */
export async function dataRaw(c: RawClient, content: string | Buffer): Promise<string> {
  const r = await c.cmd('DATA');
  if (r?.code !== 354) return line(r);
  c.write(content);
  c.write('.\r\n');
  return line(await c.read());
}
