// A compile with a CompileCache returns byte for byte what a compile from scratch returns, over
// random sequences of the edits an operator sees (route and policy changes, adds, deletes, status-only
// updates, invalid generations, competing claims, Services, consents), each fed the previous result
// as the published config as the operator does.
import { generateKeyPairSync } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { unionHash } from '../../contract/config/hash.ts';
import type { MailRoute, TenantPolicy } from '../api/types.gen.ts';
import type { Service } from '../resources/types.ts';
import { CompileCache, sharedWith } from './cache.ts';
import { type CompileInput, type CompileResult, compile, renderRelayConfig } from './compile.ts';

/** Deterministic PRNG (mulberry32): a failing seed reproduces. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NOW = Date.UTC(2026, 5, 1);
const ts = (n: number) => new Date(Date.UTC(2026, 0, 1) + n * 60_000).toISOString();
const TENANTS = ['a', 'b', 'c', 'd', 'e'];
const PUBLIC_KEY = generateKeyPairSync('x25519').publicKey.export({ type: 'spki', format: 'pem' }) as string;

function policy(ns: string, generation: number, age: number, pick: () => number): TenantPolicy {
  const domains = [`${ns}.example`, `*.${ns}.example`];
  // a competing claim on a neighbour's domain, now and then
  if (pick() < 0.25) domains.push(`${TENANTS[Math.floor(pick() * TENANTS.length)]}.example`);
  const spec: Record<string, unknown> = { domains };
  if (pick() < 0.3) spec.clientCIDRs = ['10.0.0.0/8', ...(pick() < 0.3 ? ['10.0.0.0/33'] : [])];
  if (pick() < 0.2) spec.requireTLS = true;
  if (pick() < 0.15)
    spec.troubleshooting = {
      scope: [`*@${ns}.example`],
      consentReference: `TICKET-${generation}`,
      approvedBy: 'ops@example.com',
      // the clock is an input: consents expire while the edits go on (10 minutes a step)
      expiresAt: new Date(NOW + Math.floor(pick() * 8) * 600_000).toISOString(),
      maxMessages: 10,
      publicKey: PUBLIC_KEY,
    };
  return {
    apiVersion: 'mailplus.io/v1alpha1',
    kind: 'TenantPolicy',
    metadata: { name: 'policy', namespace: ns, generation, creationTimestamp: ts(age), uid: `tp-${ns}` },
    spec,
  } as unknown as TenantPolicy;
}

function route(ns: string, name: string, generation: number, pick: () => number): MailRoute {
  const target = pick() < 0.1 ? TENANTS[Math.floor(pick() * TENANTS.length)] : ns;
  const recipients = [`*@${pick() < 0.5 ? '' : 'sub.'}${target}.example`];
  if (pick() < 0.1) recipients.push('not a pattern');
  if (pick() < 0.3) recipients.push(`u${Math.floor(pick() * 3)}@${ns}.example`);
  const spec: Record<string, unknown> = {
    priority: 100 + Math.floor(pick() * 3),
    match: { recipients, ...(pick() < 0.2 ? { senders: ['*@partner.example'] } : {}) },
  };
  if (pick() < 0.2) spec.reject = { code: 550, message: 'no' };
  else if (pick() < 0.3) spec.forward = { upstreams: [{ service: { name: 'mx', port: 'smtp' } }] };
  else spec.forward = { upstreams: [{ host: `mx${Math.floor(pick() * 2)}.${ns}.internal`, port: 25 }] };
  return {
    apiVersion: 'mailplus.io/v1alpha1',
    kind: 'MailRoute',
    metadata: { name, namespace: ns, generation, creationTimestamp: ts(10 + Math.floor(pick() * 5)) },
    spec,
  } as unknown as MailRoute;
}

function service(ns: string, port: number, pick: () => number): Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'mx', namespace: ns, generation: port },
    spec: { clusterIP: `10.96.0.${Math.floor(pick() * 200)}`, ports: [{ name: 'smtp', port }] },
  };
}

/** Frozen all the way down: a compile that wrote into its input (a spec it shares) would throw. */
function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

const snapshot = (r: CompileResult) => ({
  rendered: renderRelayConfig(r.config),
  statuses: JSON.stringify([...r.statuses]),
});

