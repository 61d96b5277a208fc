// Removes SMTP dot-stuffing from the relay's RAW data stream, for captured messages only (the
// relay's fast path passes stuffed bytes through untouched). The raw stream has already passed the
// smuggling guard, so every line-leading dot is "<CRLF>.." (a stuffed dot): drop the first dot of
// every line. Streaming: only "was the previous chunk's last byte a LF" is carried over.
const LF_DOT = Buffer.from('\n.');

export class DotUnstuffer {
  private atLineStart = true;

  push(chunk: Buffer): Buffer {
    if (chunk.length === 0) return chunk;
    const parts: Buffer[] = [];
    let start = 0;
    if (this.atLineStart && chunk[0] === 0x2e) start = 1;
    let p = chunk.indexOf(LF_DOT, start);
    if (p < 0 && start === 0) {
      this.atLineStart = chunk[chunk.length - 1] === 0x0a;
      return chunk;
    }
    while (p >= 0) {
      parts.push(chunk.subarray(start, p + 1));
      start = p + 2;
      p = chunk.indexOf(LF_DOT, start);
    }
    parts.push(chunk.subarray(start));
    this.atLineStart = chunk[chunk.length - 1] === 0x0a;
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }
}
