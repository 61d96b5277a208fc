// The layering of docs/architecture.md, checked on the source: contract at the bottom (depends on
// nothing of ours), platform on contract, relay and operator side by side on both, cli on top.
// Reads every production .ts file's import and export-from statements, type-only ones included
// (a type import is still a dependency a maintainer has to follow).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const LAYERS = ['contract', 'platform', 'operator', 'relay', 'cli'] as const;
type Layer = (typeof LAYERS)[number];

/** Which layers each layer may import from (besides node: builtins and npm packages). */
const ALLOWED: Record<Layer, readonly Layer[]> = {
  contract: ['contract'],
  platform: ['platform', 'contract'],
  operator: ['operator', 'platform', 'contract'],
  relay: ['relay', 'platform', 'contract'],
  cli: ['cli', 'operator', 'relay', 'platform', 'contract'],
};

function isProduction(rel: string): boolean {
  return rel.endsWith('.ts') && !rel.endsWith('.test.ts') && !rel.split('/').includes('testing');
}

function walk(dir: string, out: string[]): string[] {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) walk(full, out);
    else out.push(path.relative(ROOT, full).split(path.sep).join('/'));
  }
  return out;
}

function productionFiles(): string[] {
  const files: string[] = [];
  for (const layer of LAYERS) {
    if (fs.existsSync(path.join(ROOT, layer))) walk(path.join(ROOT, layer), files);
  }
  return files.filter(isProduction).sort();
}

/** Comments removed (strings kept), so a `from '...'` in a comment is not read as an import. */
function stripComments(source: string): string {
  return source.replace(
    /\/\*[\s\S]*?\*\/|(^|[^:'"`\\])\/\/.*$/gm,
    (_m, pre: string | undefined) => pre ?? '',
  );
}

/** The module specifiers a file imports or re-exports, type-only and dynamic imports included. */
function importSpecifiers(source: string): string[] {
  const text = stripComments(source);
  const specs: string[] = [];
  const patterns = [
    /^\s*(?:import|export)\b[^;'"`]*?\bfrom\s*['"]([^'"]+)['"]/gms,
    /^\s*import\s*['"]([^'"]+)['"]/gm,
    /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
  ];
  for (const re of patterns) for (const m of text.matchAll(re)) specs.push(m[1]);
  return specs;
}

interface Edge {
  from: string;
  to: string;
}

function edges(files: string[]): Edge[] {
  const out: Edge[] = [];
  for (const file of files) {
    for (const spec of importSpecifiers(fs.readFileSync(path.join(ROOT, file), 'utf8'))) {
      if (!spec.startsWith('.')) continue;
      const to = path.posix.normalize(path.posix.join(path.posix.dirname(file), spec));
      out.push({ from: file, to });
    }
  }
  return out;
}

const layerOf = (file: string) => file.split('/')[0];

/** Import cycles (strongly connected components with more than one file, or a self-import). */
function cycles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const indexOf = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string) => {
    indexOf.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!indexOf.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, indexOf.get(w)!));
    }
    if (low.get(v) !== indexOf.get(v)) return;
    const scc: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      scc.push(w);
    } while (w !== v);
    if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) found.push(scc.sort());
  };
  for (const v of graph.keys()) if (!indexOf.has(v)) visit(v);
  return found;
}

describe('layering', () => {
  const files = productionFiles();
  const all = edges(files);

  it('reads imports of every kind', () => {
    const source = [
      "import a from './a.ts';",
      "import type { B } from '../b.ts';",
      "import {\n  c,\n  type D,\n} from './c.ts';",
      "export { e } from './e.ts';",
      "export type * from './f.ts';",
      "import './g.ts';",
      "const h = await import('./h.ts');",
      "// import x from './commented.ts';",
      "/* export { y } from './block.ts'; */",
    ].join('\n');
    expect(importSpecifiers(source)).toEqual(
      expect.arrayContaining(['./a.ts', '../b.ts', './c.ts', './e.ts', './f.ts', './g.ts', './h.ts']),
    );
    expect(importSpecifiers(source)).toHaveLength(7);
    expect(
      cycles(
        new Map([
          ['a', ['b']],
          ['b', ['a']],
          ['c', ['a']],
        ]),
      ),
    ).toEqual([['a', 'b']]);
  });

  it('finds the production files and resolves every relative import to a file', () => {
    expect(files.length).toBeGreaterThan(50);
    const missing = all
      .filter((e) => !fs.existsSync(path.join(ROOT, e.to)))
      .map((e) => `${e.from} → ${e.to}`);
    expect(missing).toEqual([]);
  });

  it('imports only downward: contract ← platform ← operator, relay ← cli; never relay ↔ operator', () => {
    const ours = new Set(['bin', 'crds', 'charts', 'docs', 'examples', 'scripts', 'test', ...LAYERS]);
    const wrong = all
      .filter((e) => {
        const from = layerOf(e.from) as Layer;
        const to = layerOf(e.to);
        if (to.startsWith('..') || to === 'node_modules') return false;
        return ours.has(to) && !(ALLOWED[from] as readonly string[]).includes(to);
      })
      .map((e) => `${e.from} → ${e.to}`);
    expect(wrong).toEqual([]);
  });

  it('has no import cycles among production files, type-only imports included', () => {
    const graph = new Map<string, string[]>(files.map((f) => [f, []]));
    for (const e of all) if (graph.has(e.to)) graph.get(e.from)!.push(e.to);
    expect(cycles(graph)).toEqual([]);
  });
});
