import { outboxPropertiesJson, parseOutboxProperties, type OutboxEntry, type OutboxInput, type QoS, type RawEntry } from '../../gateway/broker';

/**
 * The outbox stores entries in blocks: one SQLite row holds up to MAX_BLOCK_ENTRIES consecutive
 * entries, encoded here. One row per message cost ~1.5 µs of binding and b-tree work per entry and
 * ~50 bytes of row and index overhead, which an SD card writes twice (WAL, then checkpoint); a
 * block costs that once per few hundred entries, and names repeated within it (topics, client ids
 * — a gateway sees the same few sensors over and over) are written once per block.
 *
 * Layout (integers are unsigned LEB128 varints unless noted):
 *
 *   u8 format (1)
 *   per entry:
 *     u8 flags          bits 0–1 qos, bit 2 retain, bit 3 topic is new, bit 4 source is new,
 *                       bit 5 properties follow the payload
 *     arrival           zigzag varint: ms since the previous entry's arrival (the first: since 0)
 *     topic             new: byte length + UTF-8 bytes (appended to the block's name table);
 *                       else the index in the name table
 *     source            the same, same table
 *     payload           byte length + bytes
 *     properties        (bit 5 only) byte length + outboxPropertiesJson's UTF-8 bytes
 *
 * The entries' seqs are not stored: a block holds consecutive seqs, first_seq … last_seq of its row.
 * Names are shared by topic and source (one table), so a client id that is also a topic costs once.
 */
const BLOCK_FORMAT = 1;
/** Entries per block. Bounds the work of decoding a block to reach an entry in its middle. */
export const MAX_BLOCK_ENTRIES = 1024;
/** Encoded bytes after which a block is closed (one larger entry makes a block of its own). */
export const MAX_BLOCK_BYTES = 32 * 1024;

const FLAG_RETAIN = 0x04;
const FLAG_NEW_TOPIC = 0x08;
const FLAG_NEW_SOURCE = 0x10;
const FLAG_PROPERTIES = 0x20;
/** Worst case of one varint (2^53 needs 8 bytes). */
const VARINT_MAX = 10;

/** Builds one block. `add` until `full`, then `finish`. */
export class OutboxBlockBuilder {
  private buf: Buffer;
  private length = 1;
  private readonly names = new Map<string, number>();
  /** UTF-8 byte length of each name, by index: the logical size of repeated names without re-measuring. */
  private readonly nameBytes: number[] = [];
  private lastArrivedAt = 0;
  private lastNameWasNew = false;
  private lastNameBytes = 0;
  /** Entries added. */
  count = 0;
  /** Their logical size, the sum of `outboxEntryBytes` (what the bounds count). */
  bytes = 0;

  constructor(initialCapacity = 1024) {
    this.buf = Buffer.allocUnsafe(Math.max(64, initialCapacity));
    this.buf[0] = BLOCK_FORMAT;
  }

  get full(): boolean {
    return this.count >= MAX_BLOCK_ENTRIES || this.length >= MAX_BLOCK_BYTES;
  }

  /** Appends one entry; returns its logical size (`outboxEntryBytes`). */
  add(entry: OutboxInput): number {
    const properties = outboxPropertiesJson(entry.properties);
    // Worst case: flags, four varints, and text at 3 UTF-8 bytes per UTF-16 unit.
    this.reserve(1 + 5 * VARINT_MAX + 3 * (entry.topic.length + entry.source.length + (properties?.length ?? 0)) + entry.payload.length);
    const buf = this.buf;
    const flagsAt = this.length;
    let off = flagsAt + 1;
    let flags = (entry.qos & 0x03) | (entry.retain ? FLAG_RETAIN : 0);
    const arrivedAt = Math.round(entry.arrivedAt);
    const delta = arrivedAt - this.lastArrivedAt;
    this.lastArrivedAt = arrivedAt;
    off = writeVarint(buf, off, delta >= 0 ? delta * 2 : -delta * 2 - 1);
    let size = entry.payload.length;
    off = this.addName(entry.topic, off);
    if (this.lastNameWasNew) flags |= FLAG_NEW_TOPIC;
    size += this.lastNameBytes;
    off = this.addName(entry.source, off);
    if (this.lastNameWasNew) flags |= FLAG_NEW_SOURCE;
    size += this.lastNameBytes;
    off = writeVarint(buf, off, entry.payload.length);
    off += entry.payload.copy(buf, off);
    if (properties !== undefined) {
      flags |= FLAG_PROPERTIES;
      const bytes = Buffer.byteLength(properties);
      off = writeVarint(buf, off, bytes);
      off += buf.write(properties, off, 'utf8');
      size += bytes;
    }
    buf[flagsAt] = flags;
    this.length = off;
    this.count++;
    this.bytes += size;
    return size;
  }

