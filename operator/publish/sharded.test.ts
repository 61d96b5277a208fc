import { describe, expect, it } from 'vitest';
import { decodeRelayConfigMap } from '../../contract/config/configmap.ts';
import { mergeShards, shardIndex, shardOf } from '../../contract/config/shards.ts';
import type { RelayConfig } from '../../contract/config/types.gen.ts';
import { fleet, mailRoute, routePatterns, tenantPolicy } from '../../test/support/fleet.ts';
import type { MailRoute } from '../api/types.gen.ts';
import { CompileCache, compile } from '../compile/compile.ts';
import { type ConfigPayload, relayConfigMap } from './configmap.ts';
import { planPublish } from './sharded.ts';

describe('planning the published documents', () => {
  it('one ConfigMap with --config-shards=1', () => {
    const { config } = compile({ ...fleet(20, 4), services: [] });
    const plan = planPublish({ config, base: 'cfg', shards: 1, previous: new Map() });
    expect(plan.map((d) => [d.name, d.config.hash, d.heldBack])).toEqual([['cfg', config.hash, []]]);
  });

  it('100k routes over 1,000 tenants fit 4 shard ConfigMaps whose union is the config', () => {
    const { config } = compile({ ...fleet(100_000, 1000), services: [] });
    const plan = planPublish({ config, base: 'cfg', shards: 4, previous: new Map() });
    expect(plan.map((d) => d.name)).toEqual(['cfg-shard-0', 'cfg-shard-1', 'cfg-shard-2', 'cfg-shard-3']);
    for (const d of plan) {
      expect(d.heldBack).toEqual([]);
      const payload = d.payload as ConfigPayload;
      expect(payload.bytes).toBeLessThan(1024 * 1024 - 16 * 1024);
      expect(decodeRelayConfigMap(relayConfigMap('ns', d.name, d.config, payload)).hash).toBe(d.config.hash);
    }
    // stored documents with the same hash are not encoded again
    const previous = new Map(plan.map((d) => [d.name, d.config]));
    const again = planPublish({ config, base: 'cfg', shards: 4, previous });
    expect(again.map((d) => d.payload)).toEqual([undefined, undefined, undefined, undefined]);
    const index = shardIndex(plan.map((d) => ({ configMap: d.name, hash: d.config.hash })));
    const merged = mergeShards(index, new Map(plan.map((d) => [d.name, d.config])));
    expect(merged.ok && merged.config.hash).toBe(config.hash);
  }, 60_000);

  it("with the compile's runs, plans the documents a plan from scratch gives, rewriting only changed ones", () => {
    const input = { ...fleet(60, 9), services: [] };
    const cache = new CompileCache();
    let stored = new Map<string, RelayConfig>();
    const bump = (i: number) => {
      const r = input.mailRoutes[i];
      input.mailRoutes[i] = {
        ...r,
        metadata: { ...r.metadata, generation: (r.metadata.generation ?? 1) + 1 },
      } as MailRoute;
    };
    // each edit, and how many documents it must rewrite
    const edits: Array<[() => void, number]> = [
      [() => {}, 4],
      [() => bump(3), 1],
      [() => bump(3), 1],
      [() => input.mailRoutes.splice(20, 2), 2],
      [() => input.mailRoutes.push(mailRoute('tenant-4', 'added', ['x@t4.example.com'])), 1],
      [() => input.tenantPolicies.push(tenantPolicy('tenant-9', ['t9.example.com'])), 1],
      [() => input.mailRoutes.push(mailRoute('tenant-9', 'first', ['a@t9.example.com'])), 1],
      [() => {}, 0],
    ];
    for (const [edit, rewrites] of edits) {
      edit();
      const c = compile(input, { cache, now: 0 });
      const plan = planPublish({
        config: c.config,
        base: 'cfg',
        shards: 4,
        previous: stored,
        sourceRuns: c.sourceRuns,
      });
      // another compile (planPublish remembers the split of a config object), planned from scratch
      const fresh = planPublish({
        config: compile(input, { now: 0 }).config,
        base: 'cfg',
        shards: 4,
        previous: new Map(),
      });
      expect(plan.map((d) => [d.name, d.config.hash])).toEqual(fresh.map((d) => [d.name, d.config.hash]));
      expect(plan.map((d) => d.config.sources)).toEqual(fresh.map((d) => d.config.sources));
      expect(plan.filter((d) => d.payload)).toHaveLength(rewrites);
      stored = new Map(plan.map((d) => [d.name, d.config]));
    }
  });

  it('a shard over the limit holds back only the tenants that changed in it; other shards publish', () => {
    const f = fleet(40, 8);
    const { config: before } = compile({ ...f, services: [] });
    const previous = new Map(
      planPublish({ config: before, base: 'cfg', shards: 2, previous: new Map() }).map((d) => [
        d.name,
        d.config,
      ]),
    );
    const big = 'tenant-3';
    const other = [...Array(8).keys()]
      .map((t) => `tenant-${t}`)
      .find((t) => shardOf(t, 2) !== shardOf(big, 2)) as string;
    for (let r = 0; r < 400; r++)
      f.mailRoutes.push(mailRoute(big, `grow-${r}`, routePatterns(r, 't3.example.com', 40)));
    f.mailRoutes.push(mailRoute(other, 'new', ['new@t' + other.slice(7) + '.example.com']));
    const { config } = compile({ ...f, services: [] });
    const plan = planPublish({ config, base: 'cfg', shards: 2, previous, limit: 16 * 1024 });
    const bigDoc = plan.find((d) => d.name === `cfg-shard-${shardOf(big, 2)}`);
    const otherDoc = plan.find((d) => d.name === `cfg-shard-${shardOf(other, 2)}`);
    expect(bigDoc?.heldBack).toEqual([big]);
    expect(bigDoc?.tooLargeBytes).toBeGreaterThan(16 * 1024);
    expect(bigDoc?.config.tenants.find((t) => t.name === big)).toEqual(
      before.tenants.find((t) => t.name === big),
    );
    expect(otherDoc?.heldBack).toEqual([]);
    expect(otherDoc?.config.sources?.[`MailRoute/${other}/new`]).toBe(1);
  });
});
