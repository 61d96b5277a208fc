import { describe, expect, it } from 'vitest';
import { compile } from '../../operator/compile/compile.ts';
import { fleet } from '../../test/support/fleet.ts';
import { hashConfig, unionHash } from './hash.ts';
import { verifyRelayConfig } from './load.ts';
import {
  isShardOf,
  mergeShards,
  shardConfigMapName,
  shardIndex,
  shardOf,
  splitRelayConfig,
  unionOfShards,
} from './shards.ts';

describe('sharded relay config', () => {
  const { config } = compile({ ...fleet(200, 40), services: [] });

  it('assigns tenants to shards by a stable hash, spread over every shard', () => {
    expect(shardOf('tenant-1', 8)).toBe(shardOf('tenant-1', 8));
    const used = new Set(config.tenants.map((t) => shardOf(t.name, 4)));
    expect(used.size).toBe(4);
  });

  it('splits into verifiable shards whose union is the original config, hash included', () => {
    const shards = splitRelayConfig(config, 4);
    for (const s of shards) expect(verifyRelayConfig(s, 'shard').hash).toBe(s.hash);
    for (const [i, s] of shards.entries()) for (const t of s.tenants) expect(shardOf(t.name, 4)).toBe(i);
    expect(shards.reduce((n, s) => n + s.tenants.length, 0)).toBe(config.tenants.length);
    const index = shardIndex(
      shards.map((s, i) => ({ configMap: shardConfigMapName('cfg', i), hash: s.hash })),
    );
    expect(verifyRelayConfig(index, 'index').tenants).toEqual([]);
    const docs = new Map(shards.map((s, i) => [shardConfigMapName('cfg', i), s]));
    const merged = mergeShards(index, docs);
    expect(merged.ok && merged.config.hash).toBe(config.hash);
    expect(merged.ok && verifyRelayConfig(merged.config, 'merged').sources).toEqual(config.sources);
  });

  it('names the union hash in the index: the union is formed without hashing it again, same content', () => {
    const shards = splitRelayConfig(config, 4);
    const refs = shards.map((s, i) => ({ configMap: shardConfigMapName('cfg', i), hash: s.hash }));
    const index = shardIndex(refs, config.hash);
    expect(verifyRelayConfig(index, 'index').unionHash).toBe(config.hash);
    expect(index.hash).not.toBe(shardIndex(refs).hash);
    const docs = new Map(shards.map((s, i) => [shardConfigMapName('cfg', i), s]));
    const merged = mergeShards(index, docs);
    expect(merged.ok && verifyRelayConfig(merged.config, 'merged')).toEqual(config);
    // what a relay forms: no sources (only the operator reads them), the same tenants and hash
    const relay = mergeShards(index, docs, { sources: false });
    expect(relay.ok && relay.config.sources).toBeUndefined();
    expect(relay.ok && relay.config.tenants).toEqual(config.tenants);
    expect(relay.ok && relay.config.hash).toBe(config.hash);
    // an index without unionHash (older operators): the hash is computed, with or without sources
    const old = mergeShards(shardIndex(refs), docs, { sources: false });
    expect(old.ok && old.config.hash).toBe(config.hash);
    expect(old.ok && old.config.sources).toBeUndefined();
    // a shard missing: no union, whatever the index says its hash is
    const missing = new Map(docs);
    missing.delete('cfg-shard-0');
    expect(mergeShards(index, missing, { sources: false }).ok).toBe(false);
  });

  it("carries the sharded operator's union hash, which no relay verifies, through the index", () => {
    const union = compile({ ...fleet(200, 40), services: [] }, { hash: 'union' }).config;
    expect(union.hash).toBe(unionHash(union));
    expect(union.hash).not.toBe(config.hash);
    // the shards are documents: verifiable with the hash every relay version checks
    const shards = splitRelayConfig(union, 4);
    for (const s of shards) expect(verifyRelayConfig(s, 'shard').hash).toBe(hashConfig(s));
    const refs = shards.map((s, i) => ({ configMap: shardConfigMapName('cfg', i), hash: s.hash }));
    const docs = new Map(shards.map((s, i) => [shardConfigMapName('cfg', i), s]));
    const relay = mergeShards(shardIndex(refs, union.hash), docs, { sources: false });
    expect(relay.ok && relay.config.hash).toBe(union.hash);
    // the operator's own union of shards not all as compiled: hashed its way, the default a document's
    const own = unionOfShards(refs, docs, { hash: unionHash });
    expect(own.ok && own.config.hash).toBe(union.hash);
    const legacy = unionOfShards(refs, docs);
    expect(legacy.ok && legacy.config.hash).toBe(config.hash);
  });

  it('re-splits a changed config reusing every shard whose content is unchanged', () => {
    const f = { ...fleet(200, 40), services: [] };
    const before = splitRelayConfig(compile(f).config, 8);
    const changed = f.mailRoutes.findIndex((r) => r.metadata.namespace === 'tenant-7');
    const r = f.mailRoutes[changed];
    f.mailRoutes[changed] = {
      ...r,
      metadata: { ...r.metadata, generation: 2 },
      spec: { ...r.spec, priority: 7 },
    };
    const next = compile(f).config;
    const fresh = splitRelayConfig(next, 8);
    // a fresh compile: no tenant object is shared, so reuse is by content (tenant digests)
    const again = splitRelayConfig(next, 8, (i) => before[i]);
    expect(again).toEqual(fresh);
    const touched = shardOf('tenant-7', 8);
    // an unchanged shard is the stored one (its hash and sources as they are), but over this
    // config's own tenant objects: no second copy of them is kept (a decoded one after a restart)
    for (const [i, d] of again.entries()) {
      expect(d.sources === before[i].sources, `shard ${i}`).toBe(i !== touched);
      expect(d.hash === before[i].hash, `shard ${i}`).toBe(i !== touched);
      expect(
        d.tenants.every((t, j) => t === fresh[i].tenants[j]),
        `shard ${i}`,
      ).toBe(true);
    }
    // the same objects: the very document
    expect(splitRelayConfig(next, 8, (i) => again[i]).every((d, i) => d === again[i])).toBe(true);
    expect(
      verifyRelayConfig(again[touched], 'shard').sources?.['MailRoute/tenant-7/' + r.metadata.name],
    ).toBe(2);
    // a shard whose sources lost or gained a key is not reused either
    const dropped = { ...next, sources: { ...next.sources } };
    const key = Object.keys(dropped.sources).find((k) => k.split('/')[1] === 'tenant-3') as string;
    delete dropped.sources[key];
    const split3 = splitRelayConfig(dropped, 8, (i) => fresh[i]);
    expect(split3[shardOf('tenant-3', 8)]).not.toBe(fresh[shardOf('tenant-3', 8)]);
    expect(split3[shardOf('tenant-3', 8)].sources?.[key]).toBeUndefined();
    expect(splitRelayConfig(dropped, 8)).toEqual(split3);
  });

  it("splits by the compile's runs and their generations without reading `sources`", () => {
    const f = { ...fleet(200, 40), services: [] };
    const { config: compiled, sourceRuns } = compile(f);
    const plain = { ...compiled, sources: { ...compiled.sources } };
    const want = splitRelayConfig(plain, 8);
    const lazy = { ...plain };
    Object.defineProperty(lazy, 'sources', {
      enumerable: true,
      get: () => {
        throw new Error('sources read');
      },
    });
    expect(sourceRuns?.every((r) => r.values.length === r.keys.length)).toBe(true);
    const byRuns = splitRelayConfig(lazy, 8, () => undefined, sourceRuns);
    expect(byRuns).toEqual(want);
    // and against the previous documents: reused where unchanged, as without runs
    expect(splitRelayConfig(lazy, 8, (i) => want[i], sourceRuns).every((d, i) => d === want[i])).toBe(true);
  });

  it('refuses to merge until every shard is at the hash the index names', () => {
    const shards = splitRelayConfig(config, 3);
    const index = shardIndex(
      shards.map((s, i) => ({ configMap: shardConfigMapName('cfg', i), hash: s.hash })),
    );
    const older = splitRelayConfig(compile({ ...fleet(100, 40), services: [] }).config, 3);
    const docs = new Map(shards.map((s, i) => [shardConfigMapName('cfg', i), s]));
    docs.set('cfg-shard-1', older[1]);
    docs.delete('cfg-shard-2');
    expect(mergeShards(index, docs)).toEqual({ ok: false, waitingFor: ['cfg-shard-1', 'cfg-shard-2'] });
  });

  it('knows its own shard names only', () => {
    expect(isShardOf('mailplus-relay-config', 'mailplus-relay-config-shard-12')).toBe(true);
    expect(isShardOf('mailplus-relay-config', 'mailplus-relay-config')).toBe(false);
    expect(isShardOf('mailplus-relay-config', 'kube-root-ca.crt')).toBe(false);
    expect(isShardOf('a.b', 'aXb-shard-0')).toBe(false);
  });
});
