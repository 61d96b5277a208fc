// The chart's CRDs (charts/mail-plus/files/crds/) are a generated copy of crds/: they must match.
// Fix a failure with `node scripts/sync-chart-crds.ts`.
import { describe, expect, it } from 'vitest';
import { chartCrdDrift, expectedChartCrds } from '../../scripts/sync-chart-crds.ts';

describe('chart CRDs', () => {
  it('are in sync with crds/ (node scripts/sync-chart-crds.ts --check)', async () => {
    expect(await chartCrdDrift()).toEqual([]);
  });

  it('cover both Mail-Plus CRDs', async () => {
    expect([...(await expectedChartCrds()).keys()].sort()).toEqual([
      'mailplus.io_mailroutes.yaml',
      'mailplus.io_tenantpolicies.yaml',
    ]);
  });
});
