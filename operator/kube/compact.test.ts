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

  it('objects with the very same status share one frozen status; a different one is their own', () => {
    const interner = new Interner();
    const a = compactResource(fromApi('r1'), interner);
    const b = compactResource(fromApi('r2'), interner);
    expect(b.status).toBe(a.status);
    expect(Object.isFrozen(a.status)).toBe(true);
    expect(Object.isFrozen(a.status.conditions)).toBe(true);
    expect(a.status).toEqual(fromApi('r1').status);

    const later = fromApi('r3');
    later.status.conditions[0].lastTransitionTime = '2026-12-03T17:00:02Z';
    const other = fromApi('r4');
    other.status.observedGeneration = 2;
    const c = compactResource(later, interner);
    const d = compactResource(other, interner);
    for (const x of [c, d]) expect(x.status).not.toBe(a.status);
    expect(d.status.conditions[0]).toBe(a.status.conditions[0]);
    expect(d.status).toEqual({ ...fromApi('r4').status, observedGeneration: 2 });

    // a member that is not shared itself (too large to be) leaves the status the object's own
    const odd = fromApi('r5');
    odd.status.note = { text: 'x'.repeat(300) };
    const e = compactResource(odd, interner);
    const f = compactResource(structuredClone(odd), interner);
    expect(f.status).not.toBe(e.status);
    expect(f.status).toEqual(odd.status);
    expect(f.status.conditions[0]).toBe(a.status.conditions[0]);
  });

  it('two different values under one digest are not shared: the later one keeps its own copy', () => {
    // every `forward` under one digest, every other key under its own
    const digests = new Map<string, number>();
    const digest = (key: string) =>
      key.includes('"upstreams"') ? 42 : (digests.get(key) ?? digests.set(key, 100 + digests.size).size + 99);
    const interner = new Interner(65_536, digest);
    const a = compactResource(fromApi('r1'), interner);
    const b = compactResource(fromApi('r2'), interner);
    const other = fromApi('r3');
    other.spec.forward.upstreams[0].host = 'mx.b.example';
    const c = compactResource(other, interner);
    // the first value under the digest is shared as usual
    expect(b.spec.forward).toBe(a.spec.forward);
    expect(c.spec.forward).not.toBe(a.spec.forward);
    expect(c.spec.forward).toEqual(other.spec.forward);
    expect(a.spec.forward.upstreams[0].host).toBe('mx.a.example');
  });

  it("a status write shares the replaced record's unchanged spec, labels and annotations; a change does not", () => {
    const interner = new Interner();
    const before = compactResource(fromApi('r1'), interner);
    const echo = fromApi('r1');
    echo.metadata.resourceVersion = '43';
    echo.status.conditions[0].status = 'False';
    const after = compactResource(echo, interner, before);
    expect(after.spec).toBe(before.spec);
    expect(after.metadata.labels).toBe(before.metadata.labels);
    expect(after.metadata.annotations).toBe(before.metadata.annotations);
    expect(after.metadata.resourceVersion).toBe('43');
    expect(after.status.conditions[0].status).toBe('False');

    const edited = fromApi('r1');
    edited.metadata.generation = 4;
    edited.spec.match.recipients = ['other@a.example'];
    const changed = compactResource(edited, interner, after);
    expect(changed.spec).not.toBe(before.spec);
    expect(changed.spec.match.recipients).toEqual(['other@a.example']);
    expect(before.spec.match.recipients).toEqual(['r1@a.example']);

    // another object under the same name (deleted and created again) takes nothing from it
    const recreated = fromApi('r1');
    recreated.metadata.uid = 'uid-r1-again';
    expect(compactResource(recreated, new Interner(), after).spec).not.toBe(before.spec);
  });

  it('small objects and arrays are shared, frozen, between records; large ones are copies', () => {
    const interner = new Interner();
    const a = compactResource(fromApi('r1'), interner);
    const b = compactResource(fromApi('r2'), interner);
    expect(b.spec.forward).toBe(a.spec.forward);
    expect(Object.isFrozen(a.spec.forward.upstreams[0])).toBe(true);
    expect(b.spec.match).not.toBe(a.spec.match);
    const many = fromApi('r3');
    many.spec.match.recipients = Array.from({ length: 40 }, (_, i) => `user${i}@a.example`);
    const c = compactResource(many, interner);
    const d = compactResource(structuredClone(many), interner);
    expect(d.spec.match.recipients).toEqual(c.spec.match.recipients);
    expect(d.spec.match.recipients).not.toBe(c.spec.match.recipients);
    expect(Object.isFrozen(d.spec.match.recipients)).toBe(false);
  });

  it('keeps exactly the fields the object has, whatever its shape (no field present but undefined)', () => {
    const base = fromApi('r1');
    const shapes: Array<(o: ReturnType<typeof fromApi>) => void> = [
      () => {},
      (o) => delete o.metadata.labels,
      (o) => delete o.metadata.annotations,
      (o) => {
        delete o.metadata.labels;
        delete o.metadata.annotations;
      },
      (o) => {
        o.metadata.deletionTimestamp = '2026-12-04T00:00:00Z';
      },
      (o) => delete o.metadata.uid,
      (o) => delete o.status,
      (o) => delete o.spec,
      (o) => {
        delete o.spec;
        delete o.status;
      },
    ];
    const kept = ['name', 'namespace', 'uid', 'resourceVersion', 'generation', 'creationTimestamp'];
    for (const shape of shapes) {
      const raw = structuredClone(base);
      shape(raw);
      const rec = compactResource(raw, new Interner());
      const want = Object.keys(raw.metadata)
        .filter((k) => kept.includes(k) || ['deletionTimestamp', 'labels', 'annotations'].includes(k))
        .sort();
      expect(Object.keys(rec.metadata).sort()).toEqual(want);
      expect(Object.keys(rec).sort()).toEqual(
        ['apiVersion', 'kind', 'metadata', ...['spec', 'status'].filter((k) => k in raw)].sort(),
      );
      for (const k of want) expect(rec.metadata[k], k).toBeDefined();
    }
  });
});
