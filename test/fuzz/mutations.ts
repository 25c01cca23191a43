/**
 * Mutations of well-formed packets (packets.ts), each named so a run can report what it sent:
 * byte-level damage (truncation, bit flips, inserted and deleted bytes, garbage), a corrupted
 * remaining length (too short, too long, 5 bytes, not minimal, oversized), broken fixed-header
 * flags (reserved bits, QoS 3, reserved packet types), ill-formed UTF-8 and U+0000 in any string
 * field, bad MQTT 5 properties (unknown identifiers, duplicates, zero or out-of-range values,
 * properties a packet may not carry, overlong lengths), and well-formed packets in the wrong place
 * (a second CONNECT, server-only packets, topic alias abuse, wildcards in a topic name, floods).
 */
import fc from 'fast-check';
import { generate, type Packet } from 'mqtt-packet';
import { varIntLength, writeVarInt } from '../../gateway/broker/encode';
import { serverPacketArb, type ProtocolLevel } from './packets';
import type { Prng } from './prng';

export const MUTATIONS = [
  'truncate',
  'bit-flip',
  'insert-bytes',
  'delete-bytes',
  'length-under',
  'length-over',
  'length-5-bytes',
  'length-not-minimal',
  'length-oversized',
  'garbage',
  'reserved-flags',
  'qos-3',
  'reserved-type',
  'bad-utf8',
  'bad-property',
  'topic-alias-abuse',
  'wildcard-topic',
  'second-connect',
  'server-packet',
  'flood',
] as const;
export type MutationKind = (typeof MUTATIONS)[number];

/** The packet encoded for its level, or null if mqtt-packet refuses to encode it. */
export function encode(packet: Packet, level: ProtocolLevel): Buffer | null {
  try {
    const bytes = generate(packet, { protocolVersion: level });
    // Some values it cannot encode (an empty userProperties object) give no bytes rather than an error.
    return bytes.length === 0 ? null : bytes;
  } catch {
    return null;
  }
}

/** The remaining-length field's bytes for `n` (1–4 bytes, 7 bits each, MQTT 2.2.3). */
export function encodeVarint(n: number): Buffer {
  const out = Buffer.alloc(varIntLength(n));
  writeVarInt(out, 0, n);
  return out;
}

/** Where the body starts: after the first byte and the remaining length (well-formed input). */
function headerLength(bytes: Buffer): number {
  let pos = 1;
  while (pos < bytes.length && pos < 5 && ((bytes[pos] as number) & 0x80) !== 0) pos++;
  return pos + 1;
}

/** Deep copy of plain objects and arrays; Buffers are shared (never written to). */
function clone<T>(value: T): T {
  if (Array.isArray(value)) return value.map(clone) as T;
  if (value !== null && typeof value === 'object' && !Buffer.isBuffer(value) && !(value instanceof Uint8Array)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, clone(v)])) as T;
  }
  return value;
}

/** Every place a string can be put in `packet` (values and user property keys), as setters. */
function stringSlots(packet: Packet): ((marker: string) => void)[] {
  const slots: ((marker: string) => void)[] = [];
  const walk = (obj: Record<string, unknown>, isUserProperties: boolean): void => {
    for (const [key, value] of Object.entries(obj)) {
      if (key === 'cmd') continue;
      if (typeof value === 'string') slots.push((marker) => (obj[key] = value.slice(0, value.length >> 1) + marker));
      else if (Array.isArray(value)) {
        value.forEach((item, i) => {
          if (typeof item === 'string') slots.push((marker) => (value[i] = marker));
          else if (item !== null && typeof item === 'object') walk(item as Record<string, unknown>, false);
        });
      } else if (value !== null && typeof value === 'object' && !(value instanceof Uint8Array)) walk(value as Record<string, unknown>, key === 'userProperties');
      if (isUserProperties) {
        slots.push((marker) => {
          obj[marker] = obj[key];
          delete obj[key];
        });
      }
    }
  };
  walk(packet as unknown as Record<string, unknown>, false);
  return slots;
}

