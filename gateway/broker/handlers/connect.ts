import { randomBytes } from 'node:crypto';
import type { IConnectPacket } from 'mqtt-packet';
import { clientInfo, type Broker } from '../broker';
import type { Connection } from '../connection';
import { encodeConnackV4, encodePacket } from '../encode';
import { connackReturnCodeV4, errorMessage, ReasonCode } from '../errors';
import type { Credentials } from '../hooks';
import { NEVER_EXPIRES } from '../session';
import { topicNameError } from '../topic';
import type { Message, QoS } from '../types';

/**
 * CONNECT (3.1.1 section 3.1): protocol checks, client identifier rules, will validation,
 * connection limit, authentication gate, session takeover and resumption, CONNACK.
 */
export function handleConnect(broker: Broker, conn: Connection, packet: IConnectPacket): void {
  const version = packet.protocolVersion ?? 4;
  // [MQTT-3.1.2-1] the protocol name must match the level: "MQIsdp" for 3.1, "MQTT" for 3.1.1 and 5.
  // A mismatch is a level not supported under that name, so it gets CONNACK 0x01 before the close
  // [MQTT-3.1.2-2] (as in Mosquitto): "MQTT" with level 3 must not be closed silently, and a
  // client probing protocol versions learns that it should fall back.
  if ((version === 3) !== (packet.protocolId === 'MQIsdp')) {
    refuse(broker, conn, ReasonCode.UnsupportedProtocolVersion, `protocol name ${JSON.stringify(packet.protocolId)} does not match level ${version}`);
    return;
  }
  conn.protocolVersion = version;
  if (version === 5) {
    // MQTT 5 lands separately; until then refuse it properly so clients can fall back [MQTT-3.1.2-2].
    refuse(broker, conn, ReasonCode.UnsupportedProtocolVersion, 'MQTT 5 is not supported yet');
    return;
  }

  const clean = packet.clean !== false;
  let clientId = packet.clientId;
  if (clientId.length === 0) {
    // [MQTT-3.1.3-8] an empty id with clean session 0 is refused; 3.1 requires 1 to 23 characters.
    if (!clean || version === 3) {
      refuse(broker, conn, ReasonCode.ClientIdentifierNotValid, 'empty client identifier without clean session');
      return;
    }
    clientId = `edgeway-${randomBytes(8).toString('hex')}`; // [MQTT-3.1.3-6]
  } else if (clientId.includes('\uFFFD') || clientId.includes('\u0000')) {
    refuse(broker, conn, ReasonCode.ClientIdentifierNotValid, 'client identifier is not valid UTF-8');
    return;
  }

  let will: Message | null = null;
  if (packet.will) {
    const invalid = topicNameError(packet.will.topic, broker.limits.maxTopicLevels);
    if (invalid !== null) {
      conn.close('protocol-error', `invalid will topic ${JSON.stringify(packet.will.topic)}: ${invalid.message}`);
      return;
    }
    const payload = packet.will.payload;
    will = {
      topic: packet.will.topic,
      payload: typeof payload === 'string' ? Buffer.from(payload) : payload,
      qos: (packet.will.qos ?? 0) as QoS,
      retain: packet.will.retain ?? false,
    };
  }

  // Checked before the authentication gate runs, so a full broker does no work for the client.
  if (refusedAtConnectionLimit(broker, conn, clientId)) return;

  conn.clientId = clientId;
  conn.transition('authenticating');
  const credentials: Credentials = { username: packet.username, password: packet.password };
  const gates = broker.hooks.authenticate;
  if (gates.length === 0) {
    completeConnect(broker, conn, clean, packet.keepalive ?? 0, will);
    return;
  }
  authenticate(broker, conn, credentials).then(
    (allowed) => {
      if (conn.state !== 'authenticating') return; // closed while the gate ran
      if (allowed) completeConnect(broker, conn, clean, packet.keepalive ?? 0, will);
      else refuse(broker, conn, ReasonCode.NotAuthorized, 'not authorized');
    },
    (err: unknown) => {
      broker.logger.error('authentication hook failed', { clientId, error: errorMessage(err) });
      if (conn.state === 'authenticating') refuse(broker, conn, ReasonCode.ServerUnavailable, 'authentication failed');
    },
  );
}

