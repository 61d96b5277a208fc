// The Argo CD health check (charts/mail-plus/files/argocd-health.lua, the one copy) run by a real
// Lua interpreter against sample MailRoute/TenantPolicy objects, with only the libraries Argo CD
// opens (test/argocd/harness.lua). Needs Debian's lua5.4 (or lua5.3, or LUA=/path/to/lua): when
// none is installed this test FAILS (it is never skipped).
import { execFile, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));
const SCRIPT = `${root}charts/mail-plus/files/argocd-health.lua`;
const HARNESS = `${root}test/argocd/harness.lua`;

function findLua(): string | undefined {
  const candidates = process.env.LUA ? [process.env.LUA] : ['lua5.4', 'lua5.3', 'lua'];
  for (const c of candidates) {
    try {
      execFileSync(c, ['-v'], { stdio: 'ignore', timeout: 5_000 });
      return c;
    } catch {
      // try the next one
    }
  }
  return undefined;
}

/** A JSON value as a Lua table constructor (Argo CD hands the object to Lua the same way). */
function toLua(v: unknown): string {
  if (v === null || v === undefined) return 'nil';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `{${v.map(toLua).join(', ')}}`;
  return `{${Object.entries(v as Record<string, unknown>)
    .map(([k, x]) => `[${JSON.stringify(k)}] = ${toLua(x)}`)
    .join(', ')}}`;
}

const lua = findLua();

function health(obj: unknown): Promise<{ status: string; message: string }> {
  if (!lua) {
    throw new Error(
      'no Lua interpreter (lua5.4, lua5.3 or lua) on PATH: run the CI install script (scripts/ci-deps.sh) ' +
        'or `apt-get install -y lua5.4`, or set LUA=/path/to/lua',
    );
  }
  return new Promise((resolve, reject) => {
    const child = execFile(lua, [HARNESS, SCRIPT], { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`${lua} failed: ${err.message}\n${stderr}`));
      const [status, message = ''] = stdout.replace(/\n$/, '').split('\t');
      resolve({ status, message });
    });
    child.stdin?.end(toLua(obj));
  });
}

const cond = (type: string, status: string, reason: string, message = `${type} ${status}`, og = 3) => ({
  type,
  status,
  reason,
  message,
  observedGeneration: og,
  lastTransitionTime: '2026-01-01T00:00:00Z',
});

const route = (status?: unknown, generation = 3) => ({
  apiVersion: 'mailplus.io/v1alpha1',
  kind: 'MailRoute',
  metadata: { name: 'helpdesk', namespace: 'support', generation },
  spec: { match: { recipients: ['*@support.example.com'] } },
  ...(status === undefined ? {} : { status }),
});

describe('Argo CD health check (argocd-health.lua)', () => {
  it('has a Lua interpreter to run with', () => {
    expect(lua, 'install lua5.4 (Debian package) or set LUA').toBeTruthy();
  });

  it('no status yet -> Progressing', async () => {
    expect((await health(route())).status).toBe('Progressing');
    expect((await health(route({}))).status).toBe('Progressing');
  });

  it('observedGeneration behind metadata.generation -> Progressing, even if Ready was True', async () => {
    const r = await health(
      route({ observedGeneration: 2, conditions: [cond('Ready', 'True', 'Ready', 'ok', 2)] }),
    );
    expect(r).toEqual({
      status: 'Progressing',
      message: 'Waiting for the Mail-Plus operator to observe generation 3',
    });
  });

  it('Ready condition of an older generation -> Progressing', async () => {
    const r = await health(
      route({ observedGeneration: 3, conditions: [cond('Ready', 'True', 'Ready', 'ok', 2)] }),
    );
    expect(r.status).toBe('Progressing');
  });

  it('Ready=True -> Healthy with its message', async () => {
    const r = await health(
      route({
        observedGeneration: 3,
        conditions: [
          cond('Accepted', 'True', 'Accepted'),
          cond('Programmed', 'True', 'Programmed'),
          cond('Ready', 'True', 'Ready', 'served by 3 relays'),
        ],
      }),
    );
    expect(r).toEqual({ status: 'Healthy', message: 'served by 3 relays' });
  });

  it('Ready=False reason Pending (relays still loading) -> Progressing', async () => {
    const r = await health(
      route({
        observedGeneration: 3,
        conditions: [cond('Ready', 'False', 'Pending', '1 of 3 relays serve it')],
      }),
    );
    expect(r).toEqual({ status: 'Progressing', message: 'Pending: 1 of 3 relays serve it' });
  });

  it.each(['Conflicted', 'NoTenantPolicy', 'ServiceNotFound', 'InvalidSpec', 'NoRelays'])(
    'Ready=False reason %s -> Degraded',
    async (reason) => {
      const r = await health(
        route({ observedGeneration: 3, conditions: [cond('Ready', 'False', reason, 'why')] }),
      );
      expect(r).toEqual({ status: 'Degraded', message: `${reason}: why` });
    },
  );

  it('Ready=Unknown or no Ready condition -> Progressing', async () => {
    expect(
      (await health(route({ observedGeneration: 3, conditions: [cond('Ready', 'Unknown', 'Reconciling')] })))
        .status,
    ).toBe('Progressing');
    expect(
      (await health(route({ observedGeneration: 3, conditions: [cond('Accepted', 'True', 'Accepted')] })))
        .status,
    ).toBe('Progressing');
  });

  it('works for TenantPolicy objects and objects without metadata.generation', async () => {
    const tp = {
      apiVersion: 'mailplus.io/v1alpha1',
      kind: 'TenantPolicy',
      metadata: { name: 'support', namespace: 'support', generation: 1 },
      spec: { domains: ['support.example.com'] },
      status: {
        observedGeneration: 1,
        conditions: [cond('Ready', 'False', 'DomainClaimedByOtherTenant', 'x', 1)],
      },
    };
    expect((await health(tp)).status).toBe('Degraded');
    const noGen = {
      metadata: { name: 'x' },
      status: { observedGeneration: 0, conditions: [cond('Ready', 'True', 'Ready', 'ok', 0)] },
    };
    expect((await health(noGen)).status).toBe('Healthy');
  });

  it('docs/argocd.md shows exactly the chart file (one source of the Lua)', () => {
    const doc = readFileSync(`${root}docs/argocd.md`, 'utf8');
    const block = /```lua\n([\s\S]*?)```/.exec(doc)?.[1];
    expect(block).toBe(readFileSync(SCRIPT, 'utf8'));
  });
});
