// Memory of earlier compiles for the operator, whose informer caches hand the compile the same
// objects again until they change (a changed object is a new object, never mutated in place): a
// resource is validated once per version, and a namespace whose inputs are all the same objects
// (and texts) as in the last compile reuses the section compiled then. What a compile returns with a
// cache is byte for byte what it returns without one (operator/compile/cache.test.ts).
import type { ValidationResult } from '../resources/validate.ts';

/** What a namespace section is computed from, beyond the compile-wide domain owners. */
export interface SectionInputs {
  /**
   * Compared by identity: its TenantPolicy (or undefined) and its MailRoutes in input order (the
   * informer lists them in the same order while they stay; another order only costs a recompute).
   */
  objects: ReadonlyArray<object | undefined>;
  /** Compared as text: its policy's owned and lost domains, why it is refused, its Services. */
  text: string;
}

/** The validation result of an object that has errors (a valid one is remembered by its spec). */
class Invalid {
  readonly result: ValidationResult<unknown>;
  constructor(result: ValidationResult<unknown>) {
    this.result = result;
  }
}

/** The remembered spec of a valid object without one. */
const NO_SPEC = Symbol('no spec');

interface Memo {
  /** Its objects array is the memo's own (sameAs replaces an object in it). */
  inputs: { objects: Array<object | undefined>; text: string };
  section: { reusable: boolean };
}

/**
 * Where an object's validation is remembered: the memo meta() keeps for the object (the compile's
 * ResourceMeta), so that one table, not two, holds an entry per resource (at 100k MailRoutes a
 * second WeakMap was 4 MB).
 */
export interface ValidationSlot {
  checked: unknown;
}

export class CompileCache {
  private readonly sections = new Map<string, Memo>();
  private readonly metas = new Map<string, WeakMap<object, unknown>>();
  private owners: string | undefined;

  /**
   * Declares `newer` the same input as `older` although it is another object: they differ only in
   * what the compile does not read (status, resourceVersion, managedFields). The operator calls it
   * for the echo of its own status write, so that the compile after a burst of status writes still
   * reuses what it compiled before. `newer` takes `older`'s place: nothing here keeps `older` (at
   * 100k MailRoutes, keeping every pre-burst object for its identity held ~80 MB after the burst).
   */
  sameAs(newer: object, older: object): void {
    if (newer === older) return;
    // its meta (and so its validation) too: they read nothing a status write changes
    for (const memo of this.metas.values()) {
      const v = memo.get(older);
      if (v === undefined) continue;
      memo.set(newer, v);
      // now, not when a GC finds `older` gone: a table never shrinks, and one that held both objects
      // of every resource during a burst of status writes stayed that size (8 MB at 100k)
      memo.delete(older);
    }
    const ns = (older as { metadata?: { namespace?: unknown } }).metadata?.namespace;
    const memo = typeof ns === 'string' ? this.sections.get(ns) : undefined;
    if (!memo) return;
    const i = memo.inputs.objects.indexOf(older);
    if (i >= 0) memo.inputs.objects[i] = newer;
  }

  /** Whether `now` are the remembered inputs, without copying them. */
  private sameInputs(remembered: SectionInputs, now: SectionInputs): boolean {
    const a = remembered.objects;
    const b = now.objects;
    if (remembered.text !== now.text || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }

  /**
   * validate(raw), once per object. Only the errors and the defaulted spec are kept (the compile
   * reads nothing else of the defaulted copy): the copy of metadata and status would double the
   * memory the informer caches already take. The defaulted spec shares every part that equals the
   * cached object's own (the API server applies the CRD defaults itself, so usually all of it):
   * never two copies of a spec. The compile reads specs, it never writes them.
   */
  validated<T extends { spec?: unknown }>(
    raw: T,
    validate: (raw: T) => ValidationResult<T>,
    slot: ValidationSlot,
  ): ValidationResult<T> {
    if (typeof raw !== 'object' || raw === null) return validate(raw);
    const hit = slot.checked;
    if (hit instanceof Invalid) return hit.result as ValidationResult<T>;
    if (hit !== undefined) return { errors: [], value: { spec: hit === NO_SPEC ? undefined : hit } as T };
    const full = validate(raw);
    if (!full.value || full.errors.length > 0) {
      slot.checked = new Invalid(full);
      return full;
    }
    // a valid object is remembered by its spec alone (no result object per resource)
    const spec = sharedWith(full.value.spec, raw.spec);
    slot.checked = spec === undefined ? NO_SPEC : spec;
    return { errors: [], value: { spec } as T };
  }

  /**
   * make(), once per object and kind: its metadata as the compile reads it, which the compile also
   * hands to validated() as the object's ValidationSlot.
   */
  meta<M>(kind: string, obj: object, make: () => M): M {
    let memo = this.metas.get(kind);
    if (!memo) {
      memo = new WeakMap();
      this.metas.set(kind, memo);
    }
    let m = memo.get(obj) as M | undefined;
    if (m === undefined) {
      m = make();
      memo.set(obj, m);
    }
    return m;
  }

  /** Starts a compile: `owners` names every domain claim's owner; when it changed, nothing is reused. */
  begin(owners: string): void {
    if (owners !== this.owners) this.sections.clear();
    this.owners = owners;
  }

  /**
   * The namespace's section from the last compile if its inputs are the same, else compute();
   * without inputs (it depends on more than they say) it is always computed.
   */
  section<S extends { reusable: boolean }>(
    namespace: string,
    inputs: SectionInputs | undefined,
    compute: () => S,
  ): S {
    const memo = this.sections.get(namespace);
    if (memo && inputs && this.sameInputs(memo.inputs, inputs)) return memo.section as S;
    const section = compute();
    if (inputs && section.reusable) {
      this.sections.set(namespace, { inputs: { text: inputs.text, objects: [...inputs.objects] }, section });
    } else this.sections.delete(namespace);
    return section;
  }

  /** Ends a compile: sections of namespaces it did not visit are forgotten. */
  end(visited: ReadonlySet<string>): void {
    for (const ns of this.sections.keys()) if (!visited.has(ns)) this.sections.delete(ns);
  }
}

/**
 * `copy` (a deep copy of `raw` with defaults filled in) with every subtree that equals `raw`'s
 * replaced by `raw`'s own: the whole of `raw` when nothing was defaulted.
 */
export function sharedWith<T>(copy: T, raw: unknown): T {
  if (copy === raw || typeof copy !== 'object' || copy === null) return copy;
  if (typeof raw !== 'object' || raw === null || Array.isArray(copy) !== Array.isArray(raw)) return copy;
  const c = copy as Record<string, unknown>;
  const r = raw as Record<string, unknown>;
  let same = Object.keys(c).length === Object.keys(r).length;
  for (const k of Object.keys(c)) {
    c[k] = sharedWith(c[k], r[k]);
    if (c[k] !== r[k] || !Object.hasOwn(r, k)) same = false;
  }
  return same ? (raw as T) : copy;
}
