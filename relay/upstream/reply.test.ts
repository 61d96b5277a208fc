import { describe, expect, it } from 'vitest';
import { MAX_REPLY_BYTES, ReplyParseError, ReplyParser, unexpectedReply } from './reply.ts';

const push = (p: ReplyParser, s: string) => p.push(Buffer.from(s, 'latin1'));

describe('ReplyParser', () => {
  it('parses a single-line reply with an enhanced code', () => {
    const [r] = push(new ReplyParser(), '250 2.1.0 Sender ok\r\n');
    expect(r).toEqual({ code: 250, enhancedCode: '2.1.0', text: 'Sender ok', lines: ['2.1.0 Sender ok'] });
  });

  it('joins multi-line replies and strips repeated enhanced codes', () => {
    const [r] = push(
      new ReplyParser(),
      '550-5.1.1 No such user\r\n550-5.1.1 here, really\r\n550 5.1.1 Bye\r\n',
    );
    expect(r.code).toBe(550);
    expect(r.enhancedCode).toBe('5.1.1');
    expect(r.text).toBe('No such user here, really Bye');
    expect(r.lines).toHaveLength(3);
  });

  it('ignores an enhanced-looking code whose class does not match', () => {
    const [r] = push(new ReplyParser(), '250 5.1.1 odd\r\n');
    expect(r.enhancedCode).toBeUndefined();
    expect(r.text).toBe('5.1.1 odd');
  });

  it('handles replies split across chunks, several per chunk, bare LF, and a code-only line', () => {
    const p = new ReplyParser();
    expect(push(p, '25')).toEqual([]);
    expect(p.pending).toBe(true);
    expect(push(p, '0-a\r\n250 b\r\n354\n').map((r) => [r.code, r.text])).toEqual([
      [250, 'a b'],
      [354, ''],
    ]);
    expect(p.pending).toBe(false);
  });

  it('rejects malformed lines, code changes and oversized replies', () => {
    expect(() => push(new ReplyParser(), 'hello\r\n')).toThrow(ReplyParseError);
    expect(() => push(new ReplyParser(), '199 x\r\n')).toThrow(ReplyParseError);
    expect(() => push(new ReplyParser(), '250-a\r\n251 b\r\n')).toThrow(/changed/);
    expect(() => push(new ReplyParser(), `250 ${'x'.repeat(MAX_REPLY_BYTES)}`)).toThrow(/larger/);
    expect(() => push(new ReplyParser(), '250-x\r\n'.repeat(300))).toThrow(/lines/);
  });
});

describe('unexpectedReply (RFC 5321 §4.3.2 reply sequences)', () => {
  it('allows each step its positive replies and any refusal', () => {
    for (const [step, code] of [
      ['greeting', 220],
      ['EHLO', 250],
      ['STARTTLS', 220],
      ['XCLIENT', 220],
      ['MAIL', 250],
      ['RCPT', 251],
      ['DATA', 354],
      ['end of data', 250],
      ['RSET', 250],
      ['QUIT', 221],
      ['DATA', 451],
      ['end of data', 554],
    ] as const) {
      expect(unexpectedReply(step, code), `${step} ${code}`).toBeUndefined();
    }
  });

  it('refuses a positive reply the step does not allow', () => {
    expect(unexpectedReply('DATA', 250)).toBe('reply 250 to DATA is not allowed (expected 354, or 4xx/5xx)');
    expect(unexpectedReply('end of data', 354)).toMatch(/^reply 354 to end of data/);
    expect(unexpectedReply('RCPT', 354)).toMatch(/expected 250 or 251/);
    expect(unexpectedReply('MAIL', 220)).toBeDefined();
    expect(unexpectedReply('greeting', 250)).toBeDefined();
    expect(unexpectedReply('EHLO', 220)).toBeDefined();
  });
});
