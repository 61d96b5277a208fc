// The objects of one kind by namespace, then name. Not one map keyed by "namespace/name": those
// keys are strings of their own, one per object (3.8 MB at 100k MailRoutes), where the two maps'
// keys are the namespace and name strings the cached objects hold anyway.
/** What the store reads of an object (list-watch.ts's KubeObject is one). */
interface Named {
  metadata?: { name?: string; namespace?: string };
}

export class ObjectStore<T extends Named> {
  private readonly byNamespace = new Map<string, Map<string, T>>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(namespace: string | undefined, name: string | undefined): T | undefined {
    return this.byNamespace.get(namespace ?? '')?.get(name ?? '');
  }

  /** Adds or replaces the object under its own namespace and name. */
  set(obj: T): void {
    const namespace = obj.metadata?.namespace ?? '';
    let names = this.byNamespace.get(namespace);
    if (!names) {
      names = new Map();
      this.byNamespace.set(namespace, names);
    }
    const before = names.size;
    names.set(obj.metadata?.name ?? '', obj);
    this.count += names.size - before;
  }

  delete(namespace: string | undefined, name: string | undefined): void {
    const names = this.byNamespace.get(namespace ?? '');
    if (!names?.delete(name ?? '')) return;
    this.count--;
    if (names.size === 0) this.byNamespace.delete(namespace ?? '');
  }

  /**
   * A new array of the objects. Filled by forEach: a generator or iterator gives a result object per
   * object in unoptimized code, and the status sweep lists 100k MailRoutes after every compile.
   */
  list(): T[] {
    const out: T[] = [];
    const push = (obj: T) => {
      out.push(obj);
    };
    this.byNamespace.forEach((names) => {
      names.forEach(push);
    });
    return out;
  }
}
