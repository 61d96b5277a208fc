// The status sweep at every aggregate reconcile: it must give exactly the verdicts a full
// recomputation gives (which objects need a write, the Ready counts), while recomputing only the
// objects whose inputs changed.
import { describe, expect, it } from 'vitest';
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

function rig(routes = 60, tenants = 3) {
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
  const resources = {
    tenantPolicies: { list: () => input.tenantPolicies },
    mailRoutes: { list: () => input.mailRoutes },
  } as unknown as WatchedResources;
  const sr = new StatusReconciler({
    co: undefined as never,
    resources,
    events: undefined as never,
    metrics,
    logger: undefined as never,
    isLeader: () => true,
    signal: () => undefined,
    requestCompile() {},
    inputs: {
      compiled: () => last,
      served: () => undefined,
      heldBack: (t) => held.get(t),
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
  /** One sweep: how many objects it evaluated afresh, and it agrees with a full recomputation. */
  const sweep = async () => {
    const due: string[] = [];
    const evaluated = sr.sweep(live, true, (k) => due.push(k));
    const want = expected();
    expect(due.sort()).toEqual(want.due);
    expect(await readyCounts()).toEqual(want.ready);
    return { evaluated, due };
  };
  /** Stores every due status on its object (a new object, as the informer delivers it). */
  const writeAll = () => {
    for (const list of [input.tenantPolicies, input.mailRoutes] as MailPlusObject[][]) {
      list.forEach((o, i) => {
        const kind = list === input.mailRoutes ? 'MailRoute' : 'TenantPolicy';
        const d = sr.desiredFor(keyOf(kind, o), o, o.status, live);
        if (d && statusDiffers(o.status, d)) list[i] = { ...o, status: d } as never;
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
  };
  return { input, held, live, recompile, sweep, writeAll, changeRoute, keyOf };
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

  it('forgets deleted objects and counts only the objects there are', async () => {
    const r = rig(10, 2);
    r.live.push({ id: 'relay-a', hash: r.recompile() });
    await r.sweep();
    const removed = r.input.mailRoutes.splice(0, 4);
    r.recompile();
    const after = await r.sweep();
    expect(after.evaluated).toBe(0);
    // their verdicts were forgotten: back (the very objects), they are evaluated afresh
    r.input.mailRoutes.push(...removed);
    r.recompile();
    expect((await r.sweep()).evaluated).toBe(4);
  });
});
