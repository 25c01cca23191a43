import type { IUnsubscribePacket } from 'mqtt-packet';
import type { Broker } from '../broker';
import type { Connection } from '../connection';
import { encodePacket } from '../encode';

/**
 * UNSUBSCRIBE (3.1.1 section 3.10): filters are compared character by character [MQTT-3.10.4-1];
 * UNSUBACK is sent even when nothing matched [MQTT-3.10.4-5]. Messages already queued or inflight
 * for the session are still delivered [MQTT-3.10.4-3].
 */
export function handleUnsubscribe(broker: Broker, conn: Connection, packet: IUnsubscribePacket): void {
  const session = conn.session;
  if (session === null) return;
  const changesBefore = broker.storageChanges;
  for (const filter of packet.unsubscriptions) {
    if (session.removeSubscription(filter)) broker.subscriptions.delete(filter, session.clientId);
  }
  conn.sendAck(encodePacket({ cmd: 'unsuback', messageId: packet.messageId ?? 0, granted: [] }, conn.protocolVersion), broker.durableSince(changesBefore));
}
