// ConfigHistory fed by the operator's compiles: with the compile's sorted runs it finds what changed
// between two configs by run identity; every answer must be the one a full comparison gives.
import { describe, expect, it } from 'vitest';
import { fleet, mailRoute } from '../test/support/fleet.ts';
import type { MailRoute } from './api/types.gen.ts';
import { CompileCache, compile } from './compile/compile.ts';
import { ConfigHistory } from './conditions/programmed.ts';

describe('ConfigHistory with the compile runs', () => {
  it('answers every generation as a history without runs does, across changes, additions and deletions', () => {
    const input = { ...fleet(40, 4), services: [] };
    const cache = new CompileCache();
    const byRuns = new ConfigHistory(8);
    const full = new ConfigHistory(8);
    const hashes: string[] = [];
    const keys = new Set<string>();
    const edits: Array<() => void> = [
      () => {
        const r = input.mailRoutes[5];
        input.mailRoutes[5] = { ...r, metadata: { ...r.metadata, generation: 2 } } as MailRoute;
      },
      () => input.mailRoutes.splice(10, 3),
      () => input.mailRoutes.push(mailRoute('tenant-2', 'added', ['new@t2.example.com'])),
      () => {
        const r = input.mailRoutes[0];
        input.mailRoutes[0] = { ...r, metadata: { ...r.metadata, generation: 7 } } as MailRoute;
        input.mailRoutes.pop();
      },
      () => input.tenantPolicies.splice(3, 1),
      () => {},
    ];
    for (const edit of [() => {}, ...edits]) {
      edit();
      const c = compile(input, { cache, now: 0 });
      expect(c.sourceRuns, 'the operator compile says which runs its sources are made of').toBeDefined();
      byRuns.remember(c.config.hash, c.config.sources ?? {}, c.sourceRuns);
      full.remember(c.config.hash, c.config.sources ?? {});
      hashes.push(c.config.hash);
      for (const k of Object.keys(c.config.sources ?? {})) keys.add(k);
    }
    let differing = 0;
    for (const h of hashes) {
      for (const k of keys) {
        expect(byRuns.generation(h, k), `${k} in ${h}`).toBe(full.generation(h, k));
        if (full.generation(h, k) !== full.generation(hashes.at(-1), k)) differing++;
      }
    }
    expect(differing, 'the configs do differ').toBeGreaterThan(10);
  });
});
