#!/usr/bin/env node
// Fills Node's compile cache (NODE_COMPILE_CACHE, else <tmpdir>/node-compile-cache) with every
// module of the CLI, for each set of V8 flags bin/mailplus.js runs a command with. The image does it
// at build time (Dockerfile), so no pod type-strips TypeScript: Node's stripper is a WebAssembly
// module that stays resident, ~28 MB of RSS.
// - Node keeps one cache per set of V8 flags that change the code it compiles (the flag hash in
//   the cache's directory name): the operator's --heap-growing-percent is one of them, and a cache
//   filled without it left every operator pod cold.
// - Modules a command loads only on the way (the relay's Kubernetes client in ConfigMap mode, its
//   trace store) need the cache as much as the ones loaded at start: every module is loaded here.
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { operatorV8Flags, relayV8Flags } from './v8-flags.js';

const root = new URL('../', import.meta.url);
/** Every module the image ships: the TypeScript of these directories but tests and test helpers (.dockerignore). */
const modules = ['cli', 'contract', 'operator', 'platform', 'relay'].flatMap((dir) =>
  readdirSync(new URL(dir, root), { recursive: true, encoding: 'utf8' })
    .map((f) => f.split('\\').join('/'))
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts') && !f.endsWith('.d.ts'))
    .filter((f) => !f.split('/').includes('testing'))
    .map((f) => new URL(`${dir}/${f}`, root).href),
);
const none = { execArgv: [], nodeOptions: undefined };
const flagSets = [
  relayV8Flags({ ...none, constrainedMemory: 0, totalMemory: 1 }), // relay, dev: no memory limit
  relayV8Flags({ ...none, constrainedMemory: 1, totalMemory: 2 }), // relay, dev: a pod's limit
  operatorV8Flags(none),
  [], // the other commands
];
const seen = new Set();
for (const flags of flagSets) {
  if (seen.has(flags.join(' '))) continue;
  seen.add(flags.join(' '));
  // the cache is written when the process exits
  execFileSync(
    process.execPath,
    [
      ...flags,
      '--input-type=module',
      '-e',
      `(await import('node:module')).enableCompileCache(); for (const m of ${JSON.stringify(modules)}) await import(m);`,
    ],
    { stdio: 'inherit' },
  );
}
