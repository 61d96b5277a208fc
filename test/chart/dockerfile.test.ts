// There is no Docker engine on our machines: this test reads the Dockerfile for the properties
// that matter (multi-stage Node 24, production dependencies only, numeric non-root user, the
// mailplus entry point, OCI labels, no HEALTHCHECK), runs its compile-cache warm-up, and checks that everything the entry point
// imports at runtime ships in the image: files in the COPY'd directories that .dockerignore keeps,
// and packages from "dependencies" (never devDependencies, which `npm ci --omit=dev` leaves out).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { operatorV8Flags, relayV8Flags } from '../../bin/v8-flags.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  license: string;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};

interface Instruction {
  op: string;
  args: string;
  stage: number;
}

function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let stage = -1;
  const logical = text
    .replace(/\\\r?\n/g, ' ')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  for (const line of logical) {
    const m = /^(\w+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const op = m[1].toUpperCase();
    if (op === 'FROM') stage++;
    out.push({ op, args: m[2].replace(/\s+/g, ' '), stage });
  }
  return out;
}

const instructions = parseDockerfile(readFileSync(join(root, 'Dockerfile'), 'utf8'));
const lastStage = Math.max(...instructions.map((i) => i.stage));
const final = instructions.filter((i) => i.stage === lastStage);
const args = Object.fromEntries(
  instructions
    .filter((i) => i.op === 'ARG' && i.stage === -1)
    .map((i) => i.args.split('=') as [string, string]),
);
const expand = (s: string) => s.replace(/\$\{(\w+)\}/g, (_, n: string) => args[n] ?? `\${${n}}`);

/** A .dockerignore pattern as a regular expression over a path relative to the context root. */
function ignorePattern(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (pattern.startsWith('**/', i)) {
      re += '(?:.*/)?';
      i += 2;
    } else if (pattern.startsWith('**', i)) {
      re += '.*';
      i += 1;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** .dockerignore as Docker and buildah read it: every rule in order, the last match decides. */
const ignoreRules = readFileSync(join(root, '.dockerignore'), 'utf8')
  .split(/\r?\n/)
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'))
  .map((l) =>
    l.startsWith('!') ? { keep: true, re: ignorePattern(l.slice(1)) } : { keep: false, re: ignorePattern(l) },
  );

function inBuildContext(rel: string): boolean {
  let keep = true;
  for (const rule of ignoreRules) if (rule.re.test(rel)) keep = rule.keep;
  return keep;
}

/** In the image: under a COPY source of the final stage, and in the build context .dockerignore leaves. */
function shipped(file: string): boolean {
  const rel = relative(root, file).split('\\').join('/');
  const copied = final
    .filter((i) => i.op === 'COPY' && !i.args.startsWith('--from'))
    .flatMap((i) => i.args.split(' ').slice(0, -1));
  const inCopy = copied.some((src) => rel === src || rel.startsWith(`${src.replace(/\/$/, '')}/`));
  return inCopy && inBuildContext(rel);
}

const IMPORT = /(?:from\s+|import\s*\(\s*|import\s+)'([^']+)'/g;

/** Follows static and literal dynamic imports from the entry point; returns files and packages. */
function runtimeClosure(entry: string): { files: Set<string>; packages: Set<string>; missing: string[] } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const missing: string[] = [];
  const queue = [entry];
  while (queue.length > 0) {
    const file = queue.pop() as string;
    if (files.has(file)) continue;
    files.add(file);
    const text = readFileSync(file, 'utf8').replace(/^\s*\/\/.*$/gm, '');
    for (const m of text.matchAll(IMPORT)) {
      const spec = m[1];
      if (spec.startsWith('node:') || builtinModules.includes(spec) || spec.startsWith('/')) continue;
      if (spec.startsWith('.')) {
        const target = resolve(dirname(file), spec);
        if (!existsSync(target)) missing.push(`${relative(root, file)} imports ${spec}`);
        else if (/\.(ts|js|mjs)$/.test(target)) queue.push(target);
        continue;
      }
      const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0];
      packages.add(name);
    }
  }
  return { files, packages, missing };
}

