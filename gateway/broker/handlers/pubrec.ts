import type { IPubrecPacket } from 'mqtt-packet';
import type { Broker } from '../broker';
import type { Connection } from '../connection';
import { ReasonCode } from '../errors';
import { encodeAckFor } from '../mqtt5';

/**
 * PUBREC for an outgoing QoS 2 message: from now on the message is not re-sent, only PUBREL is
 * [MQTT-4.3.3-1]. A duplicate PUBREC gets PUBREL again. An MQTT 5 client may refuse the message
 * with a reason code of 0x80 or more: the exchange ends there, without PUBREL, and the packet
 * identifier is free (section 4.3.3).
 */
export function handlePubrec(broker: Broker, conn: Connection, packet: IPubrecPacket): void {
  const session = conn.session;
  const id = packet.messageId ?? 0;
  if (session === null) return;
  const entry = session.inflight.get(id);
  if (conn.mqtt5 !== null && (packet.reasonCode ?? 0) >= 0x80) {
    if (entry !== undefined && entry.qos === 2 && entry.state === 'publish') {
      session.completeInflight(id);
      broker.pump(session);
    }
    return;
  }
  const changesBefore = broker.storageChanges;
  session.markReleased(id);
  // Answer even an unknown id: a client that lost our PUBREL would otherwise wait forever, and
  // the PUBCOMP it returns for an unknown id is ignored. For a persistent session, only once the
  // new state is stored: a crash-restored 'publish' state would re-send a message the client
  // already released, and it would take it as a new one. MQTT 5 says the id was unknown (0x92).
  const reasonCode = entry === undefined || entry.qos !== 2 ? ReasonCode.PacketIdentifierNotFound : ReasonCode.Success;
  conn.sendAck(encodeAckFor(conn, 'pubrel', id, reasonCode), broker.durableSince(changesBefore));
}
