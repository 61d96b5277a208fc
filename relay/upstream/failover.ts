// Trying a route's upstreams in order (schema: forward.upstreams "Tried in order").

import type { MailParams, UpstreamTarget } from './connection.ts';
import { UpstreamError } from './errors.ts';
import type { UpstreamPool, UpstreamTransaction } from './pool.ts';
import type { SmtpReply } from './reply.ts';

export type FailoverResult =
  | { ok: true; tx: UpstreamTransaction; reply: SmtpReply; target: UpstreamTarget }
  | { ok: false; reply: SmtpReply; target: UpstreamTarget };

/**
 * Begins the transaction on the first upstream that accepts MAIL FROM. A failure (UpstreamError) or a
 * 4xx MAIL reply moves on to the next upstream; a 5xx MAIL reply is final (the sender is refused, another
 * upstream of the same route would say the same). When every upstream failed: the last 4xx reply if any
 * upstream answered, else the last UpstreamError is thrown. Other errors (TypeError for unsafe input)
 * are thrown at once.
 */
export async function beginFirst(
  pool: UpstreamPool,
  targets: readonly UpstreamTarget[],
  mailFrom: string,
  params?: MailParams,
): Promise<FailoverResult> {
  if (targets.length === 0) throw new TypeError('beginFirst needs at least one upstream');
  let deferred: { reply: SmtpReply; target: UpstreamTarget } | undefined;
  let lastError: UpstreamError | undefined;
  for (const target of targets) {
    try {
      const r = await pool.begin(target, mailFrom, params);
      if (r.ok) return { ...r, target };
      if (r.reply.code >= 500) return { ok: false, reply: r.reply, target };
      deferred = { reply: r.reply, target };
    } catch (err) {
      if (!(err instanceof UpstreamError)) throw err;
      lastError = err;
    }
  }
  if (deferred) return { ok: false, ...deferred };
  throw lastError!;
}
