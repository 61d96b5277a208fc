// The pure status rules of TenantPolicy and MailRoute: the condition model, the reasons, which
// reason is a warning, the Ready summary, and the builders the compile step and the budget check
// use. Accepted and ResolvedRefs are decided by the compile step; Ready is the summary (recomputed
// with summarizeReady once the operator adds Programmed from relay reports, see programmed.ts).

export type ConditionType = 'Accepted' | 'ResolvedRefs' | 'Ready' | 'Programmed' | 'Reconciling' | 'Stalled';
export type ConditionStatus = 'True' | 'False' | 'Unknown';

export interface StatusCondition {
  type: ConditionType;
  status: ConditionStatus;
  /** One CamelCase word, see REASONS. */
  reason: string;
  message: string;
}

/** A pattern or domain this resource declares but another resource takes. */
export interface Conflict {
  /** 'spec.domains[1]', 'spec.match.recipients[0]'. */
  field: string;
  /** The normalised domain claim or pattern. */
  value: string;
  /** 'TenantPolicy ns/name' or 'MailRoute ns/name' that wins. */
  winner: string;
}

export interface ResourceStatus {
  /** metadata.generation of the object these conditions describe (becomes observedGeneration). */
  generation?: number;
  /** Accepted, ResolvedRefs, Ready in that order (Programmed is appended by the operator). */
  conditions: StatusCondition[];
  conflicts?: Conflict[];
}

export const REASONS = {
  accepted: 'Accepted',
  resolvedRefs: 'ResolvedRefs',
  ready: 'Ready',
  invalidSpec: 'InvalidSpec',
  conflicted: 'Conflicted',
  noTenantPolicy: 'NoTenantPolicy',
  domainNotOwned: 'DomainNotOwned',
  domainClaimedByOtherTenant: 'DomainClaimedByOtherTenant',
  serviceNotFound: 'ServiceNotFound',
  servicePortNotFound: 'ServicePortNotFound',
  /**
   * Accepted=False on a TenantPolicy whose spec.troubleshooting is not a valid, current consent
   * (the message names the field): its routes are still served, nothing is captured.
   */
  consentInvalid: 'ConsentInvalid',
  /** ResolvedRefs=Unknown when the spec is invalid and references were not looked at. */
  notChecked: 'InvalidSpec',
  /** Programmed=False while some live relays still serve a config without this generation. */
  pending: 'Pending',
  /** Programmed=True: every live relay serves a config containing this generation. */
  programmed: 'Programmed',
  /** Programmed=False: no ready relay pod of the fleet. */
  noRelays: 'NoRelays',
  /** Programmed=False: the resource is not part of the relay config (not accepted). */
  invalid: 'Invalid',
  /** Reconciling=False: nothing left to do for this generation (kstatus). */
  reconciled: 'Reconciled',
  /** Stalled=False: not blocked (kstatus). */
  notStalled: 'NotStalled',
} as const;

/** The reasons that say "all is well" for the condition they are on. */
const HAPPY = new Set<string>([REASONS.accepted, REASONS.resolvedRefs, REASONS.ready, REASONS.programmed]);

/**
 * A True condition whose reason is not the happy one is a warning: accepted, but something needs
 * a look (Accepted=True/Conflicted, Accepted=True/DomainClaimedByOtherTenant). The one rule for
 * Ready's reason, the Warning Events and `mailplus validate`.
 */
export function isWarning(c: Pick<StatusCondition, 'status' | 'reason'>): boolean {
  return c.status === 'True' && !HAPPY.has(c.reason);
}

/**
 * Ready = every other condition True. Its reason is the first unhappy reason among them in order
 * (Accepted, ResolvedRefs, Programmed) — including warnings on a True condition such as
 * Accepted=True/Conflicted — so `kubectl get` shows what to look at; otherwise 'Ready'.
 */
export function summarizeReady(conditions: StatusCondition[]): StatusCondition {
  const others = conditions.filter((c) => c.type !== 'Ready');
  const notTrue = others.find((c) => c.status !== 'True');
  if (notTrue) {
    return {
      type: 'Ready',
      status: notTrue.status === 'False' ? 'False' : 'Unknown',
      reason: notTrue.reason,
      message: notTrue.message,
    };
  }
  const warning = others.find(isWarning);
  if (warning) return { type: 'Ready', status: 'True', reason: warning.reason, message: warning.message };
  return {
    type: 'Ready',
    status: 'True',
    reason: REASONS.ready,
    message: others.some((c) => c.type === 'Programmed')
      ? 'Accepted, all references resolved, served by every live relay'
      : 'Accepted and all references resolved',
  };
}

/**
 * The conditions of the same two decisions, one frozen array for every resource that has them
 * (100k accepted MailRoutes differ only in their generation: one array instead of 100k arrays of
 * three conditions). Bounded: forgotten all at once past SHARED_CONDITIONS_LIMIT decisions.
 */
