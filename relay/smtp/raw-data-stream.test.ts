import { describe, expect, it } from 'vitest';
import { RawDataStream, type RawSMTPDataStream } from './raw-data-stream.ts';

interface Outcome {
  content: Buffer;
  bad: boolean;
  byteLength: number;
  sizeExceeded: boolean;
  after: string[];
}

/** Feeds "DATA\r\n" + input in the given chunks; returns what the data stream saw and the commands after it. */
async function feed(
  input: Buffer,
  chunks: number[] | 'bytewise' | 'whole',
  maxBytes?: number,
): Promise<Outcome> {
  const parser = new RawDataStream();
  const after: string[] = [];
  let resolveDone: (o: Outcome) => void = () => {};
  const done = new Promise<Outcome>((r) => {
    resolveDone = r;
  });
  let outcome: Omit<Outcome, 'after'> | undefined;
  parser.oncommand = (cmd, cb) => {
    const line = cmd.toString('latin1');
    if (line === 'DATA') {
      const ds = parser.startDataMode(maxBytes) as RawSMTPDataStream;
      const parts: Buffer[] = [];
      ds.on('data', (c: Buffer) => parts.push(c));
      ds.on('end', () => {
        outcome = {
          content: Buffer.concat(parts),
          bad: !!ds.badLineEnding,
          byteLength: ds.byteLength,
          sizeExceeded: ds.sizeExceeded,
        };
        parser.continue();
      });
    } else if (line === 'QUIT') {
      after.push(line);
      queueMicrotask(() => resolveDone({ ...(outcome as Omit<Outcome, 'after'>), after }));
    } else {
      after.push(line);
    }
    cb?.();
  };
  const all = Buffer.concat([Buffer.from('DATA\r\n'), input, Buffer.from('QUIT\r\n')]);
  const pieces: Buffer[] = [];
  if (chunks === 'whole') pieces.push(all);
  else if (chunks === 'bytewise') for (let i = 0; i < all.length; i++) pieces.push(all.subarray(i, i + 1));
  else {
    let pos = 0;
    for (const n of chunks) {
      pieces.push(all.subarray(pos, pos + n));
      pos += n;
    }
    pieces.push(all.subarray(pos));
  }
  for (const p of pieces) parser.write(p);
  return done;
}

/** Every 2-way split of the stream (after "DATA\r\n"), plus bytewise and whole. */
async function allSplits(input: Buffer, check: (o: Outcome) => void): Promise<void> {
  check(await feed(input, 'whole'));
  check(await feed(input, 'bytewise'));
  for (let i = 1; i < input.length; i++) check(await feed(input, [6 + i]));
}

const b = (s: string) => Buffer.from(s, 'latin1');

describe('RawDataStream (raw DATA pass-through)', () => {
  it('passes dot-stuffed content through unchanged, terminator excluded, CRLF before it included', async () => {
    const body = 'Subject: x\r\n\r\n..leading dot\r\nline\r\n...\r\nend\r\n';
    await allSplits(b(`${body}.\r\nNOOP\r\n`), (o) => {
      expect(o.content.toString('latin1')).toBe(body);
      expect(o.bad).toBe(false);
      expect(o.after).toEqual(['NOOP', 'QUIT']);
      expect(o.byteLength).toBe(body.length);
    });
  });

  it('handles the empty message', async () => {
    await allSplits(b('.\r\nNOOP\r\n'), (o) => {
      expect(o.content.length).toBe(0);
      expect(o.bad).toBe(false);
      expect(o.after).toEqual(['NOOP', 'QUIT']);
    });
  });

  it('a stuffed first line is content', async () => {
    await allSplits(b('..\r\n.\r\n'), (o) => {
      expect(o.content.toString('latin1')).toBe('..\r\n');
      expect(o.after).toEqual(['QUIT']);
    });
  });

  it('relays 8-bit bytes, long lines and bare LF not next to a dot as is', async () => {
    const body = Buffer.concat([
      b('x: \xff\xfe\x80\r\n'),
      Buffer.alloc(5000, 0x61),
      b('\r\nbare\nlf and bare\rcr\r\n'),
    ]);
    const o = await feed(Buffer.concat([body, b('.\r\n')]), [100, 1000, 3]);
    expect(o.content.equals(body)).toBe(true);
    expect(o.bad).toBe(false);
  });

  const smuggling: Array<[string, string]> = [
    ['bare LF before dot CRLF', 'a\r\n\n.\r\nMAIL FROM:<x@y>\r\n'],
    ['bare LF dot bare LF', 'a\r\nb\n.\nMAIL FROM:<x@y>\r\n'],
    ['dot bare LF', 'a\r\n.\nMAIL FROM:<x@y>\r\n'],
    ['bare CR dot', 'a\r.\r\nMAIL FROM:<x@y>\r\n'],
    ['CR dot CR', 'a\r\n\r.\r\r\n'],
    ['unstuffed dot line', 'a\r\n.x\r\n'],
    ['dot bare LF at data start', '.\nMAIL FROM:<x@y>\r\n'],
    ['unstuffed dot at data start', '.x\r\n'],
  ];
  for (const [name, shape] of smuggling) {
    it(`refuses the smuggling shape: ${name}, and reads on to the real terminator`, async () => {
      await allSplits(b(`${shape}real\r\n.\r\nNOOP\r\n`), (o) => {
        expect(o.bad).toBe(true);
        // nothing at or after the offending bytes is ever emitted
        expect(o.content.toString('latin1')).not.toContain('MAIL FROM');
        expect(o.after).toEqual(['NOOP', 'QUIT']);
      });
    });
  }

  // A chunk whose last bytes hold no CR or LF is forwarded whole (no held-back tail, no copy): the
  // next chunk's first bytes must still be judged with the plain byte before them in mind.
  const plain = 'x'.repeat(12);
  it('after a chunk that ended on plain bytes: CRLF, stuffed dot and terminator at the next chunk start', async () => {
    const body = `${plain}\r\n..${plain}\r\n${plain}\r\n${plain}.${plain}\r\n`;
    await allSplits(b(`${body}.\r\nNOOP\r\n`), (o) => {
      expect(o.content.toString('latin1')).toBe(body);
      expect(o.bad).toBe(false);
      expect(o.after).toEqual(['NOOP', 'QUIT']);
      expect(o.byteLength).toBe(body.length);
    });
  });
  for (const [name, shape] of [
    ...smuggling.filter(([n]) => !n.endsWith('at data start')),
    ['bare LF dot right after plain bytes', '\n.\r\nMAIL FROM:<x@y>\r\n'],
    ['bare CR dot right after plain bytes', '\r.\r\nMAIL FROM:<x@y>\r\n'],
  ] as Array<[string, string]>) {
    it(`refuses the smuggling shape after plain bytes: ${name}`, async () => {
      await allSplits(b(`${plain}${shape}real\r\n.\r\nNOOP\r\n`), (o) => {
        expect(o.bad).toBe(true);
        expect(o.content.toString('latin1')).not.toContain('MAIL FROM');
        expect(o.after).toEqual(['NOOP', 'QUIT']);
      });
    });
  }

  it('counts raw bytes (stuffing dots included) and flags sizeExceeded', async () => {
    const body = '..12345678\r\n';
    const o = await feed(b(`${body}.\r\n`), 'whole', 10);
    expect(o.byteLength).toBe(body.length);
    expect(o.sizeExceeded).toBe(true);
  });
});
