import type { IAuthPacket } from 'mqtt-packet';
import type { Broker } from '../broker';
import type { Connection } from '../connection';
import { authStep, findAuthenticator } from '../enhanced-auth';
import { ReasonCode } from '../errors';
import { encodeV5 } from '../mqtt5';

/**
 * AUTH (MQTT 5.0 section 3.15, enhanced authentication 4.12). While connecting, it answers the
 * server's "continue authentication" (0x18); once connected, reason 0x19 starts a
 * re-authentication with the method of CONNECT. The method must stay the same [MQTT-4.12.0-5];
 * an AUTH from a client that did not use enhanced authentication is a Protocol Error
 * [MQTT-4.12.0-6]. Both close the connection with 0x82.
 */
export function handleAuth(broker: Broker, conn: Connection, packet: IAuthPacket): void {
  const state = conn.mqtt5;
  const method = packet.properties?.authenticationMethod;
  if (state === null || state.authMethod === undefined || method !== state.authMethod) {
    conn.close('protocol-error', 'AUTH without the authentication method of CONNECT');
    return;
  }
  const waiting = state.authWaiting;
  if (packet.reasonCode === ReasonCode.ContinueAuthentication && waiting !== null) {
    state.authWaiting = null;
    waiting(packet.properties?.authenticationData);
    return;
  }
  const authenticator = findAuthenticator(broker, method);
  if (packet.reasonCode !== ReasonCode.ReAuthenticate || conn.state !== 'connected' || authenticator === undefined) {
    conn.close('protocol-error', `unexpected AUTH with reason code 0x${(packet.reasonCode ?? 0).toString(16)}`);
    return;
  }
  // Re-authentication: the connection keeps working meanwhile; a refusal ends it (4.12.1).
  state.authWaiting = null;
  authStep(broker, conn, authenticator, packet.properties?.authenticationData, {
    success: (data) => {
      const properties = { authenticationMethod: method, ...(data === undefined ? {} : { authenticationData: data }) };
      conn.write(encodeV5(state, { cmd: 'auth', reasonCode: ReasonCode.Success, properties }));
    },
    fail: (reasonCode, detail) => conn.close('auth-failed', detail, false, reasonCode),
  });
}