describe('Dockerfile', () => {
  it('is multi-stage on a Node 24 base image', () => {
    const froms = instructions.filter((i) => i.op === 'FROM').map((i) => expand(i.args));
    expect(froms.length).toBeGreaterThanOrEqual(2);
    for (const f of froms) expect(f).toMatch(/^node:24[-.\w]*( AS \w+)?$/i);
  });

  it('installs production dependencies only, from the lock file', () => {
    const runs = instructions.filter((i) => i.op === 'RUN').map((i) => i.args);
    expect(runs.some((r) => /npm ci\b/.test(r) && /--omit=dev\b/.test(r))).toBe(true);
    expect(runs.some((r) => /npm (install|i)\b/.test(r))).toBe(false);
  });

  it('runs as a numeric non-root user in the final stage', () => {
    const user = final.filter((i) => i.op === 'USER').pop()?.args;
    expect(user).toMatch(/^\d+(:\d+)?$/);
    expect(Number(user?.split(':')[0])).toBeGreaterThan(0);
  });

  it('has the mailplus entry point and no HEALTHCHECK (Kubernetes probes instead)', () => {
    expect(final.find((i) => i.op === 'ENTRYPOINT')?.args).toBe('["node", "bin/mailplus.js"]');
    expect(instructions.some((i) => i.op === 'HEALTHCHECK')).toBe(false);
  });

  it('carries OCI labels (source, licenses, version) matching package.json', () => {
    const labels = final
      .filter((i) => i.op === 'LABEL')
      .map((i) => i.args)
      .join(' ');
    expect(labels).toContain('org.opencontainers.image.source=');
    expect(labels).toContain(`org.opencontainers.image.licenses="${pkg.license}"`);
    expect(labels).toMatch(/org\.opencontainers\.image\.version="\$\{VERSION\}"/);
  });

  it('ships every file and package the entry point needs at runtime, and no devDependency', () => {
    const { files, packages, missing } = runtimeClosure(join(root, 'bin/mailplus.js'));
    expect(missing).toEqual([]);
    expect(files.size).toBeGreaterThan(20);
    const notShipped = [...files].filter((f) => !shipped(f)).map((f) => relative(root, f));
    expect(notShipped).toEqual([]);
    const notProd = [...packages].filter((p) => !(p in pkg.dependencies));
    expect(notProd, 'runtime imports of packages that --omit=dev does not install').toEqual([]);
    for (const p of packages) expect(pkg.devDependencies[p], `${p} is a devDependency`).toBeUndefined();
  });

  it('.dockerignore keeps tests and the rest of the repository out of the build context', () => {
    const ignore = readFileSync(join(root, '.dockerignore'), 'utf8');
    expect(ignore).toMatch(/^\*\*$/m);
    expect(ignore).toMatch(/^\*\*\/\*\.test\.ts$/m);
    for (const dir of ['bin', 'cli', 'operator', 'relay']) expect(ignore).toContain(`!${dir}/**`);
    expect(inBuildContext('relay/smtp/transaction.test.ts')).toBe(false);
    expect(inBuildContext('relay/upstream/testing/pki.ts')).toBe(false);
    expect(inBuildContext('test/support/processes.ts')).toBe(false);
  });

  it('every COPY source of the build context is in it (.dockerignore does not filter it out)', () => {
    const sources = instructions
      .filter((i) => i.op === 'COPY' && !i.args.startsWith('--from'))
      .flatMap((i) => i.args.split(' ').slice(0, -1))
      .map((src) => src.replace(/\*$/, '').replace(/\/$/, ''));
    const filtered = sources.filter((src) => {
      const probe = existsSync(join(root, src, 'package.json')) ? `${src}/package.json` : src;
      return !inBuildContext(probe) && !inBuildContext(`${src}/x.ts`);
    });
    expect(
      filtered,
      'COPY sources the build context leaves out (add them to .dockerignore as !dir/**)',
    ).toEqual([]);
  });

  it("warms Node's compile cache for every command as it runs (its V8 flags): no process type-strips", () => {
    const env = final.findIndex((i) => i.op === 'ENV' && i.args.startsWith('NODE_COMPILE_CACHE='));
    expect(env, 'ENV NODE_COMPILE_CACHE in the final stage').toBeGreaterThan(-1);
    const warm = final.slice(env).find((i) => i.op === 'RUN');
    expect(warm).toBeDefined();
    const cache = mkdtempSync(join(tmpdir(), 'mailplus-compile-cache-'));
    try {
      // the warm-up as the image build runs it, with this Node 24 first on the PATH
      const PATH = `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ''}`;
      execFileSync('sh', ['-c', warm?.args ?? 'false'], {
        cwd: root,
        env: { ...process.env, PATH, NODE_COMPILE_CACHE: cache },
        stdio: 'pipe',
        timeout: 120_000,
      });
      const none = { execArgv: [], nodeOptions: undefined };
      const at = (m: string) => pathToFileURL(join(root, m)).href;
      // what bin/mailplus.js loads, the command's module, and what the command loads on the way
      const relay = ['cli/commands/relay.ts', 'platform/kube/client.ts', 'relay/config/configmap-set.ts'];
      const processes: Array<[string, string[], string[]]> = [
        ['relay', relayV8Flags({ ...none, constrainedMemory: 0, totalMemory: 1 }), relay],
        ['relay in a pod', relayV8Flags({ ...none, constrainedMemory: 1, totalMemory: 2 }), relay],
        ['operator', operatorV8Flags(none), ['cli/commands/operator.ts']],
      ];
      for (const [name, flags, modules] of processes) {
        const urls = ['cli/main.ts', ...modules].map(at);
        const stripped = execFileSync(
          process.execPath,
          [
            ...flags,
            '--input-type=module',
            '-e',
            `(await import('node:module')).enableCompileCache();
             for (const m of ${JSON.stringify(urls)}) await import(m);
             process.stdout.write(String(process.moduleLoadList.some((m) => m.includes('amaro'))));`,
          ],
          { env: { ...process.env, NODE_COMPILE_CACHE: cache }, encoding: 'utf8', timeout: 60_000 },
        );
        expect(stripped, `${name} (${flags.join(' ')}) loads Node's TypeScript stripper`).toBe('false');
      }
    } finally {
      rmSync(cache, { recursive: true, force: true });
    }
  });
});
