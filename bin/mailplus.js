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
// Long-running commands run with V8 flags sized for them, the operator also with malloc settings
// (bin/v8-flags.js says which and why). Both take effect when the process starts (v8.setFlagsFromString
// is too late), so the process re-executes itself once with them: same PID, same stdio, nothing has
// run yet. Flags given by the
// operator (command line or NODE_OPTIONS) win; without process.execve (Windows) it runs as is.
const command = process.argv[2];
if (
  (command === 'relay' || command === 'dev' || command === 'operator') &&
  typeof process.execve === 'function'
) {
  const { relayV8Flags, operatorV8Flags, operatorEnv } = await import('./v8-flags.js');
  const known = { execArgv: process.execArgv, nodeOptions: process.env.NODE_OPTIONS };
  const flags =
    command === 'operator'
      ? operatorV8Flags(known)
      : relayV8Flags({
          ...known,
          constrainedMemory: process.constrainedMemory?.() ?? 0,
          totalMemory: (await import('node:os')).totalmem(),
        });
  const env = command === 'operator' ? operatorEnv(process.env) : {};
  if (flags.length > 0 || Object.keys(env).length > 0) {
    const { fileURLToPath } = await import('node:url');
    process.execve(
      process.execPath,
      [
        process.execPath,
        ...flags,
        ...process.execArgv,
        fileURLToPath(import.meta.url),
        ...process.argv.slice(2),
      ],
      { ...process.env, ...env },
    );
  }
}
// On-disk compile cache (NODE_COMPILE_CACHE, else <tmpdir>/node-compile-cache; best effort, a
// read-only file system just disables it): besides V8 code it keeps the type-stripped source of
// every .ts module, so a warm start does not load Node's TypeScript stripper (a WebAssembly module
// whose memory stays resident): measured on `mailplus relay`, RSS 113 -> 87 MB at idle.
const { enableCompileCache } = await import('node:module');
enableCompileCache?.();
const { main } = await import('../cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
