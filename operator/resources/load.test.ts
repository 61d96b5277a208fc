import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadResourceFiles, parseResourceText } from './load.ts';
import { formatResourceError } from './types.ts';

const TP = `apiVersion: mailplus.io/v1alpha1
kind: TenantPolicy
metadata: {name: p}
spec: {domains: [a.org]}
`;

describe('parseResourceText', () => {
  it('reads multi-document YAML, ignores foreign kinds, keeps Services, defaults the namespace', () => {
    const text = `${TP}---
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: app}
---
apiVersion: v1
kind: Service
metadata: {name: mx, namespace: a}
spec: {clusterIP: 10.0.0.1, ports: [{port: 25}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c}
---
`;
    const r = parseResourceText(text, 'f.yaml');
    expect(r.errors).toEqual([]);
    expect(r.resources.map((x) => [x.kind, x.namespace, x.name, x.document])).toEqual([
      ['TenantPolicy', 'default', 'p', 0],
      ['Service', 'a', 'mx', 2],
    ]);
    expect(r.resources[0].file).toBe('f.yaml');
  });
  it('reports YAML syntax errors with file and line', () => {
    const r = parseResourceText(`${TP}---\nkind: MailRoute\nspec: [unclosed\n`, 'bad.yaml');
    expect(r.errors).toHaveLength(1);
    expect(formatResourceError(r.errors[0])).toMatch(/^bad\.yaml:\d+:\d+: YAML syntax error: /);
    expect(r.resources).toHaveLength(1);
  });
  it('rejects other mailplus.io versions', () => {
    const r = parseResourceText(TP.replace('v1alpha1', 'v1'), 'f.yaml');
    expect(r.errors.map(formatResourceError)).toEqual([
      'f.yaml: TenantPolicy default/p: apiVersion: unsupported version mailplus.io/v1; use mailplus.io/v1alpha1',
    ]);
  });
  it('refuses documents that cannot be a resource or look like a misspelt Mail-Plus one', () => {
    const text = `${TP}---
apiVersion: mailplus.io/v1alpha1
kind: MailRoutes
metadata: {name: r}
---
kind: TenantPolicy
metadata: {name: q}
---
apiVersion: v1
kind: mailroute
metadata: {name: s}
---
apiVersion: example.com/v1
kind: MailRoute
metadata: {name: t}
---
metadata: {name: nothing}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: fine}
`;
    const r = parseResourceText(text, 'f.yaml');
    expect(r.resources.map((x) => x.name)).toEqual(['p']);
    expect(r.errors.map(formatResourceError)).toEqual([
      'f.yaml: document 2: kind: unknown kind MailRoutes in mailplus.io/v1alpha1; did you mean MailRoute?',
      'f.yaml: document 3: apiVersion: missing for kind TenantPolicy; use mailplus.io/v1alpha1',
      'f.yaml: document 4: kind: unknown kind mailroute; did you mean MailRoute?',
      'f.yaml: document 5: apiVersion: example.com/v1 has no kind MailRoute; use mailplus.io/v1alpha1',
      'f.yaml: document 6: kind: missing: every document needs kind (e.g. MailRoute, TenantPolicy)',
    ]);
  });
  it('reads JSON and List objects', () => {
    const list = {
      apiVersion: 'v1',
      kind: 'List',
      items: [
        {
          apiVersion: 'mailplus.io/v1alpha1',
          kind: 'MailRoute',
          metadata: { name: 'r', namespace: 'n' },
          spec: {},
        },
      ],
    };
    expect(parseResourceText(JSON.stringify(list), 'l.json').resources.map((x) => x.name)).toEqual(['r']);
  });
});

describe('loadResourceFiles', () => {
  it('walks directories recursively in sorted order and reports missing paths and duplicates', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mailplus-load-'));
    await mkdir(join(dir, 'sub'));
    await writeFile(join(dir, 'b.yaml'), TP.replace('name: p', 'name: b'));
    await writeFile(join(dir, 'a.yml'), TP.replace('name: p', 'name: a'));
    await writeFile(
      join(dir, 'sub', 'c.json'),
      JSON.stringify({
        apiVersion: 'mailplus.io/v1alpha1',
        kind: 'TenantPolicy',
        metadata: { name: 'c' },
        spec: {},
      }),
    );
    await writeFile(join(dir, 'notes.txt'), 'ignored');
    await writeFile(join(dir, 'sub', 'dup.yaml'), TP.replace('name: p', 'name: a'));
    const r = await loadResourceFiles([dir, join(dir, 'missing.yaml')]);
    expect(r.resources.map((x) => x.name)).toEqual(['a', 'b', 'c']);
    expect(r.errors.map((e) => e.message)).toEqual([
      'cannot read: ENOENT',
      expect.stringMatching(/^defined more than once \(also in .*a\.yml, document 1\); remove one$/),
    ]);
  });
});
