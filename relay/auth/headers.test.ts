import { describe, expect, it } from 'vitest';
import { authResultsHeader, claimedAuthservId, headerSectionEnd, stripOwnAuthResults } from './headers.ts';

describe('headerSectionEnd', () => {
  it('finds the empty line, or says it is not there yet', () => {
    expect(headerSectionEnd(Buffer.from('A: 1\r\nB: 2\r\n\r\nbody'))).toBe(14);
    expect(headerSectionEnd(Buffer.from('\r\nbody'))).toBe(2);
    expect(headerSectionEnd(Buffer.from('A: 1\r\nB: 2\r\n'))).toBe(-1);
  });
});

describe('claimedAuthservId', () => {
  it('reads the id with comments, version and quoting (RFC 8601 §2.2)', () => {
    expect(claimedAuthservId(' MX.Example.org; spf=pass')).toBe('mx.example.org');
    expect(claimedAuthservId(' (forged) mx.example.org 1; none')).toBe('mx.example.org');
    expect(claimedAuthservId(' "mx.example.org"; dkim=pass')).toBe('mx.example.org');
    expect(claimedAuthservId(' mx.example.org.evil; dkim=pass')).toBe('mx.example.org.evil');
  });
});

describe('stripOwnAuthResults', () => {
  it('removes folded fields claiming our id, keeps others and everything else', () => {
    const section = Buffer.from(
      'Received: from a\r\n' +
        'Authentication-Results: mx.example.org;\r\n\tdkim=pass header.d=bank.example\r\n' +
        'authentication-results : other.example; spf=fail\r\n' +
        'AUTHENTICATION-RESULTS: (c) MX.EXAMPLE.ORG; dmarc=pass\r\n' +
        'Subject: hi\r\n\r\n',
    );
    const r = stripOwnAuthResults(section, 'mx.example.org');
    expect(r.removed).toBe(2);
    expect(r.section.toString()).toBe(
      'Received: from a\r\nauthentication-results : other.example; spf=fail\r\nSubject: hi\r\n\r\n',
    );
  });
  it('returns the same buffer when nothing claims our id', () => {
    const section = Buffer.from('Subject: x\r\nAuthentication-Results: other; none\r\n\r\n');
    expect(stripOwnAuthResults(section, 'mx.example.org').section).toBe(section);
  });
});

describe('authResultsHeader', () => {
  it('folds one result per line; none without results', () => {
    expect(
      authResultsHeader('mx.example.org', ['spf=pass smtp.mailfrom=a@b.example', 'dkim=none']).toString(),
    ).toBe(
      'Authentication-Results: mx.example.org;\r\n\tspf=pass smtp.mailfrom=a@b.example;\r\n\tdkim=none\r\n',
    );
    expect(authResultsHeader('mx', []).toString()).toBe('Authentication-Results: mx;\r\n\tnone\r\n');
  });
});
