import { describe, expect, it } from 'vitest';
import { formatDuration, parseDuration } from './duration.ts';
import { formatSize, parseSize } from './size.ts';

describe('parseSize (one grammar for flags and resources)', () => {
  it('reads bytes, binary and decimal suffixes, the flag-only K, exponents and whole fractions', () => {
    const ok = (v: string | number) => parseSize(v);
    expect(ok('26214400')).toEqual({ ok: true, value: 26214400 });
    expect(ok('25Mi')).toEqual({ ok: true, value: 25 * 1024 * 1024 });
    expect(ok('512Ki')).toEqual({ ok: true, value: 512 * 1024 });
    expect(ok('10M')).toEqual({ ok: true, value: 10_000_000 });
    expect(ok('10k')).toEqual({ ok: true, value: 10_000 });
    expect(ok('10K')).toEqual({ ok: true, value: 10_000 });
    expect(ok('25e6')).toEqual({ ok: true, value: 25_000_000 });
    expect(ok('1.5Ki')).toEqual({ ok: true, value: 1536 });
    expect(ok(0)).toEqual({ ok: true, value: 0 });
  });

  it('refuses what is not a whole number of bytes, with the grammar in the error', () => {
    expect(parseSize('10MB')).toMatchObject({
      ok: false,
      error: expect.stringMatching(/"10MB" is not a quantity; use bytes/),
    });
    expect(parseSize('1.5')).toMatchObject({ ok: false, error: '"1.5" is not a whole number of bytes' });
    expect(parseSize('100Ei')).toMatchObject({ ok: false, error: '"100Ei" is too large' });
    expect(parseSize(-1)).toMatchObject({ ok: false });
    expect(parseSize(1.5)).toMatchObject({ ok: false });
  });

  it('formatSize spells a size so that parseSize reads it back', () => {
    for (const n of [0, 1000, 1024, 8 * 1024 * 1024, 25 * 1024 * 1024, 3 * 1024 ** 3, 1536]) {
      expect(parseSize(formatSize(n))).toEqual({ ok: true, value: n });
    }
    expect(formatSize(25 * 1024 * 1024)).toBe('25Mi');
  });
});

describe('parseDuration (one grammar, fields narrow it)', () => {
  it('reads every unit, sequences and fractions', () => {
    expect(parseDuration('500ms')).toEqual({ ok: true, value: 500 });
    expect(parseDuration('30s')).toEqual({ ok: true, value: 30_000 });
    expect(parseDuration('5m')).toEqual({ ok: true, value: 300_000 });
    expect(parseDuration('1h30m')).toEqual({ ok: true, value: 5_400_000 });
    expect(parseDuration('30d')).toEqual({ ok: true, value: 30 * 86_400_000 });
    expect(parseDuration('1.5s')).toEqual({ ok: true, value: 1500 });
    expect(parseDuration('1m500ms')).toEqual({ ok: true, value: 60_500 });
  });

  it('a field grammar allows fewer units or whole numbers only', () => {
    const rate = { units: ['h', 'm', 's'] as const, whole: true };
    expect(parseDuration('1h30m', rate)).toEqual({ ok: true, value: 5_400_000 });
    expect(parseDuration('1d', rate)).toMatchObject({
      ok: false,
      error: '"1d" is not a duration; use whole numbers with h, m or s, e.g. 500ms, 30s, 5m, 1h30m',
    });
    expect(parseDuration('1.5s', rate)).toMatchObject({ ok: false });
    expect(parseDuration('10')).toMatchObject({
      ok: false,
      error: expect.stringMatching(/^"10" is not a duration/),
    });
    expect(parseDuration('5 m')).toMatchObject({ ok: false });
  });

  it('formatDuration spells a duration so that parseDuration reads it back', () => {
    for (const ms of [0, 1, 500, 1000, 30_000, 600_000, 3_600_000, 86_400_000, 90_500]) {
      expect(parseDuration(formatDuration(ms))).toEqual({ ok: true, value: ms });
    }
    expect(formatDuration(30_000)).toBe('30s');
    expect(formatDuration(0)).toBe('0ms');
  });
});
