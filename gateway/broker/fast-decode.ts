import { isUtf8 } from 'node:buffer';
import type { Packet } from 'mqtt-packet';

/**
 * Decoding of the packets that make up a gateway's steady traffic — PUBLISH, its four
 * acknowledgements and PINGREQ, MQTT 3.1/3.1.1, and MQTT 5 without properties (an empty property
 * block; acknowledgements without a reason code) — straight from a received chunk. mqtt-packet's
 * general parser costs a BufferList append/consume, a Packet object and debug calls per packet:
 * about a third of the broker's CPU in QoS 0 fan-in (profile in the issue 2 note). This decoder
 * handles only well-formed common packets and stops at anything else (another packet type, an odd
 * flag, ill-formed UTF-8, MQTT 5 properties), leaving those bytes untouched to mqtt-packet and its
 * full validation.
 */
export interface FastPacketSink {
  /** Receives each decoded packet; returns false to stop decoding (the connection closed). */
  onFastPacket(packet: Packet): boolean;
}

export interface FastDecodeResult {
  /** Offset of the first byte not consumed (the chunk's length when all of it was). */
  readonly offset: number;
  /** True when decoding stopped at a common packet that has not fully arrived yet. */
  readonly incomplete: boolean;
  /** For an incomplete packet: its whole announced size in bytes, or -1 while its length is unknown. */
  readonly announced?: number;
}

const ACK_COMMANDS = new Map<number, 'puback' | 'pubrec' | 'pubrel' | 'pubcomp'>([
  [0x40, 'puback'],
  [0x50, 'pubrec'],
  [0x62, 'pubrel'], // PUBREL's fixed-header flags must be 0010 [MQTT-3.6.1-1]
  [0x70, 'pubcomp'],
]);

/** `mqtt5`: PUBLISH carries a property block, which must be empty for this decoder. */
export function decodeCommonPackets(chunk: Buffer, sink: FastPacketSink, mqtt5 = false): FastDecodeResult {
  const length = chunk.length;
  let offset = 0;
  while (offset < length) {
    const first = chunk[offset] as number;
    const ack = ACK_COMMANDS.get(first);
    if (ack !== undefined || first === 0xc0) {
      const size = ack !== undefined ? 4 : 2;
      // An odd remaining length goes to mqtt-packet as soon as its byte is there: waiting for the
      // usual size first would hold a complete 2-byte PUBREL 0x62 0x00 until more bytes arrive.
      if (offset + 1 < length && chunk[offset + 1] !== size - 2) return { offset, incomplete: false };
      if (offset + size > length) return { offset, incomplete: true, announced: size };
      const packet: Packet =
        ack !== undefined ? { cmd: ack, messageId: chunk.readUInt16BE(offset + 2), length: 2 } : { cmd: 'pingreq', length: 0 };
      offset += size;
      if (!sink.onFastPacket(packet)) return { offset, incomplete: false };
      continue;
    }
    if (first >> 4 !== 3) return { offset, incomplete: false }; // not a PUBLISH
    const qos = (first >> 1) & 0x03;
    if (qos === 3) return { offset, incomplete: false }; // malformed: mqtt-packet reports it
    // Remaining length: 1–4 bytes, 7 bits each (2.2.3).
    let remaining = 0;
    let multiplier = 1;
    let pos = offset + 1;
    let complete = false;
    for (let i = 0; i < 4 && pos < length; i++) {
      const byte = chunk[pos++] as number;
      remaining += (byte & 0x7f) * multiplier;
      multiplier *= 128;
      if ((byte & 0x80) === 0) {
        complete = true;
        break;
      }
    }
    if (!complete) return { offset, incomplete: pos - offset <= 4 && pos === length, announced: -1 };
    const end = pos + remaining;
    if (end > length) return { offset, incomplete: true, announced: end - offset };
    const idLength = qos > 0 ? 2 : 0;
    if (pos + 2 > end) return { offset, incomplete: false };
    const topicLength = chunk.readUInt16BE(pos);
    pos += 2;
    if (pos + topicLength + idLength > end) return { offset, incomplete: false };
    const topic = chunk.toString('utf8', pos, pos + topicLength);
    // Buffer#toString substitutes U+FFFD for ill-formed UTF-8; the raw bytes decide [MQTT-1.5.3-1].
    if (topic.includes('\uFFFD') && !isUtf8(chunk.subarray(pos, pos + topicLength))) return { offset, incomplete: false };
    pos += topicLength;
    let messageId: number | undefined;
    if (qos > 0) {
      messageId = chunk.readUInt16BE(pos);
      pos += 2;
    }
    if (mqtt5) {
      // Property Length 0 is one zero byte; anything else has properties for mqtt-packet to parse.
      if (pos >= end || chunk[pos] !== 0) return { offset, incomplete: false };
      pos++;
    }
    const packet: Packet = {
      cmd: 'publish',
      topic,
      payload: chunk.subarray(pos, end),
      qos: qos as 0 | 1 | 2,
      dup: (first & 0x08) !== 0,
      retain: (first & 0x01) !== 0,
      messageId,
      length: remaining,
    };
    offset = end;
    if (!sink.onFastPacket(packet)) return { offset, incomplete: false };
  }
  return { offset, incomplete: false };
}
