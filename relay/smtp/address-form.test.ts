import { describe, expect, it } from 'vitest';
import { needsSmtpUtf8, receivedPath } from './address-form.ts';

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
