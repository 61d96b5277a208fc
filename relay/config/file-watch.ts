import fs from 'node:fs';
import path from 'node:path';
import { parseRelayConfig } from '../../contract/config/load.ts';
import type { RelayConfig } from '../../contract/config/types.gen.ts';

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

  const events = watchAndPoll(
    [...new Set(paths.map((p) => path.dirname(path.resolve(p))))].map((dir) => ({ path: dir })),
    schedule,
    check,
    pollMs,
  );
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      events.close();
    },
  };
}

/**
 * fs.watch on each target (events are hints: any event calls onEvent) plus a poll that calls
 * onPoll, because fs.watch misses changes on some file systems and loses a path that is replaced.
 */
export function watchAndPoll(
  targets: Array<{ path: string; recursive?: boolean }>,
  onEvent: () => void,
  onPoll: () => void,
  pollMs: number,
): FileWatcher {
  const watchers: fs.FSWatcher[] = [];
  for (const t of targets) {
    try {
      const w = fs.watch(t.path, { persistent: false, recursive: t.recursive ?? false }, onEvent);
      w.on('error', () => {
        // the path went away; the poll keeps going
      });
      watchers.push(w);
    } catch {
      // missing now, or no fs.watch here: the poll covers it
    }
  }
  const poll = setInterval(onPoll, pollMs);
  poll.unref();
  return {
    close() {
      clearInterval(poll);
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
