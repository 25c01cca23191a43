/**
 * A bounded line splitter. Memory is one buffer of maxLineLength (+ delimiter) bytes allocated
 * once, whatever arrives: a device that never sends the delimiter, or sends megabytes of noise,
 * cannot grow it. (@serialport/parser-readline concatenates until it sees the delimiter, so an
 * endless line grows without limit — the failure this class prevents.)
 *
 * A line longer than maxLineLength is reported once (`onTooLong`) as soon as it passes the limit,
 * then its bytes are discarded up to the next delimiter, so the line after it is read normally.
 */
export class LineSplitter {
  private readonly delimiter: Buffer;
  private readonly buf: Buffer;
  private len = 0;
  private discarding = false;
  /** The last delimiter.length bytes seen, as a small ring, to find delimiters while discarding. */
  private readonly recent: Buffer;
  private recentCount = 0;
  private recentPos = 0;
  private readonly stripCr: boolean;
  private readonly stripLf: boolean;

  /**
   * @param onLine called synchronously with a view of the internal buffer: valid only until it
   *   returns (decode or copy it there).
   * @param onTooLong called once per line that exceeds the limit.
   */
  constructor(
    delimiter: string,
    readonly maxLineLength: number,
    private readonly onLine: (line: Buffer) => void,
    private readonly onTooLong: () => void,
  ) {
    this.delimiter = Buffer.from(delimiter, 'utf8');
    if (this.delimiter.length === 0) throw new RangeError('empty delimiter');
    // With "\n" a line may end in "\r\n": the '\r' is stripped, so it must not count against the limit.
    this.stripCr = delimiter === '\n';
    // With "\r" a device that ends lines in "\r\n" leaves the '\n' at the start of the next line;
    // it is stripped there (otherwise every line after the first would be dropped as binary).
    this.stripLf = delimiter === '\r';
    this.buf = Buffer.allocUnsafe(maxLineLength + this.delimiter.length + (this.stripCr || this.stripLf ? 1 : 0));
    this.recent = Buffer.alloc(this.delimiter.length);
  }

  /** Bytes of the current, unfinished line held in memory (never more than the buffer size). */
  get pendingBytes(): number {
    return this.len;
  }

  /** Forgets a partial line (after the port was reopened: its start belongs to another session). */
  reset(): void {
    this.len = 0;
    this.discarding = false;
    this.recentCount = 0;
    this.recentPos = 0;
  }

  push(chunk: Buffer): void {
    if (this.delimiter.length === 1) this.pushSingle(chunk, this.delimiter[0] as number);
    else this.pushMulti(chunk);
  }

  /** The common case ("\n", "\r", ";"): whole runs between delimiters with indexOf and one copy. */
  private pushSingle(chunk: Buffer, delim: number): void {
    let start = 0;
    while (start < chunk.length) {
      const end = chunk.indexOf(delim, start);
      const stop = end < 0 ? chunk.length : end;
      if (!this.discarding) {
        const room = this.buf.length - 1 - this.len; // 1 byte of the buffer is reserved for the delimiter
        const n = stop - start;
        if (n > room) {
          this.overflow();
        } else {
          chunk.copy(this.buf, this.len, start, stop);
          this.len += n;
        }
      }
      if (end < 0) return;
      this.endLine(0);
      start = end + 1;
    }
  }

  /** Multi-byte delimiters ("\r\n", "\r\n\r\n", "|#"): byte by byte; still cheap at serial speeds. */
  private pushMulti(chunk: Buffer): void {
    const d = this.delimiter;
    const dl = d.length;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i] as number;
      if (!this.discarding) {
        if (this.len === this.buf.length) this.overflow();
        else this.buf[this.len++] = b;
      }
      this.recent[this.recentPos] = b;
      this.recentPos = (this.recentPos + 1) % dl;
      if (this.recentCount < dl) this.recentCount++;
      if (this.recentCount === dl && this.recentMatches()) {
        this.recentCount = 0; // "aaa" with delimiter "aa" is one delimiter and an 'a'
        this.endLine(dl);
      }
    }
  }

  private recentMatches(): boolean {
    const d = this.delimiter;
    for (let j = 0; j < d.length; j++) {
      if (this.recent[(this.recentPos + j) % d.length] !== d[j]) return false;
    }
    return true;
  }

  private overflow(): void {
    this.discarding = true;
    this.len = 0;
    this.onTooLong();
  }

  /** `delimInBuf`: how many delimiter bytes were stored at the end of the buffer. */
  private endLine(delimInBuf: number): void {
    if (this.discarding) {
      this.discarding = false;
      this.len = 0;
      return;
    }
    let n = this.len - delimInBuf;
    this.len = 0;
    if (this.stripCr && n > 0 && this.buf[n - 1] === 0x0d) n--;
    const start = this.stripLf && n > 0 && this.buf[0] === 0x0a ? 1 : 0;
    if (n - start > this.maxLineLength) {
      this.onTooLong();
      return;
    }
    this.onLine(this.buf.subarray(start, n));
  }
}
