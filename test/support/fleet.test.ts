// The synthetic fleet is what the API server serves: validation (which applies the CRD defaults)
// finds nothing to fill in, so the compile keeps each object's own spec, as in a cluster.
import { describe, expect, it } from 'vitest';
import { validateMailRoute, validateTenantPolicy } from '../../operator/resources/validate.ts';
import { fleet } from './fleet.ts';

describe('fleet', () => {
  it('has every CRD default in its specs already', () => {
    const f = fleet(30, 7, 3);
    for (const p of f.tenantPolicies) {
      const v = validateTenantPolicy(p);
      expect(v.errors).toEqual([]);
      expect(v.value?.spec).toEqual(p.spec);
    }
    for (const r of f.mailRoutes) {
      const v = validateMailRoute(r);
      expect(v.errors).toEqual([]);
      expect(v.value?.spec).toEqual(r.spec);
    }
  });
});
