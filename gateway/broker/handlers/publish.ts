import type { IPublishPacket } from 'mqtt-packet';
import type { Broker } from '../broker';
import type { Connection } from '../connection';
import { encodeAck } from '../encode';
import { topicNameError } from '../topic';
import type { Message } from '../types';

/**
 * Incoming PUBLISH (3.1.1 section 3.3). QoS 1 is acknowledged after routing; QoS 2 uses
 * "method A" (4.3.3): route on first receipt, remember the packet id until PUBREL, and answer a
 * re-sent PUBLISH with the same id by PUBREC alone, so it is delivered exactly once.
 *
 * Acknowledged means durable (issue 4): when routing changed stored state (the outbox, a
 * persistent session's queue, a retained message, the held QoS 2 id), PUBACK/PUBREC waits for the
 * commit that contains the change. Routing to live subscribers does not wait.
 */
export function handlePublish(broker: Broker, conn: Connection, packet: IPublishPacket): void {
  broker.metrics.publishReceived++;
  const { topic, qos } = packet;
  const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;

  if (qos === 0 && packet.dup) {
    conn.close('malformed-packet', 'DUP flag set on a QoS 0 PUBLISH [MQTT-3.3.1-2]');
    return;
  }
  const invalid = topicNameError(topic, broker.limits.maxTopicLevels);
  if (invalid !== null) {
    if (invalid.kind === 'too-many-levels') {
      broker.limitHit('maxTopicLevels', 'PUBLISH topic has too many levels; client disconnected', { clientId: conn.clientId, maxTopicLevels: broker.limits.maxTopicLevels });
    }
    conn.close('protocol-error', `invalid topic name ${JSON.stringify(topic)} in PUBLISH: ${invalid.message}`);
    return;
  }

  const message: Message = { topic, payload, qos, retain: packet.retain };
  const id = packet.messageId ?? 0;
  const changesBefore = broker.storageChanges;
  if (qos === 2) {
    const session = conn.session;
    if (session === null) return;
    let barrier: Promise<void> | null;
    if (!session.incomingQos2.has(id)) {
      session.holdIncomingQos2(id);
      broker.publish(message, conn);
      barrier = broker.durableSince(changesBefore);
    } else {
      // A re-sent id (perhaps on a new connection, the first one's PUBREC never seen): the first
      // copy may not be committed yet, so this PUBREC waits for whatever is pending too.
      barrier = broker.options.storage === undefined ? null : broker.durableBarrier();
    }
    conn.sendAck(encodeAck('pubrec', id, 0, conn.protocolVersion), barrier);
    return;
  }
  broker.publish(message, conn);
  if (qos === 1) conn.sendAck(encodeAck('puback', id, 0, conn.protocolVersion), broker.durableSince(changesBefore));
}
