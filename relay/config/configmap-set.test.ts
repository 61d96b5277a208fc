// A shard that changed in one tenant keeps the other tenants' sections (and routing indexes) as
// they were: same content and hash, no second copy, no re-indexing of their routes.
import { describe, expect, it } from 'vitest';
import { verifyRelayConfig } from '../../contract/config/load.ts';
import { splitRelayConfig } from '../../contract/config/shards.ts';
import { compile } from '../../operator/compile/compile.ts';
import { fleet } from '../../test/support/fleet.ts';
import { buildRoutingTable } from '../routing/table.ts';
import { withUnchangedTenantsOf } from './configmap-set.ts';

/** What a relay decodes from a ConfigMap: new objects, verified. */
const decoded = <T>(doc: T): T => verifyRelayConfig(JSON.parse(JSON.stringify(doc)), 'test') as T;

describe('withUnchangedTenantsOf', () => {
  it('reuses the earlier objects of unchanged tenants; the changed one is the new section', () => {
    const f = fleet(40, 8);
    const before = decoded(splitRelayConfig(compile({ ...f, services: [] }).config, 1)[0]);
    const r = f.mailRoutes[3];
    f.mailRoutes[3] = { ...r, metadata: { ...r.metadata, generation: 2 }, spec: { ...r.spec, priority: 7 } };
    const next = decoded(splitRelayConfig(compile({ ...f, services: [] }).config, 1)[0]);
    const merged = withUnchangedTenantsOf(before, next);
    expect(merged.hash).toBe(next.hash);
    expect(JSON.stringify(merged)).toBe(JSON.stringify(next));
    const changed = merged.tenants.findIndex((t) => t.name === r.metadata.namespace);
    merged.tenants.forEach((t, i) => {
      if (i === changed) expect(t).toBe(next.tenants[i]);
      else expect(t).toBe(before.tenants[i]);
    });
    // and the routing table indexes only the changed tenant again
    const t1 = buildRoutingTable(before);
    const t2 = buildRoutingTable(merged);
    t2.tenants.forEach((x, i) => {
      if (i === changed) expect(x).not.toBe(t1.tenants[i]);
      else expect(x).toBe(t1.tenants[i]);
    });
  });

  it('without an earlier document, or nothing in common, is the new document itself', () => {
    const doc = decoded(compile({ ...fleet(4, 2), services: [] }).config);
    expect(withUnchangedTenantsOf(undefined, doc)).toBe(doc);
    const other = decoded(compile({ ...fleet(4, 2, 3), services: [] }).config);
    expect(withUnchangedTenantsOf(other, doc)).toBe(doc);
  });
});
