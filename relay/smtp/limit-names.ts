// Its own module because the metrics (observability/metrics.ts) pre-register every label value and
// fairness.ts depends on the SMTP layer, which depends on the metrics: no cycle.

/** The `limit` label of mailplus_relay_limit_hits_total: a fixed set. */
export type LimitName =
  | 'connections_per_client'
  | 'connections_per_network'
  | 'upstream_per_client'
  | 'upstream_per_tenant'
  | 'upstream_hold_time'
  | 'recipients_per_transaction'
  | 'recorded_recipients'
  | 'errors_per_session'
  | 'error_sleep';

export const LIMIT_NAMES: readonly LimitName[] = [
  'connections_per_client',
  'connections_per_network',
  'upstream_per_client',
  'upstream_per_tenant',
  'upstream_hold_time',
  'recipients_per_transaction',
  'recorded_recipients',
  'errors_per_session',
  'error_sleep',
];
