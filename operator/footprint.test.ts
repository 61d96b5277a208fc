// What the operator's process loads besides its own code: a module loaded is memory held for good.
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

describe('operator process footprint', () => {
  it("loading `mailplus operator` does not load Node's undici (fetch, WebSocket: nothing here uses them)", () => {
    const entry = new URL('../cli/commands/operator.ts', import.meta.url).href;
    const out = execFileSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `await import(${JSON.stringify(entry)});
         process.stdout.write(JSON.stringify(process.moduleLoadList.filter((m) => /undici/.test(m))));`,
      ],
      { encoding: 'utf8', timeout: 30_000 },
    );
    expect(JSON.parse(out)).toEqual([]);
  });
});
