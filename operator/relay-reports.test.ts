import { describe, expect, it } from 'vitest';
import {
  type PodLike,
  parseConfigAnswer,
  relayReports,
  relayTarget,
  relayTargets,
  type Scrape,
} from './relay-reports.ts';

const HASH = `sha256:${'a'.repeat(64)}`;

const pod = (
  name: string,
  over: { ready?: boolean; phase?: string; ip?: string; deleting?: boolean; port?: number } = {},
): PodLike => ({
  metadata: { name, deletionTimestamp: over.deleting ? new Date() : undefined },
  spec: {
    containers: [
      {
        ports: [
          { name: 'smtp', containerPort: 2525 },
          { name: 'admin', containerPort: over.port ?? 9090 },
        ],
      },
    ],
  },
  status: {
    phase: over.phase ?? 'Running',
    podIP: over.ip ?? '10.1.2.3',
    conditions: [{ type: 'Ready', status: over.ready === false ? 'False' : 'True' }],
  },
});

describe('relay targets from pods', () => {
  it('takes ready, running, not-deleting pods with an IP, sorted, at the named or numbered admin port', () => {
    const pods = [
      pod('b'),
      pod('a', { ip: 'fd00::1', port: 9999 }),
      pod('not-ready', { ready: false }),
      pod('pending', { phase: 'Pending' }),
      pod('deleting', { deleting: true }),
      pod('no-ip', { ip: '' }),
    ];
    expect(relayTargets(pods, 'admin')).toEqual([
      { id: 'a', url: 'http://[fd00::1]:9999/config' },
      { id: 'b', url: 'http://10.1.2.3:9090/config' },
    ]);
    expect(relayTarget(pod('b'), 8081)).toEqual({ id: 'b', url: 'http://10.1.2.3:8081/config' });
    expect(relayTarget(pod('b'), 'metrics'), 'no such container port').toBeUndefined();
  });
});

describe("a relay's /config answer (untrusted)", () => {
  it('takes a well-formed hash or null, refuses everything else with a reason', () => {
    expect(parseConfigAnswer(200, JSON.stringify({ hash: HASH, generation: 3 }))).toEqual({ hash: HASH });
    expect(parseConfigAnswer(200, '{"hash":null}')).toEqual({ hash: null });
    expect(parseConfigAnswer(503, '{}')).toEqual({ error: 'HTTP 503' });
    expect(parseConfigAnswer(200, 'not json')).toEqual({ error: 'answer is not JSON' });
    expect(parseConfigAnswer(200, 'null')).toEqual({ error: 'answer has no valid config hash' });
    expect(parseConfigAnswer(200, '{"hash":"sha256:xyz\\n<script>"}')).toEqual({
      error: 'answer has no valid config hash',
    });
  });
});

describe('reports of live relays', () => {
  const t = { id: 'r', url: 'http://10.0.0.1:9090/config' };
  const at = (s: Partial<Scrape>): Map<string, Scrape> =>
    new Map([['r', { url: t.url, answer: { hash: HASH }, at: 1000, ...s }]]);

  it('a recent answer from the current address counts; anything else is an error, never a hash', () => {
    expect(relayReports([t], at({}), 2000, 5000)).toEqual([{ id: 'r', hash: HASH }]);
    expect(relayReports([t], at({ answer: { hash: null } }), 2000, 5000)).toEqual([
      { id: 'r', hash: undefined },
    ]);
    expect(relayReports([t], new Map(), 2000, 5000)).toEqual([{ id: 'r' }]);
    expect(relayReports([t], at({ url: 'http://10.0.0.9:9090/config' }), 2000, 5000)).toEqual([{ id: 'r' }]);
    expect(relayReports([t], at({}), 10_000, 5000)).toEqual([{ id: 'r', error: 'no answer for 9 s' }]);
    expect(relayReports([t], at({ answer: { error: 'ECONNREFUSED' } }), 2000, 5000)).toEqual([
      { id: 'r', error: 'ECONNREFUSED' },
    ]);
  });
});
