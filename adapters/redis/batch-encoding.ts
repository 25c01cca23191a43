import { emptyRawEntry, rawEntryOf, type OutboxEntry, type RawEntry } from '../../gateway/broker';

/**
 * A batch of outbox entries as ONE script argument: a MessagePack array of strings, eight per
 * entry — seq, topic, payload, qos, retain, ts, source, properties (outboxPropertiesJson, empty
 * when the message had none) — which the append script unpacks with
 * Redis' built-in `cmsgpack`. Eight arguments per entry cost the gateway ~5 µs per entry in
 * ioredis' argument handling (a batch of 500 is 4,000 arguments, each converted and framed);
 * one buffer built here costs a fraction of that, and the unpacking runs in C inside Redis.
 *
 * Only the oldest MessagePack string types are used (fixstr, raw 16, raw 32 — in every
 * cmsgpack Redis ever shipped); Lua strings are byte strings, so payloads stay binary-safe.
 * Numbers travel as decimal strings: that is what the stream fields hold, and Lua 5.1 would
 * print a large number in exponent notation.
 */
export const FIELDS_PER_ENTRY = 8;

/** Decoded entries as one batch (tests; the uplink encodes raw entries as it scans them). */
export function encodeBatch(entries: readonly OutboxEntry[]): Buffer {
  const encoder = new BatchEncoder();
  const raw = emptyRawEntry();
  for (const e of entries) encoder.add(rawEntryOf(e, raw));
  return encoder.finish();
}

/** The array header is written last, in front of the entries: room for its longest form. */
const HEADER_ROOM = 5;

/**
 * Encodes a batch entry by entry, so that the caller need not keep the entries: the uplink
 * encodes each entry as the outbox hands it over, and it is garbage right after (entries held
 * for a whole batch were promoted to V8's old generation — see Outbox.add).
 */
export class BatchEncoder {
  /**
   * Entries are encoded into one scratch buffer shared by all encoders (one batch is encoded at a
   * time, synchronously) and copied out once, at its exact size: growing a buffer per batch
   * allocated ~3× the batch outside V8's heap, and that external memory is what made V8 run a
   * full mark-compact every few hundred ms on a busy uplink.
   */
  private static scratch = Buffer.allocUnsafe(64 * 1024);
  private buf = BatchEncoder.scratch;
  private off = HEADER_ROOM;
  /** Entries added. */
  count = 0;

  /** An entry as Outbox.scanRaw hands it over: its bytes are copied, nothing decoded. */
  add(e: Readonly<RawEntry>): void {
    const topicLength = e.topicEnd - e.topicStart;
    const sourceLength = e.sourceEnd - e.sourceStart;
    const payloadLength = e.payloadEnd - e.payloadStart;
    const propertiesLength = e.propertiesEnd - e.propertiesStart;
    this.reserve(5 * FIELDS_PER_ENTRY + 16 + 20 + topicLength + sourceLength + payloadLength + propertiesLength);
    const buf = this.buf;
    let off = writeDecimal(buf, this.off, e.seq);
    off = writeBytes(buf, writeHeader(buf, off, topicLength), e.data, e.topicStart, e.topicEnd);
    off = writeBytes(buf, writeHeader(buf, off, payloadLength), e.data, e.payloadStart, e.payloadEnd);
    buf[off++] = 0xa1; // fixstr of length 1
    buf[off++] = 0x30 + e.qos;
    buf[off++] = 0xa1;
    buf[off++] = e.retain ? 0x31 : 0x30;
    off = writeDecimal(buf, off, e.arrivedAt);
    off = writeBytes(buf, writeHeader(buf, off, sourceLength), e.data, e.sourceStart, e.sourceEnd);
    this.off = writeBytes(buf, writeHeader(buf, off, propertiesLength), e.data, e.propertiesStart, e.propertiesEnd);
    this.count++;
  }

