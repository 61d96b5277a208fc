import { describe, expect, it } from 'vitest';
import { compactResource, Interner, LAST_APPLIED } from './compact.ts';

const fromApi = (name: string) =>
  JSON.parse(
    JSON.stringify({
      apiVersion: 'mailplus.io/v1alpha1',
      kind: 'MailRoute',
      metadata: {
        name,
        namespace: 'team-a',
        uid: `uid-${name}`,
        resourceVersion: '42',
        generation: 3,
        creationTimestamp: '2026-12-03T17:00:00Z',
        labels: { app: 'mail' },
        annotations: { [LAST_APPLIED]: '{"spec":{}}', note: 'kept' },
        managedFields: [{ manager: 'kubectl', fieldsV1: {} }],
        finalizers: [],
        selfLink: '/apis/x',
      },
      spec: {
        priority: 100,
        match: { recipients: [`${name}@a.example`] },
        forward: { upstreams: [{ host: 'mx.a.example' }] },
      },
      status: {
        observedGeneration: 3,
        conditions: [
          {
            type: 'Ready',
            status: 'True',
            reason: 'Ready',
            message: 'served',
            lastTransitionTime: '2026-12-03T17:00:01Z',
          },
        ],
      },
    }),
  );

describe('compactResource', () => {
  it('keeps what the operator reads: metadata for compile, status writes and Events, the spec and the status', () => {
    const c = compactResource(fromApi('r1'), new Interner());
    expect(c).toEqual({
      apiVersion: 'mailplus.io/v1alpha1',
      kind: 'MailRoute',
      metadata: {
        name: 'r1',
        namespace: 'team-a',
        uid: 'uid-r1',
        resourceVersion: '42',
        generation: 3,
        creationTimestamp: '2026-12-03T17:00:00Z',
        labels: { app: 'mail' },
        annotations: { note: 'kept' },
      },
      spec: fromApi('r1').spec,
      status: fromApi('r1').status,
    });
  });

  it('the interner is bounded: two generations of at most `limit` strings', () => {
    const interner = new Interner(2);
    for (const s of ['a', 'b', 'c', 'd', 'e', 'a', 'f']) interner.intern(s);
    expect(interner.size).toBeLessThanOrEqual(4);
    expect(interner.intern('long'.repeat(200))).toBe('long'.repeat(200));
    expect(interner.size).toBeLessThanOrEqual(4);
  });

  it('the record is a copy: a later change of the parsed object does not reach the cache', () => {
    const raw = fromApi('r1');
    const c = compactResource(raw, new Interner());
    raw.spec.match.recipients.push('x@a.example');
    raw.status.conditions[0].status = 'False';
    expect(c.spec.match.recipients).toEqual(['r1@a.example']);
    expect(c.status.conditions[0].status).toBe('True');
  });

  it('objects with the very same condition share one frozen condition object', () => {
    const interner = new Interner();
    const a = compactResource(fromApi('r1'), interner);
    const b = compactResource(fromApi('r2'), interner);
    const other = fromApi('r3');
    other.status.conditions[0].lastTransitionTime = '2026-12-03T17:00:02Z';
    const c = compactResource(other, interner);
    expect(b.status.conditions[0]).toBe(a.status.conditions[0]);
    expect(c.status.conditions[0]).not.toBe(a.status.conditions[0]);
    expect(c.status.conditions[0].lastTransitionTime).toBe('2026-12-03T17:00:02Z');
    expect(Object.isFrozen(a.status.conditions[0])).toBe(true);
  });
});
