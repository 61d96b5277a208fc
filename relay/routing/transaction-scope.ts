// One upstream transaction per client transaction: every recipient of a message goes to the same
// upstream set (the first accepted recipient opened it) and falls under the same sender-authentication
// settings (one Authentication-Results header and one verdict per message). A recipient outside the
// transaction's scope gets REPLIES.split() and comes again in a transaction of its own. The relay
// (relay/smtp/transaction.ts) and `mailplus route` both decide with these functions. Pure.
import type { Tenant } from '../../contract/config/types.gen.ts';

/** The scope a relayed recipient needs: its route's upstream list and its tenant's authentication settings. */
export function transactionScope(d: { upstreamKey: string; tenant: Pick<Tenant, 'authentication'> }): string {
  const auth = d.tenant.authentication ? JSON.stringify(d.tenant.authentication) : '';
  return `${d.upstreamKey}\n${auth}`;
}

/** Whether a recipient of `scope` may join a transaction whose scope is `held` (undefined: none yet). */
export function joinsTransaction(held: string | undefined, scope: string): boolean {
  return held === undefined || held === scope;
}
