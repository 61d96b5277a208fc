import { describe, expect, it } from 'vitest';
import { messageIdOf } from './sink.ts';

const msg = (head: string, body = 'hello\r\n') => Buffer.from(`${head}\r\n\r\n${body}`, 'latin1');

describe('messageIdOf', () => {
  it('returns the Message-ID without angle brackets, whatever the header case', () => {
    expect(messageIdOf(msg('From: a@b\r\nMessage-ID: <x-1@e2e.drill>\r\nSubject: s'))).toBe('x-1@e2e.drill');
    expect(messageIdOf(msg('message-id:<y@z>'))).toBe('y@z');
  });
  it('reads a folded header and one without brackets', () => {
    expect(messageIdOf(msg('Subject: s\r\nMessage-Id:\r\n  <folded@host>'))).toBe('folded@host');
    expect(messageIdOf(msg('Message-Id: bare@host'))).toBe('bare@host');
  });
  it('looks at the header section only', () => {
    expect(messageIdOf(msg('Subject: s', 'Message-ID: <in-body@host>\r\n'))).toBe('');
    expect(messageIdOf(Buffer.from(''))).toBe('');
  });
});