  /** The encoded block (a view of the builder's buffer: the builder must not be used afterwards). */
  finish(): Buffer {
    return this.buf.subarray(0, this.length);
  }

  /**
   * The entries added so far, as a block `decodeBlock` reads, while the builder goes on. Adding
   * only writes past the end, or into a new buffer when it grows, so the view stays valid.
   */
  view(): Buffer {
    return this.buf.subarray(0, this.length);
  }

  /**
   * Writes a name at `off` — its index when the block has it already, else its length and UTF-8
   * bytes, entering it in the table — and returns the new offset; `lastNameWasNew` and
   * `lastNameBytes` tell which and how long (fields, not an object per call: this runs per message).
   */
  private addName(name: string, off: number): number {
    const index = this.names.get(name);
    if (index !== undefined) {
      this.lastNameWasNew = false;
      this.lastNameBytes = this.nameBytes[index] as number;
      return writeVarint(this.buf, off, index);
    }
    const bytes = Buffer.byteLength(name);
    off = writeVarint(this.buf, off, bytes);
    off += this.buf.write(name, off, 'utf8');
    this.names.set(name, this.nameBytes.length);
    this.nameBytes.push(bytes);
    this.lastNameWasNew = true;
    this.lastNameBytes = bytes;
    return off;
  }

  private reserve(extra: number): void {
    const needed = this.length + extra;
    if (needed <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(needed, this.buf.length * 2));
    this.buf.copy(grown, 0, 0, this.length);
    this.buf = grown;
  }
}

/** A block whose bytes do not follow the layout (a bug or a damaged file); the message says where. */
export class MalformedBlockError extends Error {
  constructor(message: string) {
    super(`malformed outbox block: ${message}`);
    this.name = 'MalformedBlockError';
  }
}

/**
 * Reads a block's entries in order: `visit(entry)` for every entry from index `from` (0-based) on,
 * until `visit` returns false. Entries before `from` are stepped over without building them.
 * Payloads are views of `data`. Throws MalformedBlockError.
 */
export function decodeBlock(data: Buffer, firstSeq: number, from: number, visit: (entry: OutboxEntry) => boolean): void {
  const reader = new BlockReader(data);
  const names: string[] = [];
  for (let i = 0; reader.more(); i++) {
    const flags = reader.byte();
    const arrivedAt = reader.arrival();
    const topic = reader.name(flags & FLAG_NEW_TOPIC, names);
    const source = reader.name(flags & FLAG_NEW_SOURCE, names);
    const length = reader.varint();
    const payloadAt = reader.skip(length);
    const propertiesLength = (flags & FLAG_PROPERTIES) === 0 ? 0 : reader.varint();
    const propertiesAt = reader.skip(propertiesLength);
    if (i < from) continue;
    const entry: OutboxEntry = {
      seq: firstSeq + i,
      topic,
      payload: data.subarray(payloadAt, payloadAt + length),
      qos: (flags & 0x03) as QoS,
      retain: (flags & FLAG_RETAIN) !== 0,
      arrivedAt,
      source,
      ...(propertiesLength === 0 ? {} : { properties: parseOutboxProperties(data.toString('utf8', propertiesAt, propertiesAt + propertiesLength)) }),
    };
    if (!visit(entry)) return;
  }
}

/**
 * decodeBlock without objects: fills `raw` (byte ranges of `data`, numbers) for every entry from
 * index `from` on and calls `visit(raw)` until it returns false. Names are byte ranges in a table
 * of the block (two numbers per name), never strings. Throws MalformedBlockError.
 */
export function scanBlockRaw(data: Buffer, firstSeq: number, from: number, raw: RawEntry, visit: (entry: RawEntry) => boolean): void {
  const reader = new BlockReader(data);
  // start, end of each name in `data`, by index
  const names: number[] = [];
  raw.data = data;
  for (let i = 0; reader.more(); i++) {
    const flags = reader.byte();
    const arrivedAt = reader.arrival();
    reader.nameRange(flags & FLAG_NEW_TOPIC, names);
    const topicStart = reader.rangeStart;
    const topicEnd = reader.rangeEnd;
    reader.nameRange(flags & FLAG_NEW_SOURCE, names);
    const length = reader.varint();
    const payloadAt = reader.skip(length);
    const propertiesLength = (flags & FLAG_PROPERTIES) === 0 ? 0 : reader.varint();
    const propertiesAt = reader.skip(propertiesLength);
    if (i < from) continue;
    raw.seq = firstSeq + i;
    raw.qos = (flags & 0x03) as QoS;
    raw.retain = (flags & FLAG_RETAIN) !== 0;
    raw.arrivedAt = arrivedAt;
    raw.topicStart = topicStart;
    raw.topicEnd = topicEnd;
    raw.sourceStart = reader.rangeStart;
    raw.sourceEnd = reader.rangeEnd;
    raw.payloadStart = payloadAt;
    raw.payloadEnd = payloadAt + length;
    raw.propertiesStart = propertiesAt;
    raw.propertiesEnd = propertiesAt + propertiesLength;
    if (!visit(raw)) return;
  }
}

