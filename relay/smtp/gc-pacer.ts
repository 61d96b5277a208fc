import { obtainGc } from '../../platform/gc.ts';

/**
 * Frees the relay's short-lived read buffers at a pace set by bytes streamed, not by V8's
 * external-memory heuristic.
 *
 * Why: every socket read is a fresh ~64 KiB ArrayBuffer outside the JS heap. The JS objects that
 * own them are tiny, so young-generation GCs (which free young ArrayBuffers) almost never run while
 * DATA streams; V8 only reacts once external memory grew by its fixed soft limit (64 MB) since the
 * last full GC, and then needs an incremental mark-compact. Measured with 50 concurrent 10 MiB
 * messages: 45-75 MB of dead buffers at a time, and glibc keeps the peak resident afterwards. So
 * the DATA path reports its bytes here and every PACE_BYTES a minor GC (scavenge) runs: it only
 * visits live young objects (a few hundred per stream), ~0.1-0.5 ms, and frees every dead young
 * buffer. Dead buffer memory then stays around PACE_BYTES instead of tens of MB, flat in message
 * size and concurrency, and buffers are recycled while still hot in cache.
 *
 * The gc function comes from platform/gc.ts. If it cannot be had the pacer is a no-op: mail flows
 * the same, only with V8's default pacing.
 */
const PACE_BYTES = 8 * 1024 * 1024;
const MAJOR_STEP_BYTES = 8 * 1024 * 1024;

let sinceGc = 0;
/** ArrayBuffer bytes after the last full GC (or the lowest seen since). */
let floor = 0;

/** Counts bytes read on the DATA path; runs a minor GC every PACE_BYTES. */
export function noteStreamedBytes(n: number): void {
  sinceGc += n;
  if (sinceGc < PACE_BYTES) return;
  sinceGc = 0;
  const gc = obtainGc();
  if (!gc) return;
  gc({ type: 'minor' });
  // Buffers still in flight at two scavenges are promoted, and old-generation buffers are only
  // freed by a full GC (many short transactions, e.g. 100 KiB messages, promote more of them).
  // When ArrayBuffer memory has grown MAJOR_STEP_BYTES above its level after the last full GC,
  // run one: a few ms at most every MAJOR_STEP_BYTES of dead buffers, instead of V8's 64 MB.
  const ab = process.memoryUsage().arrayBuffers;
  if (ab < floor) floor = ab;
  else if (ab > floor + MAJOR_STEP_BYTES) {
    gc({ type: 'major' });
    // the buffers are released by a concurrent sweeper: the next calls lower the floor further
    floor = process.memoryUsage().arrayBuffers;
  }
}
