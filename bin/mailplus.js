#!/usr/bin/env node
// The CLI is TypeScript run by Node's type stripping, which needs Node 24 (our runtime).
// Fail with a clear message instead of a syntax error on older Node.
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  process.stderr.write(
    `mailplus needs Node.js 24 or newer (this is ${process.version}).\n` +
      'From a checkout, run it with the pinned Node 24: npm run mailplus -- <command> ...\n',
  );
  process.exit(2);
}
const { main } = await import('../cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