  /** The MessagePack array of every entry added, a buffer of its own (the encoder is done). */
  finish(): Buffer {
    const header = Buffer.allocUnsafe(HEADER_ROOM);
    const length = writeArrayHeader(header, 0, this.count * FIELDS_PER_ENTRY);
    const out = Buffer.allocUnsafe(length + this.off - HEADER_ROOM);
    header.copy(out, 0, 0, length);
    this.buf.copy(out, length, HEADER_ROOM, this.off);
    return out;
  }

  private reserve(extra: number): void {
    if (this.off + extra <= this.buf.length) return;
    // Kept for the next batches: the scratch settles at the size batches need (bounded by the
    // uplink's batch size and byte budget).
    const grown = Buffer.allocUnsafe(Math.max(this.off + extra, this.buf.length * 2));
    this.buf.copy(grown, 0, 0, this.off);
    this.buf = grown;
    BatchEncoder.scratch = grown;
  }
}

/** Copies data[start, end) to buf at off: a loop for short runs (a view and a native call cost more), set() beyond. */
function writeBytes(buf: Buffer, off: number, data: Uint8Array, start: number, end: number): number {
  if (end - start <= 96) {
    for (let i = start; i < end; i++) buf[off++] = data[i] as number;
    return off;
  }
  buf.set(data.subarray(start, end), off);
  return off + end - start;
}

function writeArrayHeader(buf: Buffer, off: number, n: number): number {
  return writeLength(buf, off, n, 0xdc, 0xdd);
}

/** A string header: fixstr, raw 16 or raw 32. */
function writeHeader(buf: Buffer, off: number, length: number): number {
  if (length >= 32) return writeLength(buf, off, length, 0xda, 0xdb);
  buf[off] = 0xa0 | length;
  return off + 1;
}

/** A type byte with a big-endian 16-bit length, or the 32-bit form when it does not fit. */
function writeLength(buf: Buffer, off: number, n: number, code16: number, code32: number): number {
  if (n <= 0xffff) {
    buf[off] = code16;
    buf.writeUInt16BE(n, off + 1);
    return off + 3;
  }
  buf[off] = code32;
  buf.writeUInt32BE(n, off + 1);
  return off + 5;
}

function writeText(buf: Buffer, off: number, text: string): number {
  const length = Buffer.byteLength(text);
  off = writeHeader(buf, off, length);
  return off + buf.write(text, off, length, 'utf8');
}

/**
 * A number's decimal digits as a fixstr; a non-negative safe integer (at most 16 digits) without a
 * temporary string. Arrival times (13 digits) are beyond 32 bits, where every % and / is a
 * floating-point operation: they are split into two parts that fit, and the digits written with
 * integer arithmetic — this was most of the cost of encoding an entry.
 */
function writeDecimal(buf: Buffer, off: number, n: number): number {
  if (!Number.isSafeInteger(n) || n < 0) return writeText(buf, off, String(n));
  if (n < 100_000_000) {
    const digits = digitCount(n);
    buf[off] = 0xa0 | digits;
    writeDigits(buf, off + 1, n, digits);
    return off + digits + 1;
  }
  const high = Math.floor(n / 100_000_000);
  const low = n - high * 100_000_000;
  const highDigits = digitCount(high);
  buf[off] = 0xa0 | (highDigits + 8);
  writeDigits(buf, off + 1, high, highDigits);
  writeDigits(buf, off + 1 + highDigits, low, 8);
  return off + highDigits + 9;
}

/** Digits of 0 ≤ n < 10^8 (small-integer arithmetic). */
function digitCount(n: number): number {
  let digits = 1;
  for (let p = 10; p <= n; p *= 10) digits++;
  return digits;
}

/** `digits` decimal digits of 0 ≤ n < 10^8 at off, zero-padded on the left. */
function writeDigits(buf: Buffer, off: number, n: number, digits: number): void {
  for (let i = off + digits - 1; i >= off; i--) {
    const q = (n / 10) | 0;
    buf[i] = 0x30 + n - q * 10;
    n = q;
  }
}
