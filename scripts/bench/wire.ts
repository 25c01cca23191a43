/**
 * A deliberately tiny MQTT 3.1.1 (or MQTT 5, without properties) client on raw net.Socket for the load side.
 *
 * Why not mqtt.js: the load generator must be much cheaper per message than
 * the brokers under test, otherwise we benchmark the client. So:
 *  - control packets (CONNECT/SUBSCRIBE) are encoded with mqtt-packet, once;
 *  - PUBLISH bytes are pre-encoded once and the same Buffer is written again
 *    and again (safe: the content never changes, so it does not matter that
 *    Node may still hold a reference to it in its write queue);
 *  - incoming data is not parsed into objects; FrameScanner only walks the
 *    fixed headers and hands out (type, offsets) so callers can count PUBLISHes
 *    or peek at a packet id / timestamp without allocating.
 */
import net from 'node:net';
import mqtt from 'mqtt-packet';

export const PKT_CONNACK = 2;
export const PKT_PUBLISH = 3;
export const PKT_PUBACK = 4;
export const PKT_SUBACK = 9;

/**
 * Called once per complete packet. `buf[bodyStart..end)` is the variable
 * header + payload; `flags` is the low nibble of the first byte.
 */
export type PacketHandler = (type: number, flags: number, buf: Buffer, bodyStart: number, end: number) => void;

/** Splits a byte stream into MQTT packets by reading fixed headers only. */
export class FrameScanner {
  /** Bytes of a packet that straddles chunk boundaries. */
  private rest: Buffer | null = null;

  constructor(public onPacket: PacketHandler) {}

  push(chunk: Buffer): void {
    // Concatenating the (usually small) tail with the next chunk costs one memcpy
    // per chunk, which is noise next to the per-packet work and keeps the loop simple.
    const buf = this.rest === null ? chunk : Buffer.concat([this.rest, chunk]);
    this.rest = null;
    const len = buf.length;
    let off = 0;
    while (off < len) {
      // Remaining Length: 1..4 bytes varint after the first byte.
      let i = off + 1;
      let rem = 0;
      let mult = 1;
      let complete = false;
      while (i < len) {
        const b = buf[i++]!;
        rem += (b & 0x7f) * mult;
        mult *= 128;
        if ((b & 0x80) === 0) {
          complete = true;
          break;
        }
        if (i - off > 4) throw new Error('malformed MQTT remaining length');
      }
      if (!complete || i + rem > len) break;
      const b0 = buf[off]!;
      this.onPacket(b0 >> 4, b0 & 0x0f, buf, i, i + rem);
      off = i + rem;
    }
    if (off < len) this.rest = buf.subarray(off);
  }
}

/**
 * Pre-encode one PUBLISH. For QoS 1 the packet id is baked in; callers keep one Buffer per id.
 * MQTT 5 adds an empty property block.
 */
export function encodePublish(topic: string, payload: Buffer, qos: 0 | 1, messageId?: number, protocolVersion: 4 | 5 = 4): Buffer {
  const packet: mqtt.IPublishPacket = { cmd: 'publish', topic, payload, qos, retain: false, dup: false };
  if (qos === 1) packet.messageId = messageId ?? 1;
  return mqtt.generate(packet, { protocolVersion });
}

/** `count` copies of one packet back to back, so a burst is a single socket write. */
export function repeatPacket(packet: Buffer, count: number): Buffer {
  return Buffer.concat(Array.from({ length: count }, () => packet));
}

/** Byte offset of the payload inside an encoded QoS 0 PUBLISH (used to stamp timestamps in place). */
export function qos0PayloadOffset(packet: Buffer, payloadLen: number): number {
  return packet.length - payloadLen;
}

/** Packet id of a QoS>0 PUBLISH given the scanner's body offset. */
export function publishPacketId(buf: Buffer, bodyStart: number): number {
  const topicLen = buf.readUInt16BE(bodyStart);
  return buf.readUInt16BE(bodyStart + 2 + topicLen);
}

/** PUBACK for a list of packet ids, as one buffer (4 bytes each). */
export function encodePubacks(ids: Uint16Array, count: number): Buffer {
  const out = Buffer.allocUnsafe(count * 4);
  for (let k = 0; k < count; k++) {
    const id = ids[k]!;
    const o = k * 4;
    out[o] = 0x40;
    out[o + 1] = 0x02;
    out[o + 2] = id >> 8;
    out[o + 3] = id & 0xff;
  }
  return out;
}