/** Runs the authenticate gates in order; the first deny wins. */
async function authenticate(broker: Broker, conn: Connection, credentials: Credentials): Promise<boolean> {
  const info = clientInfo(conn);
  for (const gate of broker.hooks.authenticate) {
    if (!(await gate(info, credentials))) return false;
  }
  return true;
}

function completeConnect(broker: Broker, conn: Connection, clean: boolean, keepalive: number, will: Message | null): void {
  const clientId = conn.clientId;
  // Checked again: connections that passed the first check together may have completed while an
  // asynchronous authentication gate ran.
  if (refusedAtConnectionLimit(broker, conn, clientId)) return;
  // [MQTT-3.1.4-2] a second connection with the same id takes over: the old one is closed
  // (its will is published, as for any ungraceful close).
  const previous = broker.clients.get(clientId);
  if (previous !== undefined) previous.close('session-taken-over', `taken over by ${conn.remote}`);

  let session = broker.sessions.get(clientId);
  if (clean && session !== undefined) {
    broker.destroySession(session); // [MQTT-3.1.2-6]
    session = undefined;
  }
  const sessionPresent = session !== undefined; // [MQTT-3.2.2-1], [MQTT-3.2.2-2]
  if (session === undefined) {
    const created = broker.createSession(clientId, clean ? 0 : NEVER_EXPIRES);
    if (created === null) {
      broker.limitHit('maxSessions', 'connection refused: every session belongs to a connected client', { remote: conn.remote, maxSessions: broker.limits.maxSessions });
      refuse(broker, conn, ReasonCode.ServerUnavailable, 'maxSessions reached');
      return;
    }
    session = created;
  }
  session.setExpiryInterval(clean ? 0 : NEVER_EXPIRES);
  session.setOwner(conn.generation);
  conn.session = session;
  conn.keepalive = keepalive;
  conn.will = will;
  broker.clients.set(clientId, conn);
  if (broker.clients.size > broker.metrics.clientsMaximum) broker.metrics.clientsMaximum = broker.clients.size;
  conn.transition('connected');
  conn.write(encodeConnackV4(0, sessionPresent));
  conn.startKeepalive();
  broker.logger.info('client connected', { clientId, remote: conn.remote, protocol: conn.protocolVersion, clean, sessionPresent, keepalive });
  const info = clientInfo(conn);
  for (const hook of broker.hooks.clientConnected) hook(info);

  broker.resumeSession(session, conn);
  // Packets that arrived while authentication ran, in order.
  const pending = conn.pending;
  conn.pending = null;
  if (pending !== null) for (const p of pending) broker.onPacket(conn, p);
}

/**
 * Refuses the client with CONNACK "server unavailable" when maxConnections clients are connected.
 * A takeover does not add a connection, so it is always allowed.
 */
function refusedAtConnectionLimit(broker: Broker, conn: Connection, clientId: string): boolean {
  if (broker.clients.size < broker.limits.maxConnections || broker.clients.has(clientId)) return false;
  broker.limitHit('maxConnections', 'connection refused: maxConnections reached', { remote: conn.remote, maxConnections: broker.limits.maxConnections });
  refuse(broker, conn, ReasonCode.ServerUnavailable, 'maxConnections reached');
  return true;
}

/** Sends a refusing CONNACK [MQTT-3.2.2-5] and closes after it is flushed. */
function refuse(broker: Broker, conn: Connection, reasonCode: number, detail: string): void {
  const connack =
    conn.protocolVersion === 5
      ? encodePacket({ cmd: 'connack', reasonCode, sessionPresent: false }, 5)
      : encodeConnackV4(connackReturnCodeV4(reasonCode), false);
  conn.write(connack);
  conn.close('connect-refused', detail, true);
  broker.logger.info('connection refused', { remote: conn.remote, clientId: conn.clientId, reason: detail });
}
