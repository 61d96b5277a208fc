// What the informer caches keep of a Mail-Plus resource: at 100k MailRoutes the cache is the
// operator's largest memory, and most of it is not what the operator reads. JSON.parse gives every
// object its own copy of every string ("Programmed", the same condition messages, the same
// timestamps, the tenant's upstream host: about 2 KB per MailRoute with a status), and the API
// server sends fields nothing here reads. The compact record keeps the metadata the operator reads
// (name, namespace, uid, resourceVersion, generation, creationTimestamp, deletionTimestamp, labels,
// annotations but kubectl's last-applied copy of the object), the spec and the status, with
// repeated strings shared through a bounded interner.

import { isDeepStrictEqual } from 'node:util';

/** kubectl apply's copy of the whole object in an annotation: a second spec nothing here reads. */
export const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

/** Strings longer than this are not interned (free text a tenant wrote is rarely repeated). */
const MAX_INTERNED_LENGTH = 512;

/**
 * Objects and arrays whose JSON is longer, or that have more members, are not shared: the table
 * keeps each shared value's JSON as its key, and long ones (a route's hundred patterns) are rarely
 * repeated.
 */
const MAX_SHARED_JSON = 256;
const MAX_SHARED_MEMBERS = 16;

/** Starts sharedOf's keys: never the first character of JSON. */
const COMPOSITE = '\u0000';

/** cyrb53 by bryc (public domain): a fast 53-bit string digest, for table keys (not for security). */
function digest53(s: string): number {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}

/**
 * One shared copy per distinct string, bounded: two generations of at most `limit` strings each;
 * a string seen again moves to the current generation, one not seen for a generation is forgotten
 * (objects that hold it keep their copy). Timestamps and generation numbers in condition messages
 * keep changing for as long as the operator runs: an unbounded table would grow with them.
 */
export class Interner {
  private current = new Map<string, string>();
  private previous = new Map<string, string>();
  private sharedCurrent = new Map<number, object>();
  private sharedPrevious = new Map<number, object>();
  /** Numbers of the shared objects that are parts of others (sharedOf's keys). */
  private readonly ids = new WeakMap<object, number>();
  private lastId = 0;
  private readonly limit: number;

  private readonly digest: (key: string) => number;

  /** `digest`: of the shared tables' keys (a test gives one that collides). */
  constructor(limit = 65_536, digest = digest53) {
    this.limit = limit;
    this.digest = digest;
  }

  /** Strings the table holds (both generations). */
  get size(): number {
    return this.current.size + this.previous.size;
  }

  intern(s: string): string {
    if (s.length > MAX_INTERNED_LENGTH) return s;
    const hit = this.current.get(s);
    if (hit !== undefined) return hit;
    const shared = this.previous.get(s) ?? s;
    if (this.current.size >= this.limit) {
      this.previous = this.current;
      this.current = new Map();
    }
    this.current.set(shared, shared);
    return shared;
  }

  /**
   * A deep copy of JSON data with every string interned (object keys are interned by V8 already)
   * and every small object or array shared, frozen, by all the records that have the very same one
   * (a tenant's upstreams in each of its MailRoutes, the conditions written in the same second).
   */
  json<T>(v: T): T {
    if (typeof v === 'string') return this.intern(v) as T;
    if (typeof v !== 'object' || v === null) return v;
    let copy: object;
    if (Array.isArray(v)) copy = v.map((x) => this.json(x));
    else {
      const out: Record<string, unknown> = {};
      for (const k in v) out[k] = this.json((v as Record<string, unknown>)[k]);
      copy = out;
    }
    if (Object.keys(copy).length > MAX_SHARED_MEMBERS) return copy as T;
    const text = JSON.stringify(copy);
    return (text.length > MAX_SHARED_JSON ? copy : this.sharedAs(text, copy)) as T;
  }

  /** One frozen object for equal JSON objects of strings and numbers, bounded like the strings. */
  shared<T extends object>(obj: T): T {
    return this.sharedAs(JSON.stringify(obj), obj);
  }

