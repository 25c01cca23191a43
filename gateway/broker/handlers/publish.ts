import type { IPublishPacket } from 'mqtt-packet';
import { clientInfo, type Broker } from '../broker';
import type { Connection } from '../connection';
import { ReasonCode } from '../errors';
import { encodeAckFor } from '../mqtt5';
import { isProblem, keptProperties, messageOf, withExpiry } from '../incoming';
import { InboundAliases } from '../topic-alias';
import { topicNameError } from '../topic';
import type { PublishProperties } from '../types';

/**
 * Incoming PUBLISH (3.1.1 section 3.3). QoS 1 is acknowledged after routing; QoS 2 uses
 * "method A" (4.3.3): route on first receipt, remember the packet id until PUBREL, and answer a
 * re-sent PUBLISH with the same id by PUBREC alone, so it is delivered exactly once.
 *
 * Acknowledged means durable (issue 4): when routing changed stored state (the outbox, a
 * persistent session's queue, a retained message, the held QoS 2 id), PUBACK/PUBREC waits for the
 * commit that contains the change. Routing to live subscribers does not wait.
 *
 * MQTT 5 adds: topic aliases (topic-alias.ts), the server's Receive Maximum (one QoS 1/2 message
 * beyond it is DISCONNECT 0x93), properties kept and checked (incoming.ts; a payload that is not
 * the UTF-8 its Payload Format Indicator promises gets PUBACK/PUBREC 0x99, or DISCONNECT 0x99 at
 * QoS 0), the Message Expiry Interval made absolute, reason code 0x10 when no subscriber took
 * the message, and reason codes on the DISCONNECT.
 */
export function handlePublish(broker: Broker, conn: Connection, packet: IPublishPacket): void {
  broker.metrics.publishReceived++;
  const { qos } = packet;
  let topic = packet.topic;
  const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;

  if (qos === 0 && packet.dup) {
    conn.close('malformed-packet', 'DUP flag set on a QoS 0 PUBLISH [MQTT-3.3.1-2]');
    return;
  }
  const mqtt5 = conn.mqtt5;
  const alias = mqtt5 === null ? undefined : packet.properties?.topicAlias;
  // An empty topic with an alias stands for the alias's topic, checked when it was set.
  if (alias === undefined || topic.length > 0) {
    const invalid = topicNameError(topic, broker.limits.maxTopicLevels);
    if (invalid !== null) {
      if (invalid.kind === 'too-many-levels') {
        broker.limitHit('maxTopicLevels', 'PUBLISH topic has too many levels; client disconnected', { clientId: conn.clientId, maxTopicLevels: broker.limits.maxTopicLevels });
      }
      conn.close('protocol-error', `invalid topic name ${JSON.stringify(topic)} in PUBLISH: ${invalid.message}`, false, ReasonCode.TopicNameInvalid);
      return;
    }
  }
  let properties: PublishProperties | undefined;
  if (mqtt5 !== null) {
    if (alias !== undefined) {
      const resolved = (mqtt5.inAliases ??= new InboundAliases(broker.limits.topicAliasMaximum)).resolve(topic, alias);
      if (typeof resolved !== 'string') {
        conn.close('protocol-error', resolved.detail, false, resolved.reasonCode);
        return;
      }
      topic = resolved;
    }
    // A re-sent QoS 2 id is the same exchange, not one more.
    if (qos > 0 && !(qos === 2 && conn.session?.incomingQos2.has(packet.messageId ?? 0) === true)) {
      if (mqtt5.inboundUnacked >= broker.limits.receiveMaximum) {
        conn.close('protocol-error', `more than Receive Maximum (${broker.limits.receiveMaximum}) unacknowledged QoS 1/2 messages`, false, ReasonCode.ReceiveMaximumExceeded);
        return;
      }
      mqtt5.inboundUnacked++;
    }
    const kept = keptProperties(payload, packet.properties);
    if (isProblem(kept)) {
      if (kept.reasonCode === ReasonCode.PayloadFormatInvalid && qos > 0) {
        // Refused in the acknowledgement, which ends the exchange: a QoS 2 id is not held [MQTT-4.3.3-9].
        conn.sendAck(encodeAckFor(conn, qos === 1 ? 'puback' : 'pubrec', packet.messageId ?? 0, kept.reasonCode, kept.detail), null, true);
      } else {
        conn.close('protocol-error', kept.detail, false, kept.reasonCode);
      }
      return;
    }
    properties = kept;
  }

  const id = packet.messageId ?? 0;
  // Authorisation (an ACL): here, where the fast path and mqtt-packet's parser both arrive.
  const denied = broker.hooks.authorizePublish.length > 0 && !broker.mayPublish(clientInfo(conn), conn.clientId, topic);
  if (denied && (mqtt5 !== null || qos < 2)) {
    // MQTT 5 refuses with 0x87 in the acknowledgement (QoS 2: which ends the exchange, the id is
    // not held [MQTT-4.3.3-9]). 3.1.1 has no refusal: the message is dropped and still
    // acknowledged, as Mosquitto does, so that the client does not send it again forever.
    if (qos > 0) conn.sendAck(encodeAckFor(conn, qos === 1 ? 'puback' : 'pubrec', id, mqtt5 === null ? ReasonCode.Success : ReasonCode.NotAuthorized, 'not authorized'), null, true);
    return;
  }
  let message = messageOf(topic, payload, qos, packet.retain, properties);
  if (properties?.messageExpiryInterval !== undefined) message = withExpiry(message, Date.now());
  const changesBefore = broker.storageChanges;
  if (qos === 2) {
    const session = conn.session;
    if (session === null) return;
    let barrier: Promise<void> | null;
    let reasonCode: number = ReasonCode.Success;
    if (!session.incomingQos2.has(id)) {
      session.holdIncomingQos2(id);
      // A refused 3.1.1 QoS 2 message completes its exchange (PUBREC, PUBREL, PUBCOMP) undelivered.
      if (!denied && !broker.publish(message, conn)) reasonCode = ReasonCode.NoMatchingSubscribers;
      barrier = broker.durableSince(changesBefore);
    } else {
      // A re-sent id (perhaps on a new connection, the first one's PUBREC never seen): the first
      // copy may not be committed yet, so this PUBREC waits for whatever is pending too.
      barrier = broker.options.storage === undefined ? null : broker.durableBarrier();
    }
    conn.sendAck(encodeAckFor(conn, 'pubrec', id, reasonCode), barrier);
    return;
  }
  const taken = broker.publish(message, conn);
  if (qos === 1) conn.sendAck(encodeAckFor(conn, 'puback', id, taken ? ReasonCode.Success : ReasonCode.NoMatchingSubscribers), broker.durableSince(changesBefore), true);
}
