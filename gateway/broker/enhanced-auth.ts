import { clientInfo, type Broker } from './broker';
import type { Connection } from './connection';
import { errorMessage, ReasonCode } from './errors';
import type { EnhancedAuthenticator } from './hooks';
import { encodeV5 } from './mqtt5';

/** How one authentication exchange ends, for its caller (CONNECT or re-authentication). */
export interface AuthExchangeEnd {
  /** The method accepted; `data` is its last Authentication Data for the client, if any. */
  success(data: Buffer | undefined): void;
  /** The method refused (0x87) or failed (0x80). */
  fail(reasonCode: number, detail: string): void;
}

/** The authenticator registered for `method`, if any. */
export function findAuthenticator(broker: Broker, method: string): EnhancedAuthenticator | undefined {
  return broker.hooks.authMethods.find((a) => a.method === method);
}

/**
 * Runs one step of MQTT 5 enhanced authentication (section 4.12): the method's answer ends the
 * exchange, or is sent to the client as AUTH 0x18 "continue authentication", whose reply AUTH
 * (handlers/auth.ts) runs the next step. Steps are bounded in time by the connect timeout while
 * connecting; a client that stops answering a re-authentication is left connected, and its next
 * AUTH is simply the next step.
 */
export function authStep(broker: Broker, conn: Connection, authenticator: EnhancedAuthenticator, data: Buffer | undefined, end: AuthExchangeEnd): void {
  const state = conn.mqtt5;
  if (state === null) return;
  const phase = conn.state;
  Promise.resolve()
    .then(() => authenticator.step(clientInfo(conn), data))
    .then(
      (result) => {
        // Closed, or connected meanwhile when this step belonged to CONNECT.
        if (!conn.isOpen || conn.state !== phase) return;
        if (result.outcome === 'success') {
          end.success(result.data);
        } else if (result.outcome === 'continue') {
          state.authWaiting = (next) => authStep(broker, conn, authenticator, next, end);
          const properties = { authenticationMethod: authenticator.method, authenticationData: result.data };
          conn.write(encodeV5(state, { cmd: 'auth', reasonCode: ReasonCode.ContinueAuthentication, properties }));
        } else {
          end.fail(ReasonCode.NotAuthorized, `authentication method ${authenticator.method} refused the client`);
        }
      },
      (err: unknown) => {
        broker.logger.error('enhanced authentication hook failed', { clientId: conn.clientId, method: authenticator.method, error: errorMessage(err) });
        if (conn.isOpen && conn.state === phase) end.fail(ReasonCode.UnspecifiedError, 'authentication failed');
      },
    );
}
