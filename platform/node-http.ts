// Node's http module, taken without an ES import. `import … from 'node:http'` makes Node 24 build
// the module's ES namespace, which reads every export, and the lazy `WebSocket`, `CloseEvent` and
// `MessageEvent` exports load undici (Node's fetch and WebSocket), which the operator never uses:
// about 13 MB more RSS (operator/footprint.test.ts). The relay's SMTP libraries import node:http
// themselves, so there it makes no difference.
// process.getBuiltinModule returns the CommonJS exports, whose lazy getters stay untouched.
export const http: typeof import('node:http') = process.getBuiltinModule('node:http');
