import { generate, writeToStream, type Packet } from 'mqtt-packet';
import type { Message, QoS } from './types';

// mqtt-packet otherwise builds a cache of 65,536 two-byte Buffers (≈ 6 MB of heap) on its first
// use, to save an allocation per packet identifier. On a Raspberry Pi the memory matters more,
// and the hot-path packets (PUBLISH, acknowledgements) are encoded below without mqtt-packet.
writeToStream.cacheNumbers = false;

/**
 * Encoding of outgoing packets. PUBLISH without properties is the hot path and is encoded here
 * directly into one buffer (one allocation, no intermediate objects); everything else goes
 * through mqtt-packet.
 */

/** Bytes taken by MQTT's variable byte integer encoding of `n`. */
export function varIntLength(n: number): number {
  return n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4;
}

/** Writes `n` as a variable byte integer at `offset`; returns the offset after it. */
export function writeVarInt(buf: Buffer, offset: number, n: number): number {
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    buf[offset++] = byte;
  } while (n > 0);
  return offset;
}

/**
 * Encodes a PUBLISH without properties: what 3.1/3.1.1 clients get, and MQTT 5 clients when there
 * are none to send (`protocolVersion` 5 adds an empty property block; outgoing.ts encodes the
 * others). `packetId` is ignored for QoS 0.
 */
export function encodePublish(msg: Message, qos: QoS, retain: boolean, dup: boolean, packetId: number, protocolVersion: number): Buffer {
  const topicLength = Buffer.byteLength(msg.topic, 'utf8');
  const remaining = 2 + topicLength + (qos > 0 ? 2 : 0) + (protocolVersion === 5 ? 1 : 0) + msg.payload.length;
  const buf = Buffer.allocUnsafe(1 + varIntLength(remaining) + remaining);
  buf[0] = 0x30 | (dup ? 0x08 : 0) | (qos << 1) | (retain ? 0x01 : 0);
  let offset = writeVarInt(buf, 1, remaining);
  buf.writeUInt16BE(topicLength, offset);
  offset += 2;
  offset += buf.write(msg.topic, offset, 'utf8');
  if (qos > 0) {
    buf.writeUInt16BE(packetId, offset);
    offset += 2;
  }
  if (protocolVersion === 5) buf[offset++] = 0;
  msg.payload.copy(buf, offset);
  return buf;
}

/** PUBACK, PUBREC, PUBREL, PUBCOMP without properties: four fixed bytes (3.1.1) — hot path for QoS 1/2. */
export function encodeAck(cmd: 'puback' | 'pubrec' | 'pubrel' | 'pubcomp', packetId: number, reasonCode: number, protocolVersion: number): Buffer {
  const first = cmd === 'puback' ? 0x40 : cmd === 'pubrec' ? 0x50 : cmd === 'pubrel' ? 0x62 : 0x70;
  if (protocolVersion === 5 && reasonCode !== 0) {
    const buf = Buffer.allocUnsafe(5);
    buf[0] = first;
    buf[1] = 3;
    buf.writeUInt16BE(packetId, 2);
    buf[4] = reasonCode;
    return buf;
  }
  const buf = Buffer.allocUnsafe(4);
  buf[0] = first;
  buf[1] = 2;
  buf.writeUInt16BE(packetId, 2);
  return buf;
}

/** Whole size of a packet with this remaining length: fixed header byte + length bytes + rest. */
export function packetSize(remainingLength: number): number {
  return 1 + varIntLength(remainingLength) + remainingLength;
}

export const PINGRESP = Buffer.from([0xd0, 0x00]);

/** CONNACK for MQTT 3.1/3.1.1: four fixed bytes (3.1.1 section 3.2). */
export function encodeConnackV4(returnCode: number, sessionPresent: boolean): Buffer {
  return Buffer.from([0x20, 0x02, sessionPresent ? 0x01 : 0x00, returnCode]);
}

export function encodePacket(packet: Packet, protocolVersion: number): Buffer {
  return generate(packet, { protocolVersion });
}
