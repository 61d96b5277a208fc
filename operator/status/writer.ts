// Status writes: a read-modify-write of the /status subresource. The body is a JSON merge patch
// carrying the resourceVersion the status was computed from (optimistic concurrency: a
// concurrent change answers 409; we re-read and retry while the generation is the same; if the
// spec moved on, a newer reconcile takes over) and the FULL conditions list: ours recomputed,
// everyone else's exactly as read, in their place. 404 = deleted meanwhile: nothing to do.
//
// Why not server-side apply: on kube-apiserver 1.20 an apply to these CRDs' /status treats
// status.conditions as atomic (managedFields show `f:conditions: {}` instead of per-type keys),
// so a forced apply silently dropped another manager's condition (test/operator/
// status-conflict.test.ts caught it). The read-modify-write is correct on every version.

import { MAILPLUS_API_VERSION } from '../../contract/kube.ts';
import { apiErrorText, apiStatus, type KubeClient, PATCH } from '../../platform/kube/client.ts';
import type { Condition } from '../api/types.gen.ts';
import { type DesiredStatus, OWNED_TYPES } from '../conditions/api-conditions.ts';

export const STATUS_FIELD_MANAGER = 'mailplus-operator';
const PLURAL = { TenantPolicy: 'tenantpolicies', MailRoute: 'mailroutes' } as const;
export type MailPlusKind = keyof typeof PLURAL;

export interface StatusTarget {
  kind: MailPlusKind;
  namespace: string;
  name: string;
  generation: number;
  resourceVersion?: string;
}

/**
 * 'refused': the API server answered 422 (the object as stored fails the CRD schema, e.g. a spec
 * created under an older, looser schema): no retry can succeed until the object changes.
 */
export type StatusWriteResult = 'written' | 'gone' | 'stale' | 'refused';

export interface StatusWriterOptions {
  client: KubeClient;
  signal?: () => AbortSignal | undefined;
  /** Called before every write attempt (tests inject a concurrent writer here). */
  beforeWrite?(target: StatusTarget, attempt: number): Promise<void>;
  onConflict?(): void;
  /** The API server's reason for a 'refused' write. */
  onRefused?(message: string): void;
  maxAttempts?: number;
}

const OWNED = new Set<string>(OWNED_TYPES);

/** Foreign conditions kept as read and in place; ours replaced (or appended in our order). */
export function mergeConditions(current: Condition[] | undefined, ours: Condition[]): Condition[] {
  const byType = new Map(ours.map((c) => [c.type, c]));
  const out: Condition[] = [];
  for (const c of current ?? []) {
    if (!OWNED.has(c.type)) out.push(c);
    else if (byType.has(c.type)) {
      out.push(byType.get(c.type) as Condition);
      byType.delete(c.type);
    }
  }
  for (const c of ours) if (byType.has(c.type)) out.push(c);
  return out;
}

export async function writeStatus(
  opts: StatusWriterOptions,
  target: StatusTarget,
  desired: (current: Record<string, unknown> | undefined) => DesiredStatus | undefined,
  initial: Record<string, unknown> | undefined,
): Promise<StatusWriteResult> {
  const { client } = opts;
  const path = `/apis/${MAILPLUS_API_VERSION}/namespaces/${encodeURIComponent(target.namespace)}/${PLURAL[target.kind]}/${encodeURIComponent(target.name)}`;
  let rv = target.resourceVersion;
  let current = initial;
  const max = opts.maxAttempts ?? 5;
  for (let attempt = 1; ; attempt++) {
    const want = desired(current);
    if (!want) return 'stale';
    await opts.beforeWrite?.(target, attempt);
    const status = (current?.status ?? {}) as { conditions?: Condition[] };
    const body = {
      metadata: rv ? { resourceVersion: rv } : {},
      status: {
        observedGeneration: want.observedGeneration,
        conditions: mergeConditions(status.conditions, want.conditions),
      },
    };
    try {
      // the answer (the whole object) is not needed: our own write comes back through the watch
      await client.request('PATCH', `${path}/status`, {
        query: { fieldManager: STATUS_FIELD_MANAGER },
        body,
        contentType: PATCH.merge,
        signal: opts.signal?.(),
      });
      return 'written';
    } catch (err) {
      const code = apiStatus(err);
      if (code === 404) return 'gone';
      if (code === 422) {
        opts.onRefused?.(apiErrorText(err));
        return 'refused';
      }
      if (code !== 409 || attempt >= max) {
        throw new Error(
          `writing status of ${target.kind} ${target.namespace}/${target.name}: ${apiErrorText(err)}`,
        );
      }
      opts.onConflict?.();
      // re-read: someone changed the object between our read and our write
      let fresh: Record<string, unknown>;
      try {
        fresh = await client.get<Record<string, unknown>>(path, { signal: opts.signal?.() });
      } catch (e) {
        if (apiStatus(e) === 404) return 'gone';
        throw e;
      }
      const md = (fresh.metadata ?? {}) as { generation?: number; resourceVersion?: string };
      if ((md.generation ?? 0) !== target.generation) return 'stale';
      rv = md.resourceVersion;
      current = fresh;
    }
  }
}
