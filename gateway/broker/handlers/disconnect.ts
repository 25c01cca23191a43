import type { IDisconnectPacket } from 'mqtt-packet';
import type { Connection } from '../connection';
import { ReasonCode } from '../errors';

/**
 * DISCONNECT: discard the will [MQTT-3.14.4-3] and close [MQTT-3.14.4-1]. MQTT 5 adds reason
 * 0x04, "disconnect with will message", which keeps the will, and a new Session Expiry Interval
 * (section 3.14.2.2.2) — except for a session that began with 0, where it is a Protocol Error
 * (same section).
 */
export function handleDisconnect(conn: Connection, packet: IDisconnectPacket): void {
  if (conn.mqtt5 !== null) {
    const expiry = packet.properties?.sessionExpiryInterval;
    const session = conn.session;
    if (expiry !== undefined && session !== null) {
      if (session.expiryInterval === 0 && expiry !== 0) {
        conn.close('protocol-error', 'DISCONNECT sets a Session Expiry Interval after CONNECT set 0 (section 3.14.2.2.2)');
        return;
      }
      session.setExpiryInterval(expiry);
    }
    if (packet.reasonCode === ReasonCode.DisconnectWithWill) {
      conn.close('client-disconnect', 'DISCONNECT with will message received', true);
      return;
    }
  }
  conn.will = null;
  conn.close('client-disconnect', 'DISCONNECT received', true);
}
