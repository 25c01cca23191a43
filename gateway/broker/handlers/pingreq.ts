import type { Connection } from '../connection';
import { PINGRESP } from '../encode';

/** PINGREQ → PINGRESP [MQTT-3.12.4-1]. Activity itself was recorded when the bytes arrived. */
export function handlePingreq(conn: Connection): void {
  conn.write(PINGRESP);
}
