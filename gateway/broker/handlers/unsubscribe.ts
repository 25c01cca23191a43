import type { IUnsubscribePacket } from 'mqtt-packet';
import type { Broker } from '../broker';
import type { Connection } from '../connection';
import { encodePacket } from '../encode';
import { ReasonCode } from '../errors';
import { encodeV5 } from '../mqtt5';

/**
 * UNSUBSCRIBE (3.1.1 section 3.10, MQTT 5.0 section 3.10): filters are compared character by
 * character [MQTT-3.10.4-1]; UNSUBACK is sent even when nothing matched [MQTT-3.10.4-5], and for
 * MQTT 5 it says per filter whether there was a subscription (0x00) or not (0x11). Messages
 * already queued or inflight for the session are still delivered [MQTT-3.10.4-3].
 */
export function handleUnsubscribe(broker: Broker, conn: Connection, packet: IUnsubscribePacket): void {
  const session = conn.session;
  if (session === null) return;
  // [MQTT-3.10.3-2]: at least one filter. As for SUBSCRIBE, mqtt-packet passes an empty list, and
  // an empty MQTT 5 UNSUBACK cannot be encoded: the gateway crashed (found by fuzzing).
  if (packet.unsubscriptions.length === 0) {
    conn.close('protocol-error', 'UNSUBSCRIBE without a topic filter [MQTT-3.10.3-2]');
    return;
  }
  const changesBefore = broker.storageChanges;
  const reasonCodes: number[] = [];
  for (const filter of packet.unsubscriptions) {
    const removed = broker.unsubscribe(session, filter);
    reasonCodes.push(removed ? ReasonCode.Success : ReasonCode.NoSubscriptionExisted);
  }
  const messageId = packet.messageId ?? 0;
  const unsuback =
    conn.mqtt5 === null
      ? encodePacket({ cmd: 'unsuback', messageId, granted: [] }, conn.protocolVersion)
      : encodeV5(conn.mqtt5, { cmd: 'unsuback', messageId, granted: reasonCodes });
  conn.sendAck(unsuback, broker.durableSince(changesBefore));
}
