// One canonical JSON and one hash for the relay config, shared by the compile step (which stamps
// the hash) and the loader (which verifies it).
import { createHash } from 'node:crypto';

function sortedKeys(_key: string, value: unknown): unknown {
  if (typeof value === 'number' && !Number.isFinite(value))
    throw new Error(`canonicalJson: ${value} is not JSON`);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  const keys = Object.keys(value);
  // Already in order (upstreams, actions, the compiled `sources` with its 100k keys): serialised
  // as is, since JSON.stringify walks the same Object.keys order; only others are copied sorted.
  let sorted = true;
  for (let i = 1; i < keys.length && sorted; i++) sorted = keys[i - 1] < keys[i];
  if (sorted) return value;
  const out: Record<string, unknown> = {};
  for (const k of keys.sort()) out[k] = (value as Record<string, unknown>)[k];
  return out;
}

/**
 * JSON with object keys sorted (recursively), no whitespace; undefined properties dropped,
 * undefined array items become null. Native JSON.stringify with a sorting replacer: about twice as
 * fast as a hand-written walk on large configs.
 */
export function canonicalJson(value: unknown): string {
  return sortedNumberRecordJson(value) ?? JSON.stringify(value, sortedKeys);
}

/**
 * The canonical JSON of a flat record of finite numbers whose keys are already in order (the
 * compiled `sources`, 100k keys), else undefined. Plain JSON.stringify gives the same text there,
 * without calling the sorting replacer once per value (most of the time of hashing `sources`).
 */
export function sortedNumberRecordJson(value: unknown): string | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined;
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return undefined;
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record);
  for (let i = 0; i < keys.length; i++) {
    const v = record[keys[i]];
    if (typeof v !== 'number' || !Number.isFinite(v)) return undefined;
    if (i > 0 && !(keys[i - 1] < keys[i])) return undefined;
  }
  return JSON.stringify(record);
}

/**
 * Canonical JSON of tenant sections by identity, filled by every hashConfig. A config's tenants are
 * never mutated once it is hashed (compile output, shard documents and decoded ConfigMaps are
 * treated as immutable), so deriving documents from the same tenant objects (shards, their union,
 * held-back variants, budget sizes) serialises each tenant once instead of once per document.
 */
const tenantJson = new WeakMap<object, string>();

/**
 * The canonical JSON of a tenant section; `reuse` takes it from an earlier hashConfig of a config
 * holding the same (unmutated) object.
 */
export function canonicalTenantJson(tenant: object, reuse = true): string {
  const cached = reuse ? tenantJson.get(tenant) : undefined;
  if (cached !== undefined) return cached;
  const json = canonicalJson(tenant);
  if (json !== undefined) tenantJson.set(tenant, json);
  return json;
}

/** Canonical JSON of top-level fields of a config, as its builder made it from parts serialised before. */
export type KnownJson = Readonly<Record<string, string | undefined>>;

function hashWith(config: { hash?: string } & object, reuse: boolean, known: KnownJson = {}): string {
  const fields = config as Record<string, unknown>;
  // canonicalJson of the config without 'hash', streamed into the hash key by key with the tenants
  // one by one; a field is read only when `known` does not give its JSON (the compile's `sources`
  // is made when first read)
  const h = createHash('sha256');
  let first = true;
  for (const k of Object.keys(fields).sort()) {
    if (k === 'hash') continue;
    const knownJson = Object.hasOwn(known, k) ? known[k] : undefined;
    const v = knownJson === undefined ? fields[k] : undefined;
    if (k === 'tenants' && Array.isArray(v)) {
      h.update(`${first ? '{' : ','}${JSON.stringify(k)}:[`);
      first = false;
      // each part its own update: a string joined to a tenant's JSON would copy it (the whole config,
      // ~28 MB at 100k routes, per compile)
      v.forEach((t, i) => {
        const s = t !== null && typeof t === 'object' ? canonicalTenantJson(t, reuse) : canonicalJson(t);
        if (i > 0) h.update(',');
        h.update(s ?? 'null');
      });
      h.update(']');
      continue;
    }
    const json: string | undefined = knownJson ?? canonicalJson(v);
    if (json === undefined) continue;
    h.update(`${first ? '{' : ','}${JSON.stringify(k)}:`);
    h.update(json);
    first = false;
  }
  h.update(first ? '{}' : '}');
  return `sha256:${h.digest('hex')}`;
}

/** 'sha256:<hex>' over the canonical JSON of the config without its 'hash' field. */
export function hashConfig(config: { hash?: string } & object): string {
  return hashWith(config, false);
}

/**
 * hashConfig of a config derived from already hashed ones (shards of a compiled config, their
 * union, a config with some tenants replaced): tenant sections seen before are not serialised again,
 * nor the fields whose canonical JSON `known` gives (the compile's `sources`, joined from the texts of
 * its cached sections). Never for a document to verify: that is hashConfig, over its content as it is now.
 */
export function hashDerivedConfig(config: { hash?: string } & object, known?: KnownJson): string {
  return hashWith(config, true, known);
}
