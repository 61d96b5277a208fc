import fs from 'node:fs';
import path from 'node:path';
import { parseRelayConfig } from './config/load.ts';
import type { RelayConfig } from './config/types.gen.ts';

/**
 * Watching files that get replaced rather than edited: Kubernetes ConfigMap/Secret volumes swap a
 * `..data` symlink to a new timestamped directory (an atomic rename), editors and `kubectl cp`
 * rename temp files over the target. So: fs.watch on the parent directory (any event there, the
 * file name in it is unreliable across platforms) plus a 1 s poll that re-reads the files (cheap:
 * small files; catches everything fs.watch misses, e.g. on overlay or network file systems), a
 * debounce so a burst of events reads once, and change detection by content, so mtime-preserving
 * swaps are seen and no-op touches are not.
 */
export interface FileWatcher {
  close(): void;
}

export interface WatchOptions {
  debounceMs?: number;
  pollMs?: number;
  /** A file could not be read (missing mid-swap, permissions). Retried at the next event/poll. */
  onError?(err: Error): void;
}

export function watchFiles(
  paths: readonly string[],
  onChange: (contents: Buffer[]) => void,
  opts: WatchOptions = {},
): FileWatcher {
  const debounceMs = opts.debounceMs ?? 100;
  const pollMs = opts.pollMs ?? 1000;
  let last: Buffer[] | undefined;
  try {
    last = paths.map((p) => fs.readFileSync(p));
  } catch {
    last = undefined;
  }
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  let lastError = '';

  const check = () => {
    timer = undefined;
    if (closed) return;
    let now: Buffer[];
    try {
      now = paths.map((p) => fs.readFileSync(p));
    } catch (err) {
      const text = (err as Error).message;
      if (text !== lastError) opts.onError?.(err as Error);
      lastError = text;
      return;
    }
    lastError = '';
    if (last && now.every((b, i) => b.equals((last as Buffer[])[i]))) return;
    last = now;
    onChange(now);
  };
  const schedule = () => {
    if (closed || timer) return;
    timer = setTimeout(check, debounceMs);
    timer.unref();
  };

  const watchers: fs.FSWatcher[] = [];
  for (const dir of new Set(paths.map((p) => path.dirname(path.resolve(p))))) {
    try {
      const w = fs.watch(dir, { persistent: false }, schedule);
      w.on('error', () => {
        // the directory went away; the poll keeps going
      });
      watchers.push(w);
    } catch {
      // no fs.watch here: the poll covers it
    }
  }
  const poll = setInterval(check, pollMs);
  poll.unref();

  return {
    close() {
      closed = true;
      clearInterval(poll);
      clearTimeout(timer);
      for (const w of watchers) w.close();
    },
  };
}

export interface ConfigTarget {
  applyConfig(config: RelayConfig, source?: string): { ok: boolean };
  reportConfigError(err: Error, source?: string): void;
}

/**
 * Feeds a relay config file to the relay: read now and on every change (applied to new
 * transactions within about a second), parsed and verified by parseRelayConfig; an invalid file
 * is reported and the relay keeps its last good config.
 */
export function watchConfigFile(file: string, relay: ConfigTarget, opts: WatchOptions = {}): FileWatcher {
  const apply = (text: string) => {
    let config: RelayConfig;
    try {
      config = parseRelayConfig(text, file);
    } catch (err) {
      relay.reportConfigError(err as Error, file);
      return;
    }
    relay.applyConfig(config, file);
  };
  try {
    apply(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    relay.reportConfigError(err as Error, file);
  }
  return watchFiles([file], ([buf]) => apply(buf.toString('utf8')), {
    ...opts,
    onError: opts.onError ?? ((err) => relay.reportConfigError(err, file)),
  });
}
