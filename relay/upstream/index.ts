// The upstream leg: SMTP client transactions (connection.ts: why we have our own client), the pool, failover.
export type { MailParams, UpstreamTarget } from './connection.ts';
export { UpstreamError, type UpstreamErrorKind } from './errors.ts';
export { beginFirst, type FailoverResult } from './failover.ts';
export {
  type PoolOptions,
  type TransactionOutcome,
  type TransactionResult,
  UpstreamPool,
  UpstreamTransaction,
} from './pool.ts';
export type { SmtpReply } from './reply.ts';
