import type { IPubrelPacket } from 'mqtt-packet';
import type { Broker } from '../broker';
import type { Connection } from '../connection';
import { ReasonCode } from '../errors';
import { encodeAckFor } from '../mqtt5';

/**
 * PUBREL for an incoming QoS 2 message: the packet identifier is released, so a later PUBLISH
 * with it is a new message [MQTT-4.3.3-2]. PUBCOMP is sent even for an unknown identifier, as a
 * re-sent PUBREL after a reconnect may find the id already released; MQTT 5 says so with 0x92.
 */
export function handlePubrel(broker: Broker, conn: Connection, packet: IPubrelPacket): void {
  const id = packet.messageId ?? 0;
  const changesBefore = broker.storageChanges;
  const known = conn.session?.incomingQos2.has(id) === true;
  conn.session?.releaseIncomingQos2(id);
  // After the release is stored: once the client has PUBCOMP it may reuse the id for a new
  // message, which a crash-restored "still held" id would swallow as a duplicate.
  const reasonCode = known ? ReasonCode.Success : ReasonCode.PacketIdentifierNotFound;
  conn.sendAck(encodeAckFor(conn, 'pubcomp', id, reasonCode), broker.durableSince(changesBefore), known);
}
