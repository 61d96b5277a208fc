import { describe, expect, it } from 'vitest';
import { joinsTransaction, transactionScope } from './transaction-scope.ts';

const annotate = {
  mode: 'annotate' as const,
  holdBytes: 262144,
  rejectQuarantine: false,
  deferOnLookupFailure: false,
};

describe('transactionScope / joinsTransaction', () => {
  it('one upstream set and one authentication setting per transaction', () => {
    const plain = transactionScope({ upstreamKey: 'none:v::mx1:25', tenant: {} });
    const sameUpstreams = transactionScope({ upstreamKey: 'none:v::mx1:25', tenant: {} });
    const otherUpstreams = transactionScope({ upstreamKey: 'none:v::mx2:25', tenant: {} });
    const authenticated = transactionScope({
      upstreamKey: 'none:v::mx1:25',
      tenant: { authentication: annotate },
    });
    const enforcing = transactionScope({
      upstreamKey: 'none:v::mx1:25',
      tenant: { authentication: { ...annotate, mode: 'enforce' } },
    });
    expect(joinsTransaction(undefined, plain)).toBe(true);
    expect(joinsTransaction(plain, sameUpstreams)).toBe(true);
    expect(joinsTransaction(plain, otherUpstreams)).toBe(false);
    expect(joinsTransaction(plain, authenticated)).toBe(false);
    expect(joinsTransaction(authenticated, enforcing)).toBe(false);
    expect(
      joinsTransaction(
        authenticated,
        transactionScope({ upstreamKey: 'none:v::mx1:25', tenant: { authentication: { ...annotate } } }),
      ),
    ).toBe(true);
  });
});