  /**
   * The shared object for `key` (its JSON, or sharedOf's key), `obj` frozen when there is none yet.
   * The tables are keyed by a 53-bit digest of the key, not the key: the keys were ~4 MB at 100k
   * MailRoutes. A digest that two keys share (about one in 10^16 pairs) leaves `obj` unshared.
   */
  private sharedAs<T extends object>(key: string, obj: T): T {
    const digest = this.digest(key);
    const hit = this.sharedCurrent.get(digest) ?? this.sharedPrevious.get(digest);
    if (hit !== undefined && this.keyOf(hit, key) !== key) return obj;
    if (this.sharedCurrent.size >= this.limit / 4) {
      this.sharedPrevious = this.sharedCurrent;
      this.sharedCurrent = new Map();
    }
    const one = (hit ?? Object.freeze(obj)) as T;
    this.sharedCurrent.set(digest, one);
    return one;
  }

  /** The key `shared` is kept under, made the way `like` was (sharedOf's or JSON). */
  private keyOf(shared: object, like: string): string | undefined {
    return like.startsWith(COMPOSITE) ? this.compositeKey(shared) : JSON.stringify(shared);
  }

  /**
   * One frozen object for equal objects whose members are numbers, strings, booleans, shared
   * objects or arrays of those (a status: its observedGeneration and its shared conditions), keyed
   * by the shared members' identities instead of their JSON (a status's is about 1 KB); `obj` itself
   * when a member is anything else.
   */
  sharedOf<T extends object>(obj: T): T {
    const key = this.compositeKey(obj);
    if (key === undefined) return obj;
    const shared = this.sharedAs(key, obj);
    if (shared === obj) for (const v of Object.values(obj)) if (Array.isArray(v)) Object.freeze(v);
    return shared;
  }

  private compositeKey(obj: object): string | undefined {
    let key = COMPOSITE;
    for (const [k, v] of Object.entries(obj)) {
      const part = Array.isArray(v) ? this.partsOf(v) : this.partOf(v);
      if (part === undefined) return undefined;
      key += `${JSON.stringify(k)}:${part},`;
    }
    return key;
  }

  private partsOf(list: unknown[]): string | undefined {
    let out = '[';
    for (const v of list) {
      const part = this.partOf(v);
      if (part === undefined) return undefined;
      out += `${part},`;
    }
    return `${out}]`;
  }

  private partOf(v: unknown): string | undefined {
    if (typeof v === 'object' && v !== null) {
      // by identity: only a frozen (shared) object, numbered when first used as a part (numbering
      // every shared object was a 300k-entry table at 100k MailRoutes)
      if (!Object.isFrozen(v)) return undefined;
      let id = this.ids.get(v);
      if (id === undefined) {
        id = ++this.lastId;
        this.ids.set(v, id);
      }
      return `#${id}`;
    }
    return typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean'
      ? JSON.stringify(v)
      : undefined;
  }
}

interface ResourceLike {
  apiVersion?: string;
  kind?: string;
  metadata?: Record<string, unknown>;
  spec?: unknown;
  status?: unknown;
}

/**
 * The status with each condition shared by every object that has the very same one (same type,
 * status, reason, message, observedGeneration and lastTransitionTime: objects written in the same
 * second of a status burst): six conditions are about 40 % of a cached MailRoute. Then the status
 * itself, its conditions array included, is shared by every object with the same conditions and
 * observedGeneration: a status object and an array of six per object were still ~13 MB at 100k
 * MailRoutes once every one had its status. Frozen: a shared status is read, never written.
 */
function compactStatus(status: unknown, interner: Interner): unknown {
  const st = interner.json(status) as { conditions?: unknown };
  // a shared (frozen) status is small enough that its conditions are shared already
  if (!Array.isArray(st?.conditions) || Object.isFrozen(st)) return st;
  st.conditions = st.conditions.map((c) => (typeof c === 'object' && c !== null ? interner.shared(c) : c));
  return interner.sharedOf(st);
}

/** The metadata fields copied as they are (strings interned where they repeat). */
const KEPT_METADATA = ['name', 'uid', 'resourceVersion', 'generation', 'deletionTimestamp'] as const;

/**
 * The common metadata (every field the API server sets, no deletionTimestamp) made in one literal:
 * V8 gives a literal's fields room in the object itself, while fields added one by one past the
 * first four go to a separate property array (8 MB at 100k MailRoutes, with the record's own).
 * Undefined for any other shape (built field by field, as before: absent fields stay absent).
 */
