// The status sweep at every aggregate reconcile: it must give exactly the verdicts a full
// recomputation gives (which objects need a write, the Ready counts), while recomputing only the
// objects whose inputs changed.
import { describe, expect, it, vi } from 'vitest';
import { fleet } from '../test/support/fleet.ts';
import type { MailRoute } from './api/types.gen.ts';
import { CompileCache, type CompileResult, compile } from './compile/compile.ts';
import { statusDiffers } from './conditions/api-conditions.ts';
import { ConfigHistory, type RelayReport } from './conditions/programmed.ts';
import type { HeldBack } from './config-publisher.ts';
import { OperatorMetrics } from './metrics.ts';
import { resourceKey } from './resources/types.ts';
import { StatusReconciler } from './status-reconciler.ts';
import type { MailPlusObject, WatchedResources } from './watched-resources.ts';

function rig(routes = 60, tenants = 3, io: { client?: unknown; events?: unknown } = {}) {
  const input = { ...fleet(routes, tenants), services: [] };
  const cache = new CompileCache();
  const history = new ConfigHistory();
  const metrics = new OperatorMetrics();
  const held = new Map<string, HeldBack>();
  const live: RelayReport[] = [];
  let last: CompileResult | undefined;
  const recompile = () => {
    last = compile(input, { cache, now: 0, previous: last?.config });
    history.remember(last.config.hash, last.config.sources ?? {});
    return last.config.hash;
  };
  /** Sweeps that listed every object (the others visited only what changed). */
  const listed = { sweeps: 0 };
  const resources = {
    tenantPolicies: { list: () => input.tenantPolicies },
    mailRoutes: {
      list: () => {
        listed.sweeps++;
        return input.mailRoutes;
      },
    },
    objectOf: (key: string) => {
      const [kind, ns, name] = key.split('/');
      const list: MailPlusObject[] = kind === 'TenantPolicy' ? input.tenantPolicies : input.mailRoutes;
      return { kind, obj: list.find((o) => o.metadata.namespace === ns && o.metadata.name === name) };
    },
  } as unknown as WatchedResources;
  const sr = new StatusReconciler({
    client: io.client as never,
    resources,
    events: io.events as never,
    metrics,
    logger: undefined as never,
    isLeader: () => true,
    signal: () => undefined,
    requestCompile() {},
    inputs: {
      compiled: () => last,
      served: () => undefined,
      heldBack: () => held,
      history,
      fleet: 'ns/relay-config',
      reports: () => live,
    },
  });
  const objects = () => [
    ...input.tenantPolicies.map((o) => ['TenantPolicy', o] as const),
    ...input.mailRoutes.map((o) => ['MailRoute', o] as const),
  ];
  const keyOf = (kind: string, o: MailPlusObject) =>
    resourceKey(kind as 'MailRoute', o.metadata.namespace, o.metadata.name);
  /** What a full recomputation says: the keys due a write, and Ready counts by kind. */
  const expected = () => {
    const due: string[] = [];
    const ready: Record<string, number> = {};
    for (const [kind, o] of objects()) {
      const d = sr.desiredFor(keyOf(kind, o), o, o.status, live);
      if (!d) continue;
      const r = d.conditions.find((c) => c.type === 'Ready')?.status ?? 'Unknown';
      ready[`${kind}|${r}`] = (ready[`${kind}|${r}`] ?? 0) + 1;
      if (statusDiffers(o.status, d)) due.push(keyOf(kind, o));
    }
    return { due: due.sort(), ready };
  };
  const readyCounts = async () => {
    const m = await metrics.resources.get();
    const out: Record<string, number> = {};
    for (const v of m.values) if (v.value > 0) out[`${v.labels.kind}|${v.labels.status}`] = v.value;
    return out;
  };
  /** Keys queued by sweeps that are still due a write (the status controller's queue). */
  const queued = new Set<string>();
  /**
   * One sweep: how many objects it evaluated afresh and what it queued; it agrees with a full
   * recomputation: every object due a write has been queued since it became due.
   */
  const sweep = async () => {
    const due: string[] = [];
    const evaluated = sr.sweep(live, true, (k) => due.push(k));
    const want = expected();
    for (const k of due) queued.add(k);
    for (const k of queued) if (!want.due.includes(k)) queued.delete(k);
    expect([...queued].sort()).toEqual(want.due);
    expect(due.filter((k) => !want.due.includes(k))).toEqual([]);
    expect(await readyCounts()).toEqual(want.ready);
    return { evaluated, due };
  };
  /** Stores every due status on its object (a new object, as the informer delivers it). */
  const writeAll = () => {
    for (const list of [input.tenantPolicies, input.mailRoutes] as MailPlusObject[][]) {
      list.forEach((o, i) => {
        const kind = list === input.mailRoutes ? 'MailRoute' : 'TenantPolicy';
        const d = sr.desiredFor(keyOf(kind, o), o, o.status, live);
        if (d && statusDiffers(o.status, d)) {
          list[i] = { ...o, status: d } as never;
          sr.touched(keyOf(kind, o), o);
        }
      });
    }
  };
  const changeRoute = (i: number) => {
    const r = input.mailRoutes[i];
    input.mailRoutes[i] = {
      ...r,
      metadata: { ...r.metadata, generation: (r.metadata.generation ?? 1) + 1 },
      spec: { ...r.spec, priority: 200 + i },
    } as MailRoute;
    sr.touched(keyOf('MailRoute', r), r);
  };
  return { input, held, live, recompile, sweep, writeAll, changeRoute, keyOf, sr, listed };
}