describe('compile with a CompileCache', () => {
  it('equals a compile from scratch after every edit of random edit sequences', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const pick = rng(seed);
      const policies = new Map<string, TenantPolicy>();
      const routes = new Map<string, MailRoute>();
      const services = new Map<string, Service>();
      TENANTS.forEach((ns, i) => {
        policies.set(ns, policy(ns, 1, i, pick));
        for (let r = 0; r < 4; r++) routes.set(`${ns}/r${r}`, route(ns, `r${r}`, 1, pick));
      });
      const cache = new CompileCache();
      const unionCache = new CompileCache();
      const published: Array<CompileResult['config']> = [];
      for (let step = 0; step < 40; step++) {
        const now = NOW + step * 600_000;
        // what relays serve is usually the last result, sometimes an older one (a shard held back,
        // a standby that took over): carry-over reads it
        const previous = pick() < 0.25 ? published[Math.floor(pick() * published.length)] : published.at(-1);
        const ns = TENANTS[Math.floor(pick() * TENANTS.length)];
        const keys = [...routes.keys()].filter((k) => k.startsWith(`${ns}/`));
        const x = pick();
        const some = keys[Math.floor(pick() * keys.length)];
        if (x < 0.35 && some) {
          const old = routes.get(some) as MailRoute;
          routes.set(some, route(ns, old.metadata.name, (old.metadata.generation ?? 0) + 1, pick));
        } else if (x < 0.45 && some) {
          // a status-only update: a new object with the same spec and generation
          const old = routes.get(some) as MailRoute;
          routes.set(some, { ...old, status: { observedGeneration: step } } as MailRoute);
        } else if (x < 0.55) {
          routes.set(`${ns}/n${step}`, route(ns, `n${step}`, 1, pick));
        } else if (x < 0.6) {
          // routes in a namespace whose TenantPolicy comes and goes, or loses every domain
          if (pick() < 0.3) routes.set(`orphan/n${step}`, route('orphan', `n${step}`, 1, pick));
          if (policies.has('orphan')) policies.delete('orphan');
          else
            policies.set('orphan', {
              ...policy('orphan', step, 99, () => 0.99),
              spec: { domains: [`${TENANTS[Math.floor(pick() * TENANTS.length)]}.example`] },
            });
        } else if (x < 0.62 && some) {
          routes.delete(some);
        } else if (x < 0.8) {
          const old = policies.get(ns);
          const g = (old?.metadata.generation ?? 0) + 1;
          policies.set(ns, policy(ns, g, TENANTS.indexOf(ns), pick));
        } else if (x < 0.85) {
          policies.delete(ns);
        } else if (x < 0.95) {
          services.set(ns, service(ns, 2525 + Math.floor(pick() * 2), pick));
        } else {
          services.delete(ns);
        }
        const input: CompileInput = {
          tenantPolicies: [...policies.values()],
          mailRoutes: [...routes.values()],
          services: [...services.values()].map((s) => structuredClone(s)),
        };
        // the cache keeps specs that share the inputs' own parts: the compile must never write them
        deepFreeze(input.tenantPolicies);
        deepFreeze(input.mailRoutes);
        const cached = compile(input, { now, previous, cache });
        const scratch = compile(input, { now, previous });
        expect(snapshot(cached), `seed ${seed} step ${step}`).toEqual(snapshot(scratch));
        expect(cached.config.hash).toBe(scratch.config.hash);
        // the sharded operator's hash, made from digests of sections mostly compiled before
        const union = compile(input, { now, previous, cache: unionCache, hash: 'union' });
        expect(union.config.hash, `seed ${seed} step ${step}`).toBe(unionHash(scratch.config));
        published.push(cached.config);
      }
    }
  }, 60_000);

  it('reuses the sections of unchanged namespaces and validates an unchanged object once', () => {
    const pick = rng(7);
    const tenantPolicies = TENANTS.map((ns, i) => policy(ns, 1, i, () => 0.99));
    const mailRoutes = TENANTS.flatMap((ns) => [route(ns, 'r0', 1, () => 0.99), route(ns, 'r1', 1, pick)]);
    const cache = new CompileCache();
    const first = compile({ tenantPolicies, mailRoutes, services: [] }, { now: NOW, cache });
    mailRoutes[0] = { ...mailRoutes[0], metadata: { ...mailRoutes[0].metadata, generation: 2 } };
    const second = compile({ tenantPolicies, mailRoutes, services: [] }, { now: NOW, cache });
    // namespace a changed: a new section; every other tenant section is the very same object
    expect(second.config.tenants[0]).not.toBe(first.config.tenants[0]);
    for (let i = 1; i < TENANTS.length; i++) expect(second.config.tenants[i]).toBe(first.config.tenants[i]);
    expect(second.config.sources?.['MailRoute/a/r0']).toBe(2);
  });

  it('an object declared sameAs an earlier one (a status write echo) keeps its namespace section', () => {
    const tenantPolicies = TENANTS.map((ns, i) => policy(ns, 1, i, () => 0.99));
    const mailRoutes = TENANTS.map((ns) => route(ns, 'r0', 1, () => 0.99));
    const cache = new CompileCache();
    const first = compile({ tenantPolicies, mailRoutes, services: [] }, { now: NOW, cache });
    const echoes = mailRoutes.map((r) => ({ ...r, status: { observedGeneration: 1 } }) as MailRoute);
    cache.sameAs(echoes[1], mailRoutes[1]);
    const second = compile({ tenantPolicies, mailRoutes: echoes, services: [] }, { now: NOW, cache });
    expect(second.config.hash).toBe(first.config.hash);
    // b was declared the same; the others are new objects, compiled again (same output)
    expect(second.config.tenants[1]).toBe(first.config.tenants[1]);
    expect(second.config.tenants[0]).not.toBe(first.config.tenants[0]);
  });

  it('sameAs moves the meta to the newer object: the older one has none left', () => {
    const cache = new CompileCache();
    const older = { metadata: { namespace: 'a', name: 'r' } };
    const newer = { metadata: { namespace: 'a', name: 'r' }, status: {} };
    let made = 0;
    const make = () => ({ n: ++made });
    const m = cache.meta('MailRoute', older, make);
    cache.sameAs(newer, older);
    expect(cache.meta('MailRoute', newer, make)).toBe(m);
    expect(made).toBe(1);
    // asked for again (a compile that still had it), it is made anew
    expect(cache.meta('MailRoute', older, make)).not.toBe(m);
    expect(made).toBe(2);
  });

  it('an object declared sameAs an earlier one takes its place: the earlier one is not kept', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const tenantPolicies = TENANTS.map((ns, i) => policy(ns, 1, i, () => 0.99));
    let mailRoutes: MailRoute[] | undefined = TENANTS.map((ns) => route(ns, 'r0', 1, () => 0.99));
    const cache = new CompileCache();
    const first = compile({ tenantPolicies, mailRoutes, services: [] }, { now: NOW, cache });
    // the status echo shares the spec, as the informer's compact record does (kube/compact.ts)
    const echoes = mailRoutes.map((r) => ({
      ...r,
      metadata: { ...r.metadata },
      status: { observedGeneration: 1 },
    }));
    for (let i = 0; i < echoes.length; i++) cache.sameAs(echoes[i], mailRoutes[i]);
    const before = mailRoutes.map((r) => new WeakRef(r));
    mailRoutes = undefined;
    const second = compile({ tenantPolicies, mailRoutes: echoes, services: [] }, { now: NOW, cache });
    for (let i = 0; i < TENANTS.length; i++) expect(second.config.tenants[i]).toBe(first.config.tenants[i]);
    // WeakRefs made in this task stay alive until it ends
    await new Promise((r) => setTimeout(r, 0));
    gc();
    expect(before.filter((w) => w.deref() !== undefined)).toHaveLength(0);
    expect(
      compile({ tenantPolicies, mailRoutes: echoes, services: [] }, { now: NOW, cache }).config.tenants[0],
    ).toBe(first.config.tenants[0]);
  });

  it('the validated spec shares every part equal to the cached object, and only those', () => {
    const raw = {
      priority: 100,
      match: { recipients: ['a@x.example'] },
      forward: { upstreams: [{ host: 'mx' }] },
    };
    const defaulted = structuredClone(raw) as typeof raw & {
      forward: { upstreams: Array<{ tls?: string }> };
    };
    defaulted.forward.upstreams[0].tls = 'opportunistic';
    const shared = sharedWith(defaulted, raw);
    expect(shared).toEqual(defaulted);
    expect(shared).not.toBe(raw);
    expect(shared.match).toBe(raw.match);
    expect(shared.forward).not.toBe(raw.forward);
    expect(shared.forward.upstreams[0]).toEqual({ host: 'mx', tls: 'opportunistic' });
    expect(sharedWith(structuredClone(raw), raw)).toBe(raw);
  });
});