const SHARED_CONDITIONS_LIMIT = 4096;
const sharedByDecisions = new Map<string, StatusCondition[]>();

function sharedConditions(accepted: Verdict, resolvedRefs: Verdict): StatusCondition[] {
  const key = [
    accepted.status,
    accepted.reason,
    accepted.message,
    resolvedRefs.status,
    resolvedRefs.reason,
    resolvedRefs.message,
  ].join('\0');
  const hit = sharedByDecisions.get(key);
  if (hit) return hit;
  const conditions: StatusCondition[] = [
    Object.freeze({ type: 'Accepted', ...accepted }),
    Object.freeze({ type: 'ResolvedRefs', ...resolvedRefs }),
  ];
  conditions.push(Object.freeze(summarizeReady(conditions)));
  Object.freeze(conditions);
  if (sharedByDecisions.size >= SHARED_CONDITIONS_LIMIT) sharedByDecisions.clear();
  sharedByDecisions.set(key, conditions);
  return conditions;
}

/** The status from the compile step's two decisions, with Ready summarising them. */
export function makeStatus(
  generation: number | undefined,
  accepted: Omit<StatusCondition, 'type'>,
  resolvedRefs: Omit<StatusCondition, 'type'>,
  conflicts?: Conflict[],
): ResourceStatus {
  const conditions = sharedConditions(accepted, resolvedRefs);
  if (conflicts && conflicts.length > 0) {
    const status: ResourceStatus = { conditions };
    if (generation !== undefined) status.generation = generation;
    status.conflicts = conflicts;
    return status;
  }
  return sharedStatus(generation, conditions);
}

/**
 * One frozen status per generation and shared conditions: 100k accepted MailRoutes at generation 1
 * have the very same status (one object instead of 100k; about 4 MB of the operator's heap).
 * Bounded like the conditions: a table past SHARED_STATUS_LIMIT generations starts again.
 */
const SHARED_STATUS_LIMIT = 1024;
const statusByConditions = new WeakMap<StatusCondition[], Map<number | undefined, ResourceStatus>>();

function sharedStatus(generation: number | undefined, conditions: StatusCondition[]): ResourceStatus {
  let byGeneration = statusByConditions.get(conditions);
  if (!byGeneration) {
    byGeneration = new Map();
    statusByConditions.set(conditions, byGeneration);
  }
  const hit = byGeneration.get(generation);
  if (hit) return hit;
  const status: ResourceStatus = generation === undefined ? { conditions } : { conditions, generation };
  Object.freeze(status);
  if (byGeneration.size >= SHARED_STATUS_LIMIT) byGeneration.clear();
  byGeneration.set(generation, status);
  return status;
}

/** One condition as decided, before it gets its type. */
export type Verdict = Omit<StatusCondition, 'type'>;

/** ResolvedRefs of a TenantPolicy: it references nothing. */
export const NO_REFERENCES: Verdict = {
  status: 'True',
  reason: REASONS.resolvedRefs,
  message: 'no references',
};

/** Accepted=True (reason Accepted, or a warning reason such as Conflicted). */
export const accepted = (message: string, reason: string = REASONS.accepted): Verdict => ({
  status: 'True',
  reason,
  message,
});

/** Accepted=False: `reason` says why, `message` what to do. */
export const notAccepted = (reason: string, message: string): Verdict => ({
  status: 'False',
  reason,
  message,
});

/** A TenantPolicy's status: it has no references, so only Accepted is decided. */
export function policyStatus(
  generation: number | undefined,
  verdict: Verdict,
  conflicts?: Conflict[],
): ResourceStatus {
  return makeStatus(generation, verdict, NO_REFERENCES, conflicts);
}

/** An invalid spec: Accepted=False/InvalidSpec with the field errors, references not looked at. */
export function invalidSpecStatus(
  generation: number | undefined,
  message: string,
  conflicts?: Conflict[],
): ResourceStatus {
  return makeStatus(
    generation,
    notAccepted(REASONS.invalidSpec, message),
    { status: 'Unknown', reason: REASONS.notChecked, message: 'not checked: the spec is invalid' },
    conflicts,
  );
}

/** A MailRoute refused for `reason` (no tenant, a domain not owned): its references are not looked at. */
export function routeNotAcceptedStatus(
  generation: number | undefined,
  reason: string,
  message: string,
): ResourceStatus {
  return makeStatus(generation, notAccepted(reason, message), {
    status: 'Unknown',
    reason,
    message: 'not checked: the route is not accepted',
  });
}

/** `status` with Accepted replaced (ResolvedRefs and conflicts kept), Ready recomputed. */
export function withAccepted(status: ResourceStatus, verdict: Verdict): ResourceStatus {
  const refs = status.conditions.find((c) => c.type === 'ResolvedRefs') ?? NO_REFERENCES;
  const { status: refsStatus, reason, message } = refs;
  return makeStatus(status.generation, verdict, { status: refsStatus, reason, message }, status.conflicts);
}