describe('status sweep', () => {
  it('evaluates every object once, then only those whose inputs changed', async () => {
    const r = rig();
    const total = r.input.tenantPolicies.length + r.input.mailRoutes.length;
    const hash = r.recompile();
    r.live.push({ id: 'relay-a', hash });
    const first = await r.sweep();
    expect(first.evaluated).toBe(total);
    expect(first.due).toHaveLength(total);
    r.writeAll();
    // each written object is a new object: evaluated again, nothing due any more
    expect(await r.sweep()).toEqual({ evaluated: total, due: [] });
    expect(await r.sweep()).toEqual({ evaluated: 0, due: [] });

    // one route changes: only it is evaluated (Programmed False: the relay serves the old generation)
    r.changeRoute(7);
    const next = r.recompile();
    const changed = r.keyOf('MailRoute', r.input.mailRoutes[7]);
    expect(await r.sweep()).toEqual({ evaluated: 1, due: [changed] });
    r.writeAll();
    expect((await r.sweep()).evaluated).toBe(1);
    // the relay loads the new config: the generations it serves changed for that route alone
    r.live[0] = { id: 'relay-a', hash: next };
    expect(await r.sweep()).toEqual({ evaluated: 1, due: [changed] });
    r.writeAll();
    await r.sweep();
    expect(await r.sweep()).toEqual({ evaluated: 0, due: [] });
  });

  it("evaluates everything again when the relays change, and a held-back tenant's objects when it is", async () => {
    const r = rig();
    const total = r.input.tenantPolicies.length + r.input.mailRoutes.length;
    const hash = r.recompile();
    r.live.push({ id: 'relay-a', hash });
    await r.sweep();
    r.writeAll();
    await r.sweep();
    // a second relay that cannot be reached: every Programmed message names it
    r.live.push({ id: 'relay-b', error: 'timeout' });
    const all = await r.sweep();
    expect(all.evaluated).toBe(total);
    expect(all.due).toHaveLength(total);
    r.writeAll();
    await r.sweep();
    // tenant-1 held back: its objects (1 policy + 20 routes) say why
    r.held.set('tenant-1', { reason: 'TenantBudgetExceeded', message: 'over 10 routes' });
    const held = await r.sweep();
    expect(held.evaluated).toBe(21);
    expect(held.due.every((k) => k.includes('/tenant-1/'))).toBe(true);
    expect(held.due).toHaveLength(21);
    // the same reason again, as a new object (every publish makes new ones): nothing to evaluate
    r.held.set('tenant-1', { reason: 'TenantBudgetExceeded', message: 'over 10 routes' });
    r.writeAll();
    await r.sweep();
    expect((await r.sweep()).evaluated).toBe(0);
  });

  it('visits only the changed objects and the keys a relay changed generation of, while nothing else changed', async () => {
    vi.useFakeTimers({ now: 0 });
    try {
      const r = rig();
      r.live.push({ id: 'relay-a', hash: r.recompile() });
      await r.sweep();
      r.writeAll();
      const full = r.listed.sweeps;
      // status echoes only: those objects, not a list of every object
      expect((await r.sweep()).evaluated).toBe(63);
      expect(r.listed.sweeps).toBe(full);
      // a change: another compile, every object visited (reusing verdicts)
      r.changeRoute(3);
      const next = r.recompile();
      expect((await r.sweep()).evaluated).toBe(1);
      expect(r.listed.sweeps).toBe(full + 1);
      // the relay loads it: the route whose generation it serves changed, alone
      r.live[0] = { id: 'relay-a', hash: next };
      expect(await r.sweep()).toEqual({ evaluated: 1, due: [r.keyOf('MailRoute', r.input.mailRoutes[3])] });
      expect(r.listed.sweeps).toBe(full + 1);
      // a relay serving a config the history does not know: every object
      r.live[0] = { id: 'relay-a', hash: 'sha256:unknown' };
      await r.sweep();
      expect(r.listed.sweeps).toBe(full + 2);
      r.live[0] = { id: 'relay-a', hash: next };
      await r.sweep();
      r.writeAll();
      await r.sweep();
      const before = r.listed.sweeps;
      await r.sweep();
      expect(r.listed.sweeps).toBe(before);
      // a minute on, every object again (as a resync)
      vi.advanceTimersByTime(60_000);
      expect((await r.sweep()).evaluated).toBe(0);
      expect(r.listed.sweeps).toBe(before + 1);
      // more changes than it keeps between two sweeps: every object again
      for (let i = 0; i <= 10_000; i++) r.sr.touched(`MailRoute/elsewhere/r${i}`, undefined);
      await r.sweep();
      expect(r.listed.sweeps).toBe(before + 2);
      await r.sweep();
      expect(r.listed.sweeps).toBe(before + 2);
    } finally {
      vi.useRealTimers();
    }
  });

  it('forgets deleted objects and counts only the objects there are', async () => {
    const r = rig(10, 2);
    r.live.push({ id: 'relay-a', hash: r.recompile() });
    await r.sweep();
    const removed = r.input.mailRoutes.splice(0, 4);
    for (const o of removed) r.sr.touched(r.keyOf('MailRoute', o), o);
    r.recompile();
    const after = await r.sweep();
    expect(after.evaluated).toBe(0);
    // their verdicts were forgotten: back (the very objects), they are evaluated afresh
    r.input.mailRoutes.push(...removed);
    for (const o of removed) r.sr.touched(r.keyOf('MailRoute', o), undefined);
    r.recompile();
    expect((await r.sweep()).evaluated).toBe(4);
  });
});

