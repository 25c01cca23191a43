import type { IConnectPacket, Packet } from 'mqtt-packet';
import { encodeAck, encodePacket } from './encode';
import { InboundAliases, OutboundAliases } from './topic-alias';

type ConnectProperties = NonNullable<IConnectPacket['properties']>;

/** The largest packet MQTT can carry: a remaining length of 268,435,455 plus a 5-byte fixed header. */
export const MQTT_MAX_PACKET_SIZE = 268_435_460;

/** Receive Maximum when none is given: 65,535 (MQTT 5.0 section 3.1.2.11.3). */
export const DEFAULT_RECEIVE_MAXIMUM = 65_535;

/**
 * The MQTT 5 side of one connection: what the client said about itself in CONNECT and the state
 * that only MQTT 5 has. A 3.1/3.1.1 connection has none (Connection.mqtt5 is null), so the
 * connections of the common sensor pay one field for it.
 */
export class Mqtt5State {
  /** Request Problem Information (3.1.2.11.7); false: no Reason String anywhere (stricter than [MQTT-3.1.2-29]). */
  readonly problemInformation: boolean;
  /** The client's Receive Maximum: what the server may have sent it unacknowledged at QoS 1/2 [MQTT-3.3.4-9]. */
  readonly receiveMaximum: number;
  /** The client's Maximum Packet Size: nothing larger is sent to it [MQTT-3.1.2-24]. */
  readonly maxPacketSize: number;
  /** Aliases the client set up for its PUBLISHes (created at the first one). */
  inAliases: InboundAliases | null = null;
  /** Aliases the server assigns to topics it sends; null when the client allows none [MQTT-3.1.2-27]. */
  readonly outAliases: OutboundAliases | null;
  /** Will Delay Interval of the will, seconds (section 3.1.3.2.2). */
  willDelay = 0;
  /** Incoming QoS 1/2 PUBLISH not yet acknowledged to the end: what the server's Receive Maximum bounds. */
  inboundUnacked = 0;
  /** The Authentication Method of CONNECT when the client uses enhanced authentication (4.12). */
  authMethod: string | undefined;
  /** An authentication exchange waiting for the client's next AUTH (set while the method answered "continue"). */
  authWaiting: ((data: Buffer | undefined) => void) | null = null;

  /** `topicAliasMaximum`: the server's, limits.topicAliasMaximum; the client's own comes in `properties`. */
  constructor(properties: ConnectProperties | undefined, topicAliasMaximum: number) {
    this.problemInformation = properties?.requestProblemInformation !== false;
    this.receiveMaximum = properties?.receiveMaximum ?? DEFAULT_RECEIVE_MAXIMUM;
    this.maxPacketSize = properties?.maximumPacketSize ?? MQTT_MAX_PACKET_SIZE;
    const outAliases = Math.min(properties?.topicAliasMaximum ?? 0, topicAliasMaximum);
    this.outAliases = outAliases > 0 ? new OutboundAliases(outAliases) : null;
    this.authMethod = properties?.authenticationMethod;
  }

  /** A Reason String property for `text`, unless the client asked for no problem information. */
  reason(text: string): { reasonString: string } | undefined {
    return this.problemInformation ? { reasonString: text } : undefined;
  }
}

/**
 * Encodes a packet for an MQTT 5 client. A Reason String or User Properties that would make it
 * larger than the client's Maximum Packet Size are left out ([MQTT-3.4.2-2] and its siblings for
 * each packet type); what remains is the packet itself, which the caller has already checked
 * against the limit where that matters.
 */
export function encodeV5(state: Mqtt5State, packet: Packet): Buffer {
  const bytes = encodePacket(packet, 5);
  if (bytes.length <= state.maxPacketSize) return bytes;
  const properties = (packet as { properties?: Record<string, unknown> }).properties;
  if (properties === undefined || (properties.reasonString === undefined && properties.userProperties === undefined)) return bytes;
  const { reasonString: _reason, userProperties: _user, ...rest } = properties;
  return encodePacket({ ...packet, properties: rest } as Packet, 5);
}

type AckCommand = 'puback' | 'pubrec' | 'pubrel' | 'pubcomp';

/**
 * PUBACK, PUBREC, PUBREL or PUBCOMP for `conn`: the fixed four bytes (five with a reason code)
 * on the common path, or with `reason` as a Reason String for an MQTT 5 client that wants one.
 */
export function encodeAckFor(conn: { readonly mqtt5: Mqtt5State | null; readonly protocolVersion: number }, cmd: AckCommand, packetId: number, reasonCode: number, reason?: string): Buffer {
  const state = conn.mqtt5;
  if (state === null || reason === undefined || !state.problemInformation) return encodeAck(cmd, packetId, reasonCode, conn.protocolVersion);
  return encodeV5(state, { cmd, messageId: packetId, reasonCode, properties: { reasonString: reason } });
}
