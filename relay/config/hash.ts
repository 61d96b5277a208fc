// One canonical JSON and one hash for the relay config, shared by the compile step (which stamps
// the hash) and the loader (which verifies it).
import { createHash } from 'node:crypto';

function sortedKeys(_key: string, value: unknown): unknown {
  if (typeof value === 'number' && !Number.isFinite(value))
    throw new Error(`canonicalJson: ${value} is not JSON`);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(value).sort()) out[k] = (value as Record<string, unknown>)[k];
  return out;
}

/**
 * JSON with object keys sorted (recursively), no whitespace; undefined properties dropped,
 * undefined array items become null. Native JSON.stringify with a sorting replacer: about twice as
 * fast as a hand-written walk on large configs.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, sortedKeys);
}

/** 'sha256:<hex>' over the canonical JSON of the config without its 'hash' field. */
export function hashConfig(config: { hash?: string } & object): string {
  const { hash: _ignored, ...rest } = config as Record<string, unknown>;
  return `sha256:${createHash('sha256').update(canonicalJson(rest)).digest('hex')}`;
}