/** The logical size (`outboxEntryBytes`) of every entry of a block, in order, without decoding names. */
export function blockEntrySizes(data: Buffer): number[] {
  const reader = new BlockReader(data);
  const nameBytes: number[] = [];
  const sizes: number[] = [];
  while (reader.more()) {
    const flags = reader.byte();
    reader.arrival();
    let size = reader.nameLength(flags & FLAG_NEW_TOPIC, nameBytes);
    size += reader.nameLength(flags & FLAG_NEW_SOURCE, nameBytes);
    const length = reader.varint();
    reader.skip(length);
    const propertiesLength = (flags & FLAG_PROPERTIES) === 0 ? 0 : reader.varint();
    reader.skip(propertiesLength);
    sizes.push(size + length + propertiesLength);
  }
  return sizes;
}

class BlockReader {
  private off = 1;
  private lastArrivedAt = 0;

  constructor(private readonly data: Buffer) {
    if (data.length < 1 || data[0] !== BLOCK_FORMAT) throw new MalformedBlockError(`unknown format ${String(data[0])}`);
  }

  more(): boolean {
    return this.off < this.data.length;
  }

  byte(): number {
    if (this.off >= this.data.length) throw new MalformedBlockError(`truncated at byte ${this.off}`);
    return this.data[this.off++] as number;
  }

  varint(): number {
    let value = 0;
    let scale = 1;
    for (;;) {
      const b = this.byte();
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
      scale *= 0x80;
      if (scale > 2 ** 56) throw new MalformedBlockError(`varint too long at byte ${this.off}`);
    }
  }

  arrival(): number {
    const z = this.varint();
    this.lastArrivedAt += z % 2 === 0 ? z / 2 : -(z + 1) / 2;
    return this.lastArrivedAt;
  }

  /** Start of `length` bytes, which are stepped over. */
  skip(length: number): number {
    const at = this.off;
    if (at + length > this.data.length) throw new MalformedBlockError(`${length} bytes at byte ${at} run past the end (${this.data.length})`);
    this.off = at + length;
    return at;
  }

  /** A name: a new one (entered in the table, also for a skipped entry: later ones may refer to it) or a reference. */
  name(isNew: number, names: string[]): string {
    if (isNew !== 0) {
      const length = this.varint();
      const at = this.skip(length);
      const name = this.data.toString('utf8', at, at + length);
      names.push(name);
      return name;
    }
    const index = this.varint();
    const name = names[index];
    if (name === undefined) throw new MalformedBlockError(`name ${index} referred to before it was defined`);
    return name;
  }

  /** Where the last nameRange() found its name: `data[rangeStart, rangeEnd)`. */
  rangeStart = 0;
  rangeEnd = 0;

  /** A name as a byte range (new: entered in `names` as start, end; else looked up there). */
  nameRange(isNew: number, names: number[]): void {
    if (isNew !== 0) {
      const length = this.varint();
      this.rangeStart = this.skip(length);
      this.rangeEnd = this.rangeStart + length;
      names.push(this.rangeStart, this.rangeEnd);
      return;
    }
    const index = this.varint();
    const start = names[2 * index];
    if (start === undefined) throw new MalformedBlockError(`name ${index} referred to before it was defined`);
    this.rangeStart = start;
    this.rangeEnd = names[2 * index + 1] as number;
  }

  nameLength(isNew: number, nameBytes: number[]): number {
    if (isNew !== 0) {
      const length = this.varint();
      this.skip(length);
      nameBytes.push(length);
      return length;
    }
    const length = nameBytes[this.varint()];
    if (length === undefined) throw new MalformedBlockError('a name referred to before it was defined');
    return length;
  }
}

/** Unsigned LEB128 of a non-negative safe integer; returns the offset after it. */
function writeVarint(buf: Buffer, off: number, n: number): number {
  if (n < 0x80000000) {
    // Bit operations while the value fits in 31 bits: the common case by far.
    while (n > 0x7f) {
      buf[off++] = (n & 0x7f) | 0x80;
      n >>>= 7;
    }
  } else {
    while (n > 0x7f) {
      buf[off++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
  }
  buf[off++] = n;
  return off;
}
