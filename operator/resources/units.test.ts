import { describe, expect, it } from 'vitest';
import { parseByteQuantity, parseDurationSeconds } from './units.ts';

describe('parseByteQuantity', () => {
  it.each([
    [1048576, 1048576],
    ['1048576', 1048576],
    ['25Mi', 26214400],
    ['10M', 10000000],
    ['512Ki', 524288],
    ['1.5Ki', 1536],
    ['1Gi', 1073741824],
    ['2k', 2000],
    ['1e3', 1000],
    ['+5', 5],
    ['.5Ki', 512],
  ])('%j = %d bytes', (input, bytes) => {
    expect(parseByteQuantity(input)).toEqual({ ok: true, value: bytes });
  });
  it.each([0, -1, 1.5, '0', '1.5', '10m', '10 Mi', 'Mi', '10MB', '-5', '1Ei0', '100Ei'])(
    'rejects %j',
    (input) => {
      expect(parseByteQuantity(input).ok).toBe(false);
    },
  );
});

describe('parseDurationSeconds', () => {
  it.each([
    ['30s', 30],
    ['1m', 60],
    ['1h', 3600],
    ['1h30m', 5400],
    ['90s', 90],
    ['1h0m5s', 3605],
  ])('%s = %ds', (input, s) => {
    expect(parseDurationSeconds(input)).toEqual({ ok: true, value: s });
  });
  it.each(['', '0s', '1.5h', '1d', '10', 's', '1ms', '-1s', '1 m'])('rejects %j', (input) => {
    expect(parseDurationSeconds(input).ok).toBe(false);
  });
});
