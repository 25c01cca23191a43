import type { IPubackPacket } from 'mqtt-packet';
import type { Broker } from '../broker';
import type { Connection } from '../connection';

/** PUBACK completes an outgoing QoS 1 delivery (4.3.2) and frees an inflight slot. */
export function handlePuback(broker: Broker, conn: Connection, packet: IPubackPacket): void {
  const session = conn.session;
  const id = packet.messageId ?? 0;
  if (session === null) return;
  const entry = session.inflight.get(id);
  // An unknown or mismatched id is ignored: it may be a duplicate after a resend.
  if (entry === undefined || entry.qos !== 1) return;
  session.completeInflight(id);
  broker.pump(session);
}
