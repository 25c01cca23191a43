import type { OutboxEntry } from '../../gateway/broker';

/**
 * A batch of outbox entries as ONE script argument: a MessagePack array of strings, seven per
 * entry — seq, topic, payload, qos, retain, ts, source — which the append script unpacks with
 * Redis' built-in `cmsgpack`. Eight arguments per entry cost the gateway ~5 µs per entry in
 * ioredis' argument handling (a batch of 500 is 4,000 arguments, each converted and framed);
 * one buffer built here costs a fraction of that, and the unpacking runs in C inside Redis.
 *
 * Only the oldest MessagePack string types are used (fixstr, raw 16, raw 32 — in every
 * cmsgpack Redis ever shipped); Lua strings are byte strings, so payloads stay binary-safe.
 * Numbers travel as decimal strings: that is what the stream fields hold, and Lua 5.1 would
 * print a large number in exponent notation.
 */
export const FIELDS_PER_ENTRY = 7;

/**
 * Encoded topics and sources (header + UTF-8), by string: a gateway sends the same few names over
 * and over, and copying their bytes costs a fraction of encoding them again. Bounded: cleared
 * when full, so a client inventing names costs only the encoding.
 */
const encodedNames = new Map<string, Uint8Array>();
const MAX_ENCODED_NAMES = 4096;

export function encodeBatch(entries: readonly OutboxEntry[]): Buffer {
  const encoder = new BatchEncoder();
  for (const e of entries) encoder.add(e);
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
  private buf = Buffer.allocUnsafe(16 * 1024);
  private off = HEADER_ROOM;
  /** Entries added. */
  count = 0;

  add(e: OutboxEntry): void {
    this.reserve(5 * FIELDS_PER_ENTRY + 16 + 20 + 3 * (e.topic.length + e.source.length) + e.payload.length);
    const buf = this.buf;
    let off = writeDecimal(buf, this.off, e.seq);
    off = writeName(buf, off, e.topic);
    off = writeHeader(buf, off, e.payload.length);
    // TypedArray#set: no native call per small payload, unlike Buffer#copy.
    buf.set(e.payload, off);
    off += e.payload.length;
    buf[off++] = 0xa1; // fixstr of length 1
    buf[off++] = 0x30 + e.qos;
    buf[off++] = 0xa1;
    buf[off++] = e.retain ? 0x31 : 0x30;
    off = writeDecimal(buf, off, e.arrivedAt);
    this.off = writeName(buf, off, e.source);
    this.count++;
  }

  /** The MessagePack array of every entry added (the encoder must not be used afterwards). */
  finish(): Buffer {
    const header = Buffer.allocUnsafe(HEADER_ROOM);
    const length = writeArrayHeader(header, 0, this.count * FIELDS_PER_ENTRY);
    const start = HEADER_ROOM - length;
    header.copy(this.buf, start, 0, length);
    return this.buf.subarray(start, this.off);
  }

  private reserve(extra: number): void {
    if (this.off + extra <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.off + extra, this.buf.length * 2));
    this.buf.copy(grown, 0, 0, this.off);
    this.buf = grown;
  }
}

function writeName(buf: Buffer, off: number, name: string): number {
  let encoded = encodedNames.get(name);
  if (encoded === undefined) {
    const scratch = Buffer.allocUnsafe(5 + 3 * name.length);
    encoded = new Uint8Array(scratch.subarray(0, writeText(scratch, 0, name)));
    if (encodedNames.size >= MAX_ENCODED_NAMES) encodedNames.clear();
    encodedNames.set(name, encoded);
  }
  buf.set(encoded, off);
  return off + encoded.length;
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

/** A number's decimal digits; a non-negative safe integer (at most 16 digits) without a temporary string. */
function writeDecimal(buf: Buffer, off: number, n: number): number {
  if (!Number.isSafeInteger(n) || n < 0) return writeText(buf, off, String(n));
  let digits = 1;
  for (let p = 10; p <= n; p *= 10) digits++;
  buf[off] = 0xa0 | digits;
  for (let i = digits; i >= 1; i--) {
    buf[off + i] = 0x30 + (n % 10);
    n = Math.floor(n / 10);
  }
  return off + digits + 1;
}
