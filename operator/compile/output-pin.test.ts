// Pins the compile + budgets + shard plan output of a fixed fleet byte for byte, so that
// performance work on these steps cannot change what is published: the config hash, the sha256 of
// the rendered JSON (key order and layout included), the statuses and every planned shard.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { unionHash } from '../../contract/config/hash.ts';
import { fleet, mailRoute, tenantPolicy } from '../../test/support/fleet.ts';
import { encodeRelayConfig } from '../publish/configmap.ts';
import { planPublish } from '../publish/sharded.ts';
import { DEFAULT_TENANT_BUDGETS, enforceTenantBudgets } from './budgets.ts';
import { compile, renderRelayConfig } from './compile.ts';

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

function fixedInput() {
  const f = fleet(3000, 60, 3);
  // a few of everything else the compile decides: a conflict, a foreign domain, an invalid route,
  // a route without a policy, and a tenant over its route budget (held back)
  f.mailRoutes.push(mailRoute('tenant-1', 'shadowed', ['user1@t1.example.com']));
  f.mailRoutes.push(mailRoute('tenant-2', 'foreign', ['*@t3.example.com']));
  f.mailRoutes.push(mailRoute('tenant-4', 'invalid', ['not a pattern']));
  f.mailRoutes.push(mailRoute('orphan', 'route', ['*@orphan.example.com']));
  f.tenantPolicies.push(tenantPolicy('big', ['big.example.com']));
  for (let i = 0; i < 60; i++) f.mailRoutes.push(mailRoute('big', `r${i}`, [`u${i}@big.example.com`]));
  return { ...f, services: [] };
}

describe('compile output is pinned', () => {
  it('a fixed fleet compiles, is budgeted and sharded to exactly these bytes', () => {
    const compiled = compile(fixedInput(), { now: Date.UTC(2026, 0, 1) });
    const budgeted = enforceTenantBudgets(compiled, { ...DEFAULT_TENANT_BUDGETS, maxRoutes: 55 }, undefined);
    const plan = planPublish({ config: budgeted.config, base: 'cfg', shards: 4, previous: new Map() });
    const statuses = JSON.stringify([...budgeted.statuses]);
    // the sharded operator's compile: the same config and statuses, its hash the union hash
    const union = compile(fixedInput(), { now: Date.UTC(2026, 0, 1), hash: 'union' });
    const unionBudgeted = enforceTenantBudgets(
      union,
      { ...DEFAULT_TENANT_BUDGETS, maxRoutes: 55 },
      undefined,
    );
    expect(renderRelayConfig({ ...union.config, hash: '' })).toBe(
      renderRelayConfig({ ...compiled.config, hash: '' }),
    );
    expect(unionBudgeted.config.hash).toBe(unionHash(budgeted.config));
    expect({
      unionHash: union.config.hash,
      hash: compiled.config.hash,
      rendered: sha(renderRelayConfig(compiled.config)),
      statuses: sha(JSON.stringify([...compiled.statuses])),
      budgetedHash: budgeted.config.hash,
      budgetedStatuses: sha(statuses),
      overBudget: [...budgeted.overBudget.keys()],
      shards: plan.map((d) => [d.name, d.config.hash, sha(renderRelayConfig(d.config)), d.payload?.bytes]),
      single: encodeRelayConfig(budgeted.config).bytes,
    }).toMatchInlineSnapshot(`
      {
        "budgetedHash": "sha256:5d4aca0e822f88aa1f3fadaf83bd2c826aec90aa957bd03126cfc27337538136",
        "budgetedStatuses": "1721ff96260d4707f3610b2d2c31f1178b977b5a458bb8415d42641f3b6a4bb0",
        "hash": "sha256:db993728ef3a4ecfbb36ac0db9f4d75100941a48c39edd4c965ad9c00e56362e",
        "overBudget": [
          "big",
        ],
        "rendered": "fc60f6aee695184a8cbe63e549e396b2d8ebb31f2312a49b0aab1c15a0cfd0d6",
        "shards": [
          [
            "cfg-shard-0",
            "sha256:ac84e99605921e026c8baf21cdee83e3b7c013adf0acbe8f5770a248786d61da",
            "2eb6fca1ce48faaca9c25e6571270123d443bf707de9591e044ef3a1a5071c00",
            12894,
          ],
          [
            "cfg-shard-1",
            "sha256:37f6b49d6e0d7fb49365dd002ea624524b0b26cc74ef9b44468a0b969d08ef47",
            "729a3e5f688a096d1d7e6de13758b0606fa186b1889902a925255717ae78e1c8",
            13123,
          ],
          [
            "cfg-shard-2",
            "sha256:37549223fe4390d940ff7ea85c20788553694a44ddaaf9482b8e734cc19fe830",
            "6eda823f6ea8e5c9e9d581aad8f483089aba980e0f8f8537cea2c516743488c6",
            12874,
          ],
          [
            "cfg-shard-3",
            "sha256:1bf07cac5cc82dc5473dc0cd667852cf0b3a99b9a6a04c1cad5b7c2a74b34097",
            "72822440d98b29127bab6c860f6a6689987ec85c1b7f2c4725a08886023a87f0",
            12991,
          ],
        ],
        "single": 49166,
        "statuses": "dd3ab5e79b0966219ad25b92bdd2f1edb3aad664fbb1a9cfcab9f76fa50ffc48",
        "unionHash": "sha256:e81df345190203ea7bcdba516bd220761fb6effd79722b8e639824e429f905c4",
      }
    `);
  });
});
