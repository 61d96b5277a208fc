// Generates THIRD_PARTY_NOTICES from package-lock.json: every package shipped in the image (the
// production dependency tree: lockfile entries not marked dev/devOptional) with name, version,
// license (SPDX, from the lockfile) and the copyright line of its LICENSE file in node_modules,
// followed by the license texts. Deterministic (sorted, no timestamps).
// Usage: node scripts/third-party-notices.ts [--check]
// --check writes nothing and exits 1 when the committed file is stale (run in npm test).
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const NOTICES_FILE = 'THIRD_PARTY_NOTICES';

export interface Component {
  name: string;
  version: string;
  license: string;
  /** Lockfile path ('node_modules/a/node_modules/b'). */
  path: string;
  copyright: string;
  licenseText: string;
}

interface LockEntry {
  name?: string;
  version?: string;
  license?: string;
  dev?: boolean;
  devOptional?: boolean;
  link?: boolean;
}

/** Production packages of a lockfile (v2/v3 `packages`), without the root project. */
export function productionPackages(lock: {
  packages?: Record<string, LockEntry>;
}): Array<{ name: string; version: string; license: string; path: string }> {
  const out: Array<{ name: string; version: string; license: string; path: string }> = [];
  for (const [path, e] of Object.entries(lock.packages ?? {})) {
    if (path === '' || e.dev || e.devOptional || e.link) continue;
    const name = e.name ?? path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length);
    out.push({ name, version: e.version ?? '0.0.0', license: e.license ?? 'UNKNOWN', path });
  }
  return out.sort((a, b) => cmp(a.name, b.name) || cmp(a.version, b.version) || cmp(a.path, b.path));
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * The first copyright line of a license text: "Copyright (c) 2013 Jane", "(c) Foo Inc.", "© 2020 X".
 * Not the word in license terms ("copyright license to reproduce", "the above copyright notice")
 * and not templates ("Copyright [yyyy] [name of copyright owner]").
 */
export function extractCopyright(text: string): string | undefined {
  for (const raw of text.split(/\r?\n/)) {
    const line = raw
      .trim()
      .replace(/^[#*/\s-]+/, '')
      .replace(/\s+/g, ' ');
    if (!/^(copyright\b|\(c\)|©)/i.test(line)) continue;
    if (/[[\]{}<>]/.test(line.replace(/<[^<>@\s]+@[^<>\s]+>/g, ''))) continue;
    if (/copyright (license|notice|holders?\b|owner|and license|statement)/i.test(line)) continue;
    const year = /\b(19|20)\d{2}\b/.test(line);
    // "(c) You must retain ..." is Apache-2.0 section 4(c), not a copyright line
    if (/^\(c\)/i.test(line) && !year) continue;
    if (year || /\(c\)|©/i.test(line) || /^Copyright [A-Z0-9]/.test(line)) return line;
  }
  return undefined;
}

const LICENSE_FILE = /^(licen[sc]e|copying|notice)(\.(md|txt|markdown|mit|bsd))?$/i;

function readLicenseFile(dir: string): string | undefined {
  if (!existsSync(dir)) return undefined;
  const files = readdirSync(dir)
    .filter((f) => LICENSE_FILE.test(f))
    .sort((a, b) => (/^notice/i.test(a) ? 1 : 0) - (/^notice/i.test(b) ? 1 : 0) || cmp(a, b));
  return files.length ? readFileSync(join(dir, files[0]), 'utf8') : undefined;
}

function authorOf(dir: string): string | undefined {
  try {
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
      author?: string | { name?: string };
    };
    const a = typeof pkg.author === 'string' ? pkg.author : pkg.author?.name;
    return (
      a
        ?.replace(/\s*<[^>]*>/g, '')
        .replace(/\s*\([^)]*\)/g, '')
        .trim() || undefined
    );
  } catch {
    return undefined;
  }
}

export function collectComponents(projectRoot = root): Component[] {
  const lock = JSON.parse(readFileSync(join(projectRoot, 'package-lock.json'), 'utf8'));
  return productionPackages(lock).map((p) => {
    const dir = join(projectRoot, p.path);
    const text = readLicenseFile(dir);
    const notice = ['NOTICE', 'NOTICE.md', 'NOTICE.txt'].map((f) => join(dir, f)).find((f) => existsSync(f));
    const author = authorOf(dir);
    return {
      ...p,
      copyright:
        (text && extractCopyright(text)) ??
        (notice && extractCopyright(readFileSync(notice, 'utf8'))) ??
        `no copyright line in its license file${author ? `; author per package.json: ${author}` : ''}`,
      licenseText:
        text?.replace(/\r\n/g, '\n').trim() ??
        `(the package ships no license file; its package.json declares ${p.license})`,
    };
  });
}

/** The notices document. Identical license texts are printed once and referenced. */
export function renderNotices(projectName: string, components: Component[]): string {
  const lines: string[] = [
    `THIRD-PARTY NOTICES for ${projectName}`,
    '',
    `${projectName} ships the following open-source components (its production npm dependencies,`,
    'from package-lock.json). Generated by scripts/third-party-notices.ts; do not edit by hand.',
    '',
  ];
  const texts = new Map<string, number>();
  const refOf = (t: string) => {
    let n = texts.get(t);
    if (n === undefined) {
      n = texts.size + 1;
      texts.set(t, n);
    }
    return n;
  };
  const seen = new Set<string>();
  for (const c of components) {
    const key = `${c.name}@${c.version}`;
    if (seen.has(key)) continue; // the same version installed at two paths
    seen.add(key);
    lines.push(
      `${key}`,
      `  License: ${c.license}`,
      `  ${c.copyright}`,
      `  License text: [${refOf(c.licenseText)}]`,
      '',
    );
  }
  lines.push('='.repeat(78), 'LICENSE TEXTS', '='.repeat(78), '');
  for (const [t, n] of texts) lines.push(`[${n}]`, '', t, '', '-'.repeat(78), '');
  return `${lines.join('\n').trimEnd()}\n`;
}

export function generate(projectRoot = root): string {
  const pkg = JSON.parse(readFileSync(join(projectRoot, 'package.json'), 'utf8')) as {
    name: string;
    version: string;
  };
  return renderNotices(`${pkg.name} ${pkg.version}`, collectComponents(projectRoot));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const check = process.argv.includes('--check');
  const text = generate();
  const file = join(root, NOTICES_FILE);
  const current = existsSync(file) ? readFileSync(file, 'utf8') : '';
  if (check) {
    if (current !== text) {
      process.stderr.write(
        `${NOTICES_FILE} is stale: run node scripts/third-party-notices.ts and commit it\n`,
      );
      process.exit(1);
    }
  } else if (current !== text) {
    writeFileSync(file, text);
    process.stdout.write(`wrote ${NOTICES_FILE}\n`);
  }
}
