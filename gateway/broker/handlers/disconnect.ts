import type { IDisconnectPacket } from 'mqtt-packet';
import type { Connection } from '../connection';
import { ReasonCode } from '../errors';

/**
 * DISCONNECT: discard the will [MQTT-3.14.4-3] and close [MQTT-3.14.4-1]. In MQTT 5 only reason
 * 0x00 discards it [MQTT-3.1.2-10]: 0x04 "disconnect with will message" and the error codes keep
 * it, to be published as on any other close. MQTT 5 also allows a new Session Expiry Interval
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
    const reasonCode = packet.reasonCode ?? ReasonCode.NormalDisconnection;
    if (reasonCode !== ReasonCode.NormalDisconnection) {
      conn.close('client-disconnect', `DISCONNECT with reason code 0x${reasonCode.toString(16)} received; the will stands`, true);
      return;
    }
  }
  conn.will = null;
  conn.close('client-disconnect', 'DISCONNECT received', true);
}
