import { statSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { watchAndPoll } from '../relay/config/file-watch.ts';

export interface PathWatcher {
  close(): void;
}

const RESOURCE_FILE = /\.(ya?ml|json)$/i;

/**
 * A signature of every resource file under the paths (name, size, mtime). Editors save by
 * rename, directories gain and lose files: comparing signatures catches all of it, and a poll
 * backs up fs.watch where it misses events.
 */
async function signature(paths: string[]): Promise<string> {
  const parts: string[] = [];
  const visit = async (p: string, top: boolean): Promise<void> => {
    let s: Awaited<ReturnType<typeof stat>>;
    try {
      s = await stat(p);
    } catch {
      parts.push(`${p}:missing`);
      return;
    }
    if (s.isDirectory()) {
      const names = (await readdir(p).catch(() => [] as string[])).sort();
      for (const n of names) if (!n.startsWith('.')) await visit(join(p, n), false);
    } else if (top || RESOURCE_FILE.test(p)) {
      parts.push(`${p}:${s.size}:${s.mtimeMs}`);
    }
  };
  for (const p of paths) await visit(p, true);
  return parts.join('\n');
}

/** Calls onChange (debounced) whenever a resource file under the paths changes. */
export function watchPaths(
  paths: string[],
  onChange: () => void,
  opts: { debounceMs?: number; pollMs?: number } = {},
): PathWatcher {
  const debounceMs = opts.debounceMs ?? 150;
  const pollMs = opts.pollMs ?? 1000;
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  let last: Promise<string> = signature(paths);

  const check = () => {
    timer = undefined;
    if (closed) return;
    const previous = last;
    const next = signature(paths);
    last = next;
    void Promise.all([previous, next]).then(([a, b]) => {
      if (!closed && a !== b) onChange();
    });
  };
  const schedule = () => {
    if (closed || timer) return;
    timer = setTimeout(check, debounceMs);
    timer.unref();
  };

  const targets: Array<{ path: string; recursive: boolean }> = [];
  for (const p of paths) {
    try {
      targets.push({ path: p, recursive: statSync(p).isDirectory() });
    } catch {
      // missing now: the poll covers it
    }
  }
  const events = watchAndPoll(targets, schedule, schedule, pollMs);
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      events.close();
    },
  };
}
