import type { IPubrelPacket } from 'mqtt-packet';
import type { Broker } from '../broker';
import type { Connection } from '../connection';
import { encodeAck } from '../encode';

/**
 * PUBREL for an incoming QoS 2 message: the packet identifier is released, so a later PUBLISH
 * with it is a new message [MQTT-4.3.3-2]. PUBCOMP is sent even for an unknown identifier, as a
 * re-sent PUBREL after a reconnect may find the id already released.
 */
export function handlePubrel(_broker: Broker, conn: Connection, packet: IPubrelPacket): void {
  const id = packet.messageId ?? 0;
  conn.session?.releaseIncomingQos2(id);
  // Behind any acknowledgement still waiting for a commit [MQTT-4.6.0-2], but not waiting itself:
  // a release lost to a crash only means the client's re-sent PUBREL finds the id still held.
  conn.sendAck(encodeAck('pubcomp', id, 0, conn.protocolVersion), null);
}
