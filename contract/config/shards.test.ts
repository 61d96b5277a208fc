import { describe, expect, it } from 'vitest';
import { compile } from '../../operator/compile/compile.ts';
import { fleet } from '../../test/support/fleet.ts';
import { verifyRelayConfig } from './load.ts';
import {
  isShardOf,
  mergeShards,
  shardConfigMapName,
  shardIndex,
  shardOf,
  splitRelayConfig,
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