const noop: PacketHandler = () => undefined;

export interface ConnectOptions {
  host: string;
  port: number;
  clientId: string;
  keepalive?: number;
  timeoutMs?: number;
  /** 4 (3.1.1, the default) or 5. */
  protocolVersion?: 4 | 5;
}

/** A connected MQTT session. Set `scanner.onPacket` to consume traffic after the handshake. */
export class RawClient {
  readonly scanner = new FrameScanner(noop);
  /** First socket error seen, if any; scenarios report it instead of crashing. */
  error: Error | null = null;
  closed = false;

  private constructor(
    readonly socket: net.Socket,
    readonly protocolVersion: 4 | 5,
  ) {
    socket.on('data', (chunk: Buffer) => this.scanner.push(chunk));
    socket.on('error', (err) => {
      this.error ??= err;
    });
    socket.on('close', () => {
      this.closed = true;
    });
  }

  static connect(opts: ConnectOptions): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      // noDelay: the windowed scenarios write small packets (PUBACKs, single
      // bursts) and must not be held back by Nagle + delayed ACK (40 ms stalls).
      const socket = net.connect({ host: opts.host, port: opts.port, noDelay: true });
      const client = new RawClient(socket, opts.protocolVersion ?? 4);
      let settled = false;
      const settle = (err: Error | null): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        client.scanner.onPacket = noop;
        if (err) {
          socket.destroy();
          reject(err);
        } else {
          resolve(client);
        }
      };
      const timer = setTimeout(() => settle(new Error(`CONNACK timeout for ${opts.clientId}`)), opts.timeoutMs ?? 10_000);
      socket.once('error', (err) => settle(err));
      socket.once('close', () => settle(new Error(`connection closed before CONNACK (${opts.clientId})`)));
      client.scanner.onPacket = (type, _flags, buf, bodyStart) => {
        if (type !== PKT_CONNACK) return;
        // Flags, then the return code (3.1.1) or reason code (MQTT 5): the same byte.
        const rc = buf[bodyStart + 1];
        settle(rc === 0 ? null : new Error(`CONNACK return code ${rc ?? '?'} for ${opts.clientId}`));
      };
      socket.write(
        mqtt.generate({
          cmd: 'connect',
          protocolId: 'MQTT',
          protocolVersion: client.protocolVersion,
          clientId: opts.clientId,
          clean: true,
          keepalive: opts.keepalive ?? 60,
        }, { protocolVersion: client.protocolVersion }),
      );
    });
  }

  /** SUBSCRIBE and wait for the SUBACK; rejects if the broker refuses the subscription. */
  subscribe(topic: string, qos: 0 | 1, timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`SUBACK timeout for ${topic}`)), timeoutMs);
      this.scanner.onPacket = (type, _flags, buf, bodyStart) => {
        if (type !== PKT_SUBACK) return;
        clearTimeout(timer);
        this.scanner.onPacket = noop;
        // After the packet id; MQTT 5 puts a property block first (a one-byte length when short).
        const granted = buf[bodyStart + 2 + (this.protocolVersion === 5 ? 1 + (buf[bodyStart + 2] ?? 0) : 0)];
        if (granted === undefined || granted >= 0x80) reject(new Error(`SUBSCRIBE ${topic} refused`));
        else resolve();
      };
      this.socket.write(mqtt.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos }] }, { protocolVersion: this.protocolVersion }));
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Open `count` connections with bounded concurrency (avoids SYN-backlog drops on the broker). */
export async function connectMany(
  count: number,
  concurrency: number,
  mk: (i: number) => ConnectOptions,
): Promise<RawClient[]> {
  const out: RawClient[] = [];
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    // Stop handing out work as soon as one connect failed, so we do not keep
    // hammering a broker that is already refusing us.
    while (next < count && !failed) {
      const i = next++;
      try {
        out[i] = await RawClient.connect(mk(i));
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const results = await Promise.allSettled(Array.from({ length: Math.min(concurrency, count) }, worker));
  const rejected = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (rejected) {
    for (const c of out) c?.close();
    throw rejected.reason;
  }
  return out;
}
