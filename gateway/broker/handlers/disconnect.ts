import type { Connection } from '../connection';

/** DISCONNECT: discard the will [MQTT-3.14.4-3] and close [MQTT-3.14.4-1]. */
export function handleDisconnect(conn: Connection): void {
  conn.will = null;
  conn.close('client-disconnect', 'DISCONNECT received', true);
}
