import { encodePacket, encodePublish } from './encode';
import type { Mqtt5State } from './mqtt5';
import type { Message, PublishProperties, QoS } from './types';

/**
 * PUBLISH packets for MQTT 5 clients. A message without properties, sent to a client that takes
 * no topic aliases, is the common case and goes through encodePublish's direct encoding (one
 * buffer, an empty property block); everything else is encoded by mqtt-packet.
 */

/**
 * The properties a message carries when it is forwarded (section 3.3.2.3): the publisher's,
 * unchanged [MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-20] (with
 * the Subscription Identifiers of this delivery, see withSubscriptionIds), and the Message Expiry
 * Interval lowered by the time the message waited in the server [MQTT-3.3.2-6]. Undefined when
 * there are none, which keeps the common case on the direct encoding.
 */
export function forwardedProperties(msg: Message, now: number): PublishProperties | undefined {
  if (msg.expiresAt === undefined) return msg.properties;
  return { ...msg.properties, messageExpiryInterval: remainingSeconds(msg.expiresAt, now) };
}

/**
 * The copy of `msg` one session gets when its matching subscriptions have identifiers: all of
 * them, in one PUBLISH [MQTT-3.3.4-3] [MQTT-3.3.4-4]. Made per delivery, so that a queued or
 * stored copy keeps its identifiers.
 */
export function withSubscriptionIds(msg: Message, ids: readonly number[] | undefined): Message {
  if (ids === undefined) return msg;
  return { ...msg, properties: { ...msg.properties, subscriptionIdentifier: ids.length === 1 ? (ids[0] as number) : [...ids] } };
}

/** Whole seconds left until `expiresAt`, rounded up; 0 once it has passed. */
function remainingSeconds(expiresAt: number, now: number): number {
  return Math.max(0, Math.ceil((expiresAt - now) / 1000));
}

/**
 * The PUBLISH of `msg` for one MQTT 5 client, with `properties` (forwardedProperties) and, when
 * the client takes them, a topic alias: the topic's known alias with an empty topic, or a newly
 * assigned one with the topic. Null when the packet would exceed the client's Maximum Packet
 * Size [MQTT-3.1.2-24]: the caller then drops it as if it had been sent [MQTT-3.1.2-25].
 */
export function encodePublishV5(
  state: Mqtt5State,
  msg: Message,
  qos: QoS,
  retain: boolean,
  dup: boolean,
  packetId: number,
  properties: PublishProperties | undefined,
): Buffer | null {
  const aliases = state.outAliases;
  if (aliases === null) {
    const bytes = encodePublishV5WithoutAlias(msg, qos, retain, dup, packetId, properties);
    return bytes.length <= state.maxPacketSize ? bytes : null;
  }
  const known = aliases.known(msg.topic);
  if (known !== undefined) {
    const bytes = withProperties(msg, '', qos, retain, dup, packetId, { ...properties, topicAlias: known });
    return bytes.length <= state.maxPacketSize ? bytes : null;
  }
  const alias = aliases.candidate();
  const bytes = withProperties(msg, msg.topic, qos, retain, dup, packetId, { ...properties, topicAlias: alias });
  if (bytes.length > state.maxPacketSize) return null;
  aliases.assign(msg.topic, alias);
  return bytes;
}

/** The PUBLISH every MQTT 5 client that takes no topic aliases gets: one encoding for all of them. */
export function encodePublishV5WithoutAlias(msg: Message, qos: QoS, retain: boolean, dup: boolean, packetId: number, properties: PublishProperties | undefined): Buffer {
  return properties === undefined ? encodePublish(msg, qos, retain, dup, packetId, 5) : withProperties(msg, msg.topic, qos, retain, dup, packetId, properties);
}

function withProperties(msg: Message, topic: string, qos: QoS, retain: boolean, dup: boolean, packetId: number, properties: PublishProperties): Buffer {
  return encodePacket({ cmd: 'publish', topic, payload: msg.payload, qos, retain, dup, messageId: packetId, properties }, 5);
}
