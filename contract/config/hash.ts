// One canonical JSON and one hash for the relay config, shared by the compile step (which stamps
// the hash) and the loader (which verifies it); and the union hash, the identity of a sharded
// config as a whole, which no relay verifies.
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

/** A tenant section's content in brief: the sha256 of its canonical JSON and that JSON's UTF-8 length. */
export interface TenantDigest {
  readonly sha256: string;
  readonly bytes: number;
}

/**
 * Digests of tenant sections by identity. A config's tenants are never mutated once it is hashed
 * (compile output, shard documents and decoded ConfigMaps are treated as immutable), so comparing
 * or measuring a section seen before costs a lookup. The digest, not the JSON, is what is kept:
 * the JSON of every section was 24.5 MB of the operator's heap at 100k routes (and as much of each
 * relay's), while a digest is under 200 bytes.
 */
const digests = new WeakMap<object, TenantDigest>();

function digestOf(tenant: object, json: string): TenantDigest {
  let d = digests.get(tenant);
  if (d === undefined) {
    d = { sha256: createHash('sha256').update(json).digest('hex'), bytes: Buffer.byteLength(json) };
    digests.set(tenant, d);
  }
  return d;
}

/** The digest of a tenant section, serialised once per section object. */
export function tenantDigest(tenant: object): TenantDigest {
  return digests.get(tenant) ?? digestOf(tenant, canonicalJson(tenant));
}

/** Same content (the same object, or the same canonical JSON by its digest). */
export function sameTenant(a: object, b: object): boolean {
  return a === b || tenantDigest(a).sha256 === tenantDigest(b).sha256;
}

/**
 * Canonical JSON of top-level fields of a config, as its builder made it from parts serialised
 * before: the text, or its parts in order (hashed one by one: the compile's `sources` joined was a
 * 3.5 MB string, and as many bytes again to hash it, made on every compile at 100k resources).
 */
export type KnownJson = Readonly<Record<string, string | readonly string[] | undefined>>;

/**
 * canonicalJson of the config without 'hash', streamed into a sha256 key by key with the tenants
 * one by one, each tenant as `tenantText` gives it; a field is read only when `known` does not give
 * its JSON (the compile's `sources` is made when first read).
 */
function hashWith(
  config: { hash?: string } & object,
  tenantText: (tenant: object) => string,
  known: KnownJson = {},
  preamble = '',
): string {
  const fields = config as Record<string, unknown>;
  const h = createHash('sha256');
  if (preamble) h.update(preamble);
  let first = true;
  for (const k of Object.keys(fields).sort()) {
    if (k === 'hash') continue;
    const knownJson = Object.hasOwn(known, k) ? known[k] : undefined;
    const v = knownJson === undefined ? fields[k] : undefined;
    if (k === 'tenants' && Array.isArray(v)) {
      h.update(`${first ? '{' : ','}${JSON.stringify(k)}:[`);
      first = false;
      // each part its own update: a string joined to a tenant's JSON would copy it
      v.forEach((t, i) => {
        const s = t !== null && typeof t === 'object' ? tenantText(t) : canonicalJson(t);
        if (i > 0) h.update(',');
        h.update(s ?? 'null');
      });
      h.update(']');
      continue;
    }
    const json = knownJson ?? canonicalJson(v);
    if (json === undefined) continue;
    h.update(`${first ? '{' : ','}${JSON.stringify(k)}:`);
    if (typeof json === 'string') h.update(json);
    else for (const part of json) h.update(part);
    first = false;
  }
  h.update(first ? '{}' : '}');
  return `sha256:${h.digest('hex')}`;
}

// a document's hash serialises every tenant; the digest is recorded on the way (a sha256 of text at
// hand), so comparing those sections later serialises nothing
function documentTenantText(tenant: object): string {
  const json = canonicalJson(tenant);
  digestOf(tenant, json);
  return json;
}

/**
 * 'sha256:<hex>' over the canonical JSON of the config without its 'hash' field. `known`: the
 * canonical JSON of top-level fields the caller has at hand (the compile's `sources`, joined from
 * the texts of its cached runs), taken instead of serialising them; the same value.
 */
export function hashConfig(config: { hash?: string } & object, known?: KnownJson): string {
  return hashWith(config, documentTenantText, known);
}

/** Keeps a union hash from being taken for a document's hash of the same content. */
const UNION_PREAMBLE = 'mailplus.io/relay-config-union/v1\n';

/**
 * The identity of a config as a whole that no relay verifies: the union of a sharded config's shards
 * (relays take it from the index, RelayConfig.unionHash, and report it). 'sha256:<hex>' over the
 * same canonical JSON as hashConfig with every tenant section replaced by the JSON string of its
 * digest, after a fixed preamble. Deterministic in the content, as hashConfig is, but a change to one
 * tenant serialises that tenant only, where hashConfig serialises all of them (about half a second
 * at 100k routes, or a cache of their JSON as large as the config).
 */
export function unionHash(config: { hash?: string } & object, known?: KnownJson): string {
  return hashWith(config, (t) => JSON.stringify(tenantDigest(t).sha256), known, UNION_PREAMBLE);
}

/** Configs whose `hash` is a unionHash (the compile made it so, or rehashLike passed it on). */
const unionHashed = new WeakSet<object>();

/** Sets `config.hash` to its unionHash and remembers that it is one (see rehashLike). */
export function stampUnionHash<T extends { hash?: string } & object>(config: T, known?: KnownJson): T {
  config.hash = unionHash(config, known);
  unionHashed.add(config);
  return config;
}

/**
 * Sets the hash of `derived` (a config made from `original`, some tenant sections replaced) the way
 * `original`'s was made: a unionHash for a union hash, else the document hash.
 */
export function rehashLike<T extends { hash?: string } & object>(derived: T, original: object): T {
  if (unionHashed.has(original)) return stampUnionHash(derived);
  derived.hash = hashConfig(derived);
  return derived;
}
