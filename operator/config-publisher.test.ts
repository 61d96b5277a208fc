// A new leader (or a restarted operator) finds the relay config already stored: publishing the same
// content writes nothing, and from then on the operator keeps its own compiled documents, not the
// copies it decoded from the ConfigMaps beside them (at 100k routes a second copy of every tenant
// section).
import { describe, expect, it } from 'vitest';
import { shardIndex } from '../contract/config/shards.ts';
import type { RelayConfig } from '../contract/config/types.gen.ts';
import type { KubeClient } from '../platform/kube/client.ts';
import type { ConfigMap } from '../platform/kube/objects.ts';
import { createLogger } from '../platform/log.ts';
import { fleet } from '../test/support/fleet.ts';
import { CompileCache, compile } from './compile/compile.ts';
import { ConfigPublisher } from './config-publisher.ts';
import type { ResilientInformer } from './kube/informer.ts';
import { OperatorMetrics } from './metrics.ts';
import { encodeRelayConfig, relayConfigMap } from './publish/configmap.ts';
import { planPublish } from './publish/sharded.ts';
import { PublishedConfig } from './published-config.ts';

const NS = 'mailplus';
const BASE = 'relay-config';
const SHARDS = 4;

/** The ConfigMaps an earlier operator stored for `config`, each at a resourceVersion. */
function storedConfigMaps(config: RelayConfig, sourceRuns: Parameters<typeof planPublish>[0]['sourceRuns']) {
  const plan = planPublish({ config, base: BASE, shards: SHARDS, previous: new Map(), sourceRuns });
  const cms = new Map<string, ConfigMap>();
  let rv = 100;
  const store = (name: string, doc: RelayConfig) => {
    const cm = relayConfigMap(NS, name, doc, encodeRelayConfig(doc));
    cm.metadata = { ...cm.metadata, resourceVersion: String(rv++) };
    cms.set(name, cm);
  };
  for (const d of plan) store(d.name, d.config);
  store(
    BASE,
    shardIndex(
      plan.map((d) => ({ configMap: d.name, hash: d.config.hash })),
      config.hash,
    ),
  );
  return cms;
}

/** What the operator knows of the stored ConfigMaps: each followed as its informer would. */
function publishedOver(cms: ReadonlyMap<string, ConfigMap>): PublishedConfig {
  return new PublishedConfig({
    namespace: NS,
    configMapName: BASE,
    shards: SHARDS,
    informer: () => ({ get: (name: string) => cms.get(name) }) as unknown as ResilientInformer<ConfigMap>,
    onChange: () => undefined,
  });
}

describe('ConfigPublisher over a config already stored', () => {
  it('writes nothing, and keeps its own documents instead of the decoded copies', async () => {
    const input = { ...fleet(120, 12), services: [] };
    const earlier = compile(input, { cache: new CompileCache(), hash: 'union' });
    const cms = storedConfigMaps(earlier.config, earlier.sourceRuns);
    const published = publishedOver(cms);
    const writes: string[] = [];
    const client = new Proxy(
      {},
      {
        get: (_t, method) => () => {
          writes.push(String(method));
          throw new Error(`no write expected (${String(method)})`);
        },
      },
    ) as KubeClient;
    const publisher = new ConfigPublisher({
      client,
      namespace: NS,
      configMapName: BASE,
      shards: SHARDS,
      stored: published,
      metrics: new OperatorMetrics(),
      logger: createLogger(() => undefined),
      signal: () => undefined,
      onNewConfig: () => undefined,
    });

    // what the restarted operator reads back: decoded documents, other objects than its compile's
    const decoded = published.storedDocs();
    expect(decoded.size).toBe(SHARDS);

    // its own compile of the same resources: the same content in other objects
    const now = compile(input, { cache: new CompileCache(), hash: 'union' });
    expect(now.config.hash).toBe(earlier.config.hash);
    expect(await publisher.publish(now.config, now.sourceRuns)).toEqual([]);
    expect(writes).toEqual([]);

    const own = new Set<object>(now.config.tenants);
    for (const [name, before] of decoded) {
      const doc = published.storedDoc(name) as RelayConfig;
      expect(doc.hash).toBe(before.hash);
      expect(doc).not.toBe(before);
      // every tenant section is the compile's own object, none the decoded copy
      expect(doc.tenants.length).toBe(before.tenants.length);
      expect(doc.tenants.every((t) => own.has(t))).toBe(true);
    }
    expect(published.current).toBe(now.config);

    // publishing again plans against these documents: nothing written, the very same documents
    const docs = published.storedDocs();
    expect(await publisher.publish(now.config, now.sourceRuns)).toEqual([]);
    expect(writes).toEqual([]);
    for (const [name, doc] of docs) expect(published.storedDoc(name)).toBe(doc);
  });

  it('decodes a ConfigMap again once it changes after the adopted version', async () => {
    const input = { ...fleet(40, 4), services: [] };
    const earlier = compile(input);
    const cms = storedConfigMaps(earlier.config, earlier.sourceRuns);
    const published = publishedOver(cms);
    const name = `${BASE}-shard-0`;
    const first = published.storedDoc(name) as RelayConfig;
    const adopted = { ...first, tenants: [...first.tenants] };
    published.rememberOwnWrite(name, cms.get(name)?.metadata?.resourceVersion as string, adopted);
    expect(published.storedDoc(name)).toBe(adopted);
    // someone else wrote the same content again: a new resourceVersion is decoded afresh
    const cm = cms.get(name) as ConfigMap;
    cms.set(name, { ...cm, metadata: { ...cm.metadata, resourceVersion: '999' } });
    const again = published.storedDoc(name) as RelayConfig;
    expect(again).not.toBe(adopted);
    expect(again.hash).toBe(first.hash);
  });
});