function commonMetadata(
  md: Record<string, unknown>,
  pick: (k: (typeof KEPT_METADATA)[number]) => unknown,
  namespace: unknown,
  creationTimestamp: unknown,
  labels: unknown,
  annotations: unknown,
): Record<string, unknown> | undefined {
  if (md.deletionTimestamp !== undefined) return undefined;
  const name = pick('name');
  const uid = pick('uid');
  const resourceVersion = pick('resourceVersion');
  const generation = pick('generation');
  const all = [name, uid, resourceVersion, generation, namespace, creationTimestamp];
  if (all.some((v) => v === undefined)) return undefined;
  if (labels === undefined && annotations === undefined)
    return { name, uid, resourceVersion, generation, namespace, creationTimestamp };
  if (labels === undefined)
    return { name, uid, resourceVersion, generation, namespace, creationTimestamp, annotations };
  if (annotations === undefined)
    return { name, uid, resourceVersion, generation, namespace, creationTimestamp, labels };
  return { name, uid, resourceVersion, generation, namespace, creationTimestamp, labels, annotations };
}

/**
 * `prev` (part of the record this one replaces) when `raw` says the same, else an interned copy.
 * Most updates are status writes (ours: 100k of them after publishing 100k routes): the new record
 * shares the old one's spec, so the compile cache, which keeps the specs it compiled, never holds
 * two copies of one (kube/compact.test.ts).
 */
function same(prev: unknown, raw: unknown, interner: Interner): unknown {
  return prev !== undefined && isDeepStrictEqual(prev, raw) ? prev : interner.json(raw);
}

/**
 * The compact record of a custom resource as it comes from the API server (see the top of this
 * file); `previous` is the cached record of the same object, if any, whose unchanged parts it shares.
 */
export function compactResource<T>(obj: T, interner: Interner, previous?: T): T {
  const o = obj as ResourceLike;
  if (typeof o !== 'object' || o === null) return obj;
  const md = o.metadata ?? {};
  const prev = previous as ResourceLike | undefined;
  const pmd = prev?.metadata?.uid === md.uid ? prev?.metadata : undefined;
  const pick = (k: (typeof KEPT_METADATA)[number]) => (pmd?.[k] === md[k] ? pmd?.[k] : md[k]);
  const namespace = typeof md.namespace === 'string' ? interner.intern(md.namespace) : undefined;
  const creationTimestamp =
    typeof md.creationTimestamp === 'string' ? interner.intern(md.creationTimestamp) : undefined;
  const labels = md.labels !== undefined ? same(pmd?.labels, md.labels, interner) : undefined;
  let annotations: unknown;
  if (md.annotations !== undefined) {
    const { [LAST_APPLIED]: _copy, ...rest } = md.annotations as Record<string, unknown>;
    annotations = same(pmd?.annotations, rest, interner);
  }
  let metadata = commonMetadata(md, pick, namespace, creationTimestamp, labels, annotations);
  if (!metadata) {
    metadata = {};
    for (const k of KEPT_METADATA) if (md[k] !== undefined) metadata[k] = pick(k);
    if (namespace !== undefined) metadata.namespace = namespace;
    if (creationTimestamp !== undefined) metadata.creationTimestamp = creationTimestamp;
    if (labels !== undefined) metadata.labels = labels;
    if (annotations !== undefined) metadata.annotations = annotations;
  }
  const apiVersion = typeof o.apiVersion === 'string' ? interner.intern(o.apiVersion) : o.apiVersion;
  const kind = typeof o.kind === 'string' ? interner.intern(o.kind) : o.kind;
  const spec = o.spec !== undefined ? same(pmd ? prev?.spec : undefined, o.spec, interner) : undefined;
  const status = o.status !== undefined ? compactStatus(o.status, interner) : undefined;
  // one literal per shape, for the same reason as commonMetadata
  let out: ResourceLike;
  if (o.spec !== undefined && o.status !== undefined) out = { apiVersion, kind, metadata, spec, status };
  else if (o.spec !== undefined) out = { apiVersion, kind, metadata, spec };
  else if (o.status !== undefined) out = { apiVersion, kind, metadata, status };
  else out = { apiVersion, kind, metadata };
  return out as T;
}
