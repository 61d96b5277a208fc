import { describe, expect, it } from 'vitest';
import { isIdnaDomain, needsSmtpUtf8, receivedPath } from './address-form.ts';

describe('receivedPath', () => {
  it('is the path as written: A-labels stay, brackets, parameters and source routes go', () => {
    expect(receivedPath('RCPT TO:<kunde@xn--bcher-kva.example>')).toBe('kunde@xn--bcher-kva.example');
    expect(receivedPath('MAIL FROM: <jörg@bücher.example> SMTPUTF8 SIZE=10')).toBe('jörg@bücher.example');
    expect(receivedPath('RCPT TO:<@relay.example,@b.example:u@xn--bcher-kva.example>')).toBe(
      'u@xn--bcher-kva.example',
    );
    expect(receivedPath('MAIL FROM:<>')).toBe('');
    expect(receivedPath('RCPT TO:u@example.com')).toBeUndefined();
    expect(receivedPath('RCPT')).toBeUndefined();
  });
});

describe('needsSmtpUtf8', () => {
  it('is true for any non-ASCII character, local part or domain', () => {
    expect(needsSmtpUtf8('kunde@xn--bcher-kva.example')).toBe(false);
    expect(needsSmtpUtf8('kunde@bücher.example')).toBe(true);
    expect(needsSmtpUtf8('zoë@example.com')).toBe(true);
  });
});

describe('isIdnaDomain', () => {
  it('takes ASCII, A-labels and U-labels in any case; refuses spellings UTS #46 would map', () => {
    for (const ok of [
      'u@example.com',
      'u@XN--BCHER-KVA.example',
      'jörg@bücher.example',
      'u@BÜCHER.example',
      'u@faß.de',
      'postmaster',
    ])
      expect(isIdnaDomain(ok), ok).toBe(true);
    for (const bad of [
      'u@bu\u0308cher.example',
      'u@ｅxample.com',
      'u@bücher\u3002example',
      'u@bü\u00adcher.example',
    ])
      expect(isIdnaDomain(bad), bad).toBe(false);
  });
});
