import type { IPubcompPacket } from 'mqtt-packet';
import type { Broker } from '../broker';
import type { Connection } from '../connection';

/** PUBCOMP completes an outgoing QoS 2 delivery and frees its packet identifier and inflight slot. */
export function handlePubcomp(broker: Broker, conn: Connection, packet: IPubcompPacket): void {
  const session = conn.session;
  const id = packet.messageId ?? 0;
  if (session === null) return;
  const entry = session.inflight.get(id);
  if (entry === undefined || entry.qos !== 2 || entry.state !== 'pubrel') return;
  session.completeInflight(id);
  broker.pump(session);
}
