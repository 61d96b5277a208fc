import { describe, expect, it } from 'vitest';
import { explainEnvelope } from '../../relay/routing/decide.ts';
import { buildRoutingTable } from '../../relay/routing/table.ts';
import { forward, relayConfig, tenant } from '../../relay/smtp/testing/harness.ts';
import { applyTransactionRule } from './route.ts';

const annotate = {
  mode: 'annotate' as const,
  holdBytes: 262144,
  rejectQuarantine: false,
  deferOnLookupFailure: false,
};

function explain(config: ReturnType<typeof relayConfig>, to: string[]) {
  const e = explainEnvelope(buildRoutingTable(config), { to, from: 'a@sender.test' });
  return applyTransactionRule(e, config).recipients.map((r) => r.reply ?? r.action);
}

describe('applyTransactionRule (the relay’s transaction scope)', () => {
  it('splits recipients of another upstream set, as the relay does', () => {
    const config = relayConfig([
      tenant(
        'acme',
        ['acme.test'],
        [forward('a', ['a@acme.test'], [2525]), forward('b', ['b@acme.test'], [2526])],
      ),
    ]);
    expect(explain(config, ['a@acme.test', 'b@acme.test', 'a@acme.test'])).toEqual([
      'relay',
      '452 4.5.3 Recipient routes elsewhere, send it in a separate transaction',
      'relay',
    ]);
  });

  it('splits recipients whose tenants authenticate senders differently, as the relay does', () => {
    // same upstream, but one Authentication-Results header and one verdict per message
    const config = relayConfig([
      tenant('acme', ['acme.test'], [forward('a', ['*@acme.test'], [2525])]),
      tenant('beta', ['beta.test'], [forward('b', ['*@beta.test'], [2525])], { authentication: annotate }),
    ]);
    expect(explain(config, ['x@acme.test', 'y@beta.test'])).toEqual([
      'relay',
      '452 4.5.3 Recipient routes elsewhere, send it in a separate transaction',
    ]);
  });
});
