import type { IPubrecPacket } from 'mqtt-packet';
import type { Broker } from '../broker';
import type { Connection } from '../connection';
import { encodeAck } from '../encode';

/**
 * PUBREC for an outgoing QoS 2 message: from now on the message is not re-sent, only PUBREL is
 * [MQTT-4.3.3-1]. A duplicate PUBREC gets PUBREL again.
 */
export function handlePubrec(broker: Broker, conn: Connection, packet: IPubrecPacket): void {
  const session = conn.session;
  const id = packet.messageId ?? 0;
  if (session === null) return;
  const changesBefore = broker.storageChanges;
  session.markReleased(id);
  // Answer even an unknown id: a client that lost our PUBREL would otherwise wait forever, and
  // the PUBCOMP it returns for an unknown id is ignored. For a persistent session, only once the
  // new state is stored: a crash-restored 'publish' state would re-send a message the client
  // already released, and it would take it as a new one.
  conn.sendAck(encodeAck('pubrel', id, 0, conn.protocolVersion), broker.durableSince(changesBefore));
}