/** Byte sequences that are not well-formed UTF-8 [MQTT-1.5.3-1], or U+0000 [MQTT-1.5.3-2]. */
const BAD_UTF8: readonly (readonly number[])[] = [
  [0x00], // U+0000
  [0xc0, 0x80], // overlong U+0000
  [0xed, 0xa0, 0x80], // a UTF-16 surrogate
  [0xff],
  [0x80], // a lone continuation byte
  [0xf0, 0x9f, 0x98], // a truncated 4-byte sequence
  [0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
  [0xe0, 0x80, 0xaf], // overlong '/'
];

function randomMarker(rng: Prng, length: number): string {
  let s = 'Qz';
  while (s.length < length) s += String.fromCharCode(rng.int(0x61, 0x7a));
  return s;
}

/** Replaces the first occurrence of `marker` in `bytes` with `replacement` (same length), or null. */
function overwrite(bytes: Buffer, marker: Buffer, replacement: Buffer): Buffer | null {
  const at = bytes.indexOf(marker);
  if (at < 0) return null;
  const out = Buffer.from(bytes);
  replacement.copy(out, at);
  return out;
}

function badUtf8(rng: Prng, packet: Packet, level: ProtocolLevel): Buffer | null {
  const copy = clone(packet);
  const slots = stringSlots(copy);
  if (slots.length === 0) return null;
  const marker = randomMarker(rng, 10);
  rng.pick(slots)(marker);
  const bytes = encode(copy, level);
  if (bytes === null) return null;
  const bad = rng.pick(BAD_UTF8);
  const replacement = Buffer.from(marker);
  Buffer.from(bad).copy(replacement, rng.int(0, replacement.length - bad.length));
  return overwrite(bytes, Buffer.from(marker), replacement);
}

const u16 = (n: number): number[] => [(n >> 8) & 0xff, n & 0xff];
const u32 = (n: number): number[] => [(n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];
const str = (s: string): number[] => [...u16(Buffer.byteLength(s)), ...Buffer.from(s)];

/** Property bytes that are wrong somewhere: for the packet they land in, or anywhere. */
function badPropertyBytes(rng: Prng): number[] {
  const twice = (p: number[]): number[] => [...p, ...p];
  const options: (() => number[])[] = [
    () => [rng.pick([0x00, 0x04, 0x05, 0x10, 0x14, 0x30, 0x7f, 0x80, 0xff]), ...rng.bytes(rng.int(0, 3))], // unknown identifier
    () => twice(rng.pick([[0x01, 1], [0x02, ...u32(9)], [0x03, ...str('a')], [0x08, ...str('r')], [0x09, 0, 1, 7], [0x11, ...u32(5)], [0x21, 0, 1], [0x22, 0, 1], [0x23, 0, 1], [0x1f, ...str('s')], [0x15, ...str('m')], [0x0b, 1], [0x27, ...u32(99)], [0x17, 1], [0x18, ...u32(1)]])),
    () => rng.pick([[0x21, 0, 0], [0x27, 0, 0, 0, 0], [0x23, 0, 0], [0x0b, 0x00]]), // zero where zero is forbidden
    () => rng.pick([[0x01, rng.int(2, 255)], [0x17, rng.int(2, 255)], [0x19, rng.int(2, 255)], [0x23, 0xff, 0xff], [0x22, 0xff, 0xff]]), // out of range
    () => rng.pick([[0x0b, 0xff, 0xff, 0xff, 0xff, 0x7f], [0x0b, 0x80, 0x80, 0x80, 0x80, 0x01], [0x0b, 0xff]]), // variable byte integer overflow / cut
    () => rng.pick([[0x26, 0xff, 0xff], [0x03, 0x7f, 0xff], [0x09, 0xff, 0xfe, 1], [0x26, 0, 1, 0x61]]), // a length past the end
    () => rng.pick([[0x03, 0, 2, 0xc0, 0x80], [0x08, ...str('#')], [0x08, ...str('a/+')], [0x26, 0, 1, 0x00, 0, 1, 0xff], [0x1f, 0, 1, 0xff]]), // bad strings
    () => rng.pick([[0x0b, 5], [0x11, ...u32(5)], [0x13, 0, 5], [0x12, ...str('x')], [0x24, 1], [0x25, 1], [0x1a, ...str('x')], [0x1c, ...str('x')], [0x2a, 0], [0x28, 1], [0x29, 1], [0x18, ...u32(1)], [0x15, ...str('x')], [0x16, 0, 1, 1]]), // not for every packet
  ];
  return rng.pick(options)();
}

/**
 * MQTT 5 only: a User Property whose key is a marker is added to the packet's properties, and its
 * bytes after encoding are replaced by bad property bytes of the same length (padded with another
 * User Property) — so the property block and remaining lengths stay consistent and the damage is
 * exactly one bad property.
 */
function badProperty(rng: Prng, packet: Packet, level: ProtocolLevel): Buffer | null {
  if (level !== 5) return null;
  const copy = clone(packet) as Packet & { properties?: Record<string, unknown>; reasonCode?: number; will?: { properties?: Record<string, unknown> } };
  if (copy.cmd === 'pingreq' || copy.cmd === 'pingresp') return null;
  const bad = badPropertyBytes(rng);
  // The marker property is 5 + key length bytes; at least 8 key bytes keep it unique.
  const total = Math.max(bad.length, 13);
  const padding = total - bad.length;
  const parts = padding === 0 ? bad : padding >= 5 ? [...bad, 0x26, ...u16(padding - 5), ...Buffer.alloc(padding - 5, 0x70), 0, 0] : null;
  const replacement = parts ?? [...bad, 0x26, ...u16(padding + 8), ...Buffer.alloc(padding + 8, 0x70), 0, 0];
  const keyLength = replacement.length - 5;
  const key = randomMarker(rng, keyLength);
  const target = copy.cmd === 'connect' && copy.will !== undefined && rng.chance(0.3) ? ((copy.will.properties ??= {}) as Record<string, unknown>) : (copy.properties ??= {});
  target.userProperties = { ...(target.userProperties as object | undefined), [key]: '' };
  if (copy.reasonCode === undefined && ['puback', 'pubrec', 'pubrel', 'pubcomp', 'disconnect'].includes(copy.cmd)) copy.reasonCode = 0;
  const bytes = encode(copy, level);
  if (bytes === null) return null;
  return overwrite(bytes, Buffer.from([0x26, ...u16(keyLength), ...Buffer.from(key), 0, 0]), Buffer.from(replacement));
}

function rewriteLength(bytes: Buffer, lengthField: Buffer): Buffer {
  return Buffer.concat([bytes.subarray(0, 1), lengthField, bytes.subarray(headerLength(bytes))]);
}

function topicAliasAbuse(rng: Prng, level: ProtocolLevel): Buffer | null {
  if (level !== 5) return null;
  const alias = rng.pick([0, 1, 2, 10, 11, 255, 65535]);
  const topic = rng.chance(0.7) ? '' : 'a/b';
  const properties = rng.chance(0.85) ? { topicAlias: alias } : {};
  const qos = rng.pick([0, 1, 2] as const);
  return encode({ cmd: 'publish', topic, payload: Buffer.from('alias'), qos, retain: false, dup: false, ...(qos > 0 ? { messageId: rng.int(1, 40) } : {}), properties } as Packet, 5);
}

/** A few server-only packets per level, sampled once with a fixed seed: they differ only in their fields. */
const SERVER_PACKETS: Record<ProtocolLevel, Packet[]> = {
  3: fc.sample(serverPacketArb(3), { seed: 1, numRuns: 16 }),
  4: fc.sample(serverPacketArb(4), { seed: 1, numRuns: 16 }),
  5: fc.sample(serverPacketArb(5), { seed: 1, numRuns: 16 }),
};

/** The bytes a mutation produced and how many packets they count as (a flood is many). */
export interface Mutated {
  readonly bytes: Buffer;
  readonly packets: number;
}

/** `packet` (well-formed, from a session that began with `connect`) damaged by `kind`; null where `kind` does not apply. */
export function mutate(rng: Prng, kind: MutationKind, packet: Packet, level: ProtocolLevel, connect: Packet): Mutated | null {
  if (kind === 'flood') {
    // The same valid packet many times in a row: duplicates, repeated subscriptions and acks.
    const bytes = encode(packet, level);
    const times = rng.int(5, 40);
    return bytes === null ? null : { bytes: Buffer.concat(Array.from({ length: times }, () => bytes)), packets: times };
  }
  const bytes = mutateOne(rng, kind, packet, level, connect);
  return bytes === null ? null : { bytes, packets: 1 };
}

function mutateOne(rng: Prng, kind: Exclude<MutationKind, 'flood'>, packet: Packet, level: ProtocolLevel, connect: Packet): Buffer | null {
  const bytes = encode(packet, level);
  if (bytes === null) return null;
  const body = bytes.length - headerLength(bytes);
  switch (kind) {
    case 'truncate':
      return bytes.length < 2 ? null : bytes.subarray(0, rng.int(1, bytes.length - 1));
    case 'bit-flip': {
      const out = Buffer.from(bytes);
      for (let i = rng.int(1, 3); i > 0; i--) {
        const at = rng.int(0, out.length - 1);
        out[at] = (out[at] as number) ^ (1 << rng.int(0, 7));
      }
      return out;
    }
    case 'insert-bytes': {
      const at = rng.int(0, bytes.length);
      return Buffer.concat([bytes.subarray(0, at), rng.bytes(rng.int(1, 4)), bytes.subarray(at)]);
    }
    case 'delete-bytes': {
      const at = rng.int(0, bytes.length - 1);
      return Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + rng.int(1, 4))]);
    }
    case 'length-under':
      return body === 0 ? null : rewriteLength(bytes, encodeVarint(rng.int(0, body - 1)));
    case 'length-over':
      return rewriteLength(bytes, encodeVarint(body + (rng.chance(0.8) ? rng.int(1, 64) : rng.int(65, 70_000))));
    case 'length-5-bytes':
      return rewriteLength(bytes, Buffer.from(rng.pick([[0xff, 0xff, 0xff, 0xff, 0x7f], [0x80, 0x80, 0x80, 0x80, 0x01], [0x80 | (body & 0x7f), 0x80, 0x80, 0x80, 0x00]])));
    case 'length-not-minimal': {
      // The right value in more bytes than needed: MQTT 5 1.5.5 requires the minimum [MQTT-1.5.5-1].
      const minimal = encodeVarint(body);
      if (minimal.length >= 4) return null;
      const padded = Buffer.concat([minimal, Buffer.from([0x00])]);
      padded[minimal.length - 1] = (padded[minimal.length - 1] as number) | 0x80;
      return rewriteLength(bytes, padded);
    }
    case 'length-oversized': {
      // Announces far more than maxPacketSize (1 MiB), then sends only a little of it.
      const announced = rng.pick([1024 * 1024 + 1, 2 * 1024 * 1024, 268_435_455]);
      return Buffer.concat([bytes.subarray(0, 1), encodeVarint(announced), bytes.subarray(headerLength(bytes)), rng.bytes(rng.int(0, 512))]);
    }
    case 'garbage':
      return rng.bytes(rng.int(1, 256));
    case 'reserved-flags': {
      const out = Buffer.from(bytes);
      const first = out[0] as number;
      const type = first >> 4;
      if (type === 3) {
        // PUBLISH's flags are DUP, QoS and RETAIN: DUP at QoS 0 is the reserved case [MQTT-3.3.1-2] (QoS 3 is below).
        out[0] = (first & 0xf9) | 0x08;
        return out;
      }
      // PUBREL, SUBSCRIBE and UNSUBSCRIBE must have 0010, every other type 0000 [MQTT-2.2.2-1].
      const required = type === 6 || type === 8 || type === 10 ? 0x02 : 0x00;
      out[0] = (type << 4) | (required ^ rng.int(1, 15));
      return out;
    }
    case 'qos-3': {
      const out = Buffer.from(bytes);
      if ((out[0] as number) >> 4 !== 3) return null;
      out[0] = (out[0] as number) | 0x06;
      return out;
    }
    case 'reserved-type': {
      const out = Buffer.from(bytes);
      // Type 0 is reserved; 15 is AUTH in MQTT 5 and reserved before it.
      out[0] = ((level === 5 ? 0 : rng.pick([0, 15])) << 4) | ((out[0] as number) & 0x0f);
      return out;
    }
    case 'bad-utf8':
      return badUtf8(rng, packet, level);
    case 'bad-property':
      return badProperty(rng, packet, level);
    case 'topic-alias-abuse':
      return topicAliasAbuse(rng, level);
    case 'wildcard-topic':
      return encode({ cmd: 'publish', topic: rng.pick(['a/+', '#', 'a/#', '+', 'a/b#', 'sensor/+/x']), payload: Buffer.from('w'), qos: rng.pick([0, 1] as const), messageId: 7, retain: false, dup: false } as Packet, level);
    case 'second-connect':
      return encode(connect, level);
    case 'server-packet':
      return encode(rng.pick(SERVER_PACKETS[level]), level);
  }
}
