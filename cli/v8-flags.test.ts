// The V8 flags `mailplus relay` and `mailplus operator` re-execute themselves with (bin/v8-flags.js): pure selection.
import { describe, expect, it } from 'vitest';
import { operatorEnv, operatorV8Flags, relayV8Flags } from '../bin/v8-flags.js';

const GiB = 1024 ** 3;
const host = { execArgv: [], nodeOptions: undefined, totalMemory: 24 * GiB };

describe('relay V8 flags', () => {
  it('without a memory limit: 4 MB semi-spaces, the old-generation limit of the default pod, optimizing on the main thread', () => {
    expect(relayV8Flags({ ...host, constrainedMemory: 0 })).toEqual([
      '--max-semi-space-size=4',
      '--max-old-space-size=256',
      '--no-concurrent-recompilation',
    ]);
    // what process.constrainedMemory() gives under a cgroup without a limit (cgroup v2 "max", v1)
    expect(relayV8Flags({ ...host, constrainedMemory: 2 ** 64 })).toContain('--max-old-space-size=256');
    expect(relayV8Flags({ ...host, constrainedMemory: 2 ** 63 })).toContain('--max-old-space-size=256');
  });

  it('under a memory limit (a pod): Node sizes the old generation from it, the old-generation limit is not set', () => {
    expect(relayV8Flags({ ...host, constrainedMemory: 512 * 1024 ** 2 })).toEqual([
      '--max-semi-space-size=4',
      '--no-concurrent-recompilation',
    ]);
    expect(relayV8Flags({ ...host, constrainedMemory: 4 * GiB })).toEqual([
      '--max-semi-space-size=4',
      '--no-concurrent-recompilation',
    ]);
  });

  it("the operator's flags win, from the command line or NODE_OPTIONS", () => {
    expect(relayV8Flags({ ...host, constrainedMemory: 0, execArgv: ['--max-old-space-size=1024'] })).toEqual([
      '--max-semi-space-size=4',
      '--no-concurrent-recompilation',
    ]);
    expect(
      relayV8Flags({
        ...host,
        constrainedMemory: 0,
        nodeOptions: '--max-semi-space-size=16 --max-heap-size=2048',
      }),
    ).toEqual(['--no-concurrent-recompilation']);
    expect(
      relayV8Flags({ ...host, constrainedMemory: 0, execArgv: ['--max-old-space-size-percentage=50'] }),
    ).toEqual(['--max-semi-space-size=4', '--no-concurrent-recompilation']);
    // V8 flags are not allowed in NODE_OPTIONS: the command line is where an operator turns it back on
    expect(
      relayV8Flags({
        ...host,
        constrainedMemory: 0,
        execArgv: ['--max-semi-space-size=8', '--max-old-space-size=512', '--concurrent-recompilation'],
      }),
    ).toEqual([]);
  });

  it('once re-executed with its own flags, the process is not re-executed again', () => {
    const first = relayV8Flags({ ...host, constrainedMemory: 0 });
    expect(relayV8Flags({ ...host, constrainedMemory: 0, execArgv: first })).toEqual([]);
  });
});

describe('operator V8 flags', () => {
  it('4 MB semi-spaces, optimizing on the main thread, the old generation grown by 20 %; no old-generation limit (its heap grows with the fleet)', () => {
    expect(operatorV8Flags({ execArgv: [], nodeOptions: undefined })).toEqual([
      '--max-semi-space-size=4',
      '--no-concurrent-recompilation',
      '--heap-growing-percent=20',
    ]);
  });

  it("the operator's own flags win, and a re-executed process is not re-executed again", () => {
    expect(
      operatorV8Flags({
        execArgv: ['--concurrent-recompilation', '--heap-growing-percent=50'],
        nodeOptions: '--max-semi-space-size=16',
      }),
    ).toEqual([]);
    expect(operatorV8Flags({ execArgv: ['--concurrent-recompilation'], nodeOptions: undefined })).toEqual([
      '--max-semi-space-size=4',
      '--heap-growing-percent=20',
    ]);
    const first = operatorV8Flags({ execArgv: [], nodeOptions: undefined });
    expect(operatorV8Flags({ execArgv: first, nodeOptions: undefined })).toEqual([]);
  });
});

describe('operator environment', () => {
  const ours = 'glibc.malloc.trim_threshold=131072:glibc.malloc.mmap_threshold=131072';

  it("fixes glibc's malloc trim and mmap thresholds at 128 KiB", () => {
    expect(operatorEnv({})).toEqual({ GLIBC_TUNABLES: ours });
    expect(operatorEnv({ GLIBC_TUNABLES: '' })).toEqual({ GLIBC_TUNABLES: ours });
  });

  it('keeps tunables the operator set, adding only the missing ones; a re-executed process adds nothing', () => {
    expect(operatorEnv({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' })).toEqual({
      GLIBC_TUNABLES: `glibc.malloc.arena_max=2:${ours}`,
    });
    expect(operatorEnv({ GLIBC_TUNABLES: 'glibc.malloc.trim_threshold=0' })).toEqual({
      GLIBC_TUNABLES: 'glibc.malloc.trim_threshold=0:glibc.malloc.mmap_threshold=131072',
    });
    expect(operatorEnv(operatorEnv({}))).toEqual({});
  });
});
