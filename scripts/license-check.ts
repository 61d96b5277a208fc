// Fails when a production dependency (what the image ships) has a license outside the allow-list
// or an unknown one. SPDX expressions: "A OR B" passes if either is allowed, "A AND B" if both are.
// Usage: node scripts/license-check.ts   (run in npm test)
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { productionPackages } from './third-party-notices.ts';

/** Permissive licenses compatible with shipping Mail-Plus (Apache-2.0) in a container image. */
export const ALLOWED = new Set([
  'MIT',
  'MIT-0',
  'ISC',
  'Apache-2.0',
  'BSD-2-Clause',
  'BSD-3-Clause',
  '0BSD',
  'BlueOak-1.0.0',
  'Unlicense',
  'CC0-1.0',
  // argparse (via js-yaml): the Python Software Foundation license, permissive and OSI-approved
  'PSF-2.0',
]);

/** True when the SPDX expression is satisfiable with allowed licenses only. */
export function licenseAllowed(expression: string, allowed: ReadonlySet<string> = ALLOWED): boolean {
  const e = expression.trim();
  if (e === '') return false;
  // split top-level OR, then AND (parentheses only group; nesting beyond one level is rare in npm)
  const stripped = e.replace(/^\((.*)\)$/, '$1');
  const alternatives = stripped.split(/\s+OR\s+/i);
  return alternatives.some((alt) =>
    alt
      .replace(/[()]/g, '')
      .split(/\s+AND\s+/i)
      .every((id) => allowed.has(id.trim())),
  );
}

export function checkLicenses(lock: Parameters<typeof productionPackages>[0]): string[] {
  return productionPackages(lock)
    .filter((p) => !licenseAllowed(p.license))
    .map((p) => `${p.name}@${p.version} (${p.path}): license "${p.license}" is not on the allow-list`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..');
  const problems = checkLicenses(JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')));
  if (problems.length) {
    process.stderr.write(
      `license check failed:\n  ${problems.join('\n  ')}\nallowed: ${[...ALLOWED].join(', ')}\n`,
    );
    process.exit(1);
  }
  process.stdout.write(
    `license check: ${productionPackages(JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8'))).length} production packages, all allowed\n`,
  );
}