describe('status write echoes', () => {
  it("does not reconcile the echo of its own write, and forgets that write; another writer's change is reconciled", async () => {
    const patches: Array<{ status: MailPlusObject['status'] }> = [];
    const client = {
      request: async (_method: string, _path: string, o: { body: { status: MailPlusObject['status'] } }) => {
        patches.push(o.body);
        return {};
      },
    };
    const r = rig(6, 2, { client, events: { emit: async () => undefined } });
    r.recompile();
    const at = (rv: string, status?: MailPlusObject['status']) => {
      const o = r.input.mailRoutes[0];
      r.input.mailRoutes[0] = { ...o, metadata: { ...o.metadata, resourceVersion: rv }, status } as MailRoute;
      return r.input.mailRoutes[0];
    };
    const key = r.keyOf('MailRoute', at('1'));
    await r.sr.reconcile(key);
    expect(patches).toHaveLength(1);
    const { status } = patches[0];
    // the watch brings the write back at the next resourceVersion: nothing to do
    expect(r.sr.statusChanged(key, at('2', status))).toBe(false);
    // another writer adds a condition of its own: reconciled (the write above is forgotten, so it is
    // not taken for another echo of it)
    const conditions = [...(status?.conditions ?? [])];
    conditions.push({
      type: 'ExternalCheck',
      status: 'True',
      reason: 'Checked',
      message: 'x',
      lastTransitionTime: '2026-01-01T00:00:00Z',
    });
    expect(r.sr.statusChanged(key, at('3', { ...status, conditions }))).toBe(true);
  });
});
