import { randomBytes } from 'node:crypto';
import type { IConnackPacket, IConnectPacket } from 'mqtt-packet';
import { clientInfo, type Broker } from '../broker';
import type { Connection } from '../connection';
import { encodeConnackV4, encodePacket } from '../encode';
import { authStep, findAuthenticator } from '../enhanced-auth';
import { connackReturnCodeV4, errorMessage, ReasonCode } from '../errors';
import type { Credentials, EnhancedAuthenticator } from '../hooks';
import { DEFAULT_RECEIVE_MAXIMUM, encodeV5, MQTT_MAX_PACKET_SIZE, Mqtt5State } from '../mqtt5';
import { isProblem, keptProperties, messageOf } from '../incoming';
import type { LoginOutcome } from '../login-backoff';
import { propertiesProblem } from '../properties';
import { NEVER_EXPIRES } from '../session';
import { sessionExpiresAt } from '../session-expiry';
import { topicNameError } from '../topic';
import type { Message, QoS } from '../types';

type ConnackProperties = NonNullable<IConnackPacket['properties']>;

/** What CONNECT asked for, kept while the authentication gates run. */
interface ConnectRequest {
  /** 3.1.1 Clean Session, MQTT 5 Clean Start: an existing session is discarded. */
  readonly clean: boolean;
  /** Seconds; 3.1.1's clean session 0 is "never" (NEVER_EXPIRES), clean session 1 is 0. */
  readonly sessionExpiry: number;
  /** Seconds, the one in effect: the client's, or the server's when it caps it. */
  readonly keepalive: number;
  /** The server replaced the client's keepalive (MQTT 5 Server Keep Alive). */
  readonly serverKeepAlive: boolean;
  /** Will messages keep their Message Expiry Interval until published (incoming.ts withExpiry). */
  readonly will: Message | null;
  /** MQTT 5 Will Delay Interval, seconds (0 for 3.1.1). */
  readonly willDelay: number;
  /** The client sent an empty identifier and the server chose one [MQTT-3.1.3-6]. */
  readonly assignedId: boolean;
}

/**
 * CONNECT (3.1.1 section 3.1, MQTT 5.0 section 3.1): protocol checks, client identifier rules,
 * will validation, connection limit, authentication gates (enhanced authentication first for an
 * MQTT 5 client that names a method), session takeover and resumption, CONNACK.
 */
export function handleConnect(broker: Broker, conn: Connection, packet: IConnectPacket): void {
  const version = packet.protocolVersion ?? 4;
  conn.protocolVersion = version; // a refusal is sent in the format of the level
  // [MQTT-3.1.2-1] the protocol name must match the level: "MQIsdp" for 3.1, "MQTT" for 3.1.1 and 5.
  // A mismatch is a level not supported under that name, so it gets CONNACK 0x01 before the close
  // [MQTT-3.1.2-2] (as in Mosquitto): "MQTT" with level 3 must not be closed silently, and a
  // client probing protocol versions learns that it should fall back.
  if ((version === 3) !== (packet.protocolId === 'MQIsdp')) {
    refuse(broker, conn, ReasonCode.UnsupportedProtocolVersion, `protocol name ${JSON.stringify(packet.protocolId)} does not match level ${version}`);
    return;
  }
  if (version === 5) {
    const problem = propertiesProblem('connect', packet.properties) ?? propertiesProblem('will', packet.will?.properties);
    if (problem !== null) {
      refuse(broker, conn, problem.reasonCode, problem.detail);
      return;
    }
    conn.mqtt5 = new Mqtt5State(packet.properties, broker.limits.topicAliasMaximum);
  }

  const clean = packet.clean !== false;
  let clientId = packet.clientId;
  const assignedId = clientId.length === 0;
  if (assignedId) {
    // 3.1.1: [MQTT-3.1.3-8] an empty id with clean session 0 is refused; 3.1 requires 1 to 23
    // characters. MQTT 5 assigns one whatever Clean Start says [MQTT-3.1.3-6].
    if (version !== 5 && (!clean || version === 3)) {
      refuse(broker, conn, ReasonCode.ClientIdentifierNotValid, 'empty client identifier without clean session');
      return;
    }
    clientId = `edgeway-${randomBytes(8).toString('hex')}`; // [MQTT-3.1.3-6]
  } else if (clientId.includes('\uFFFD') || clientId.includes('\u0000')) {
    refuse(broker, conn, ReasonCode.ClientIdentifierNotValid, 'client identifier is not valid UTF-8');
    return;
  }

  let will: Message | null = null;
  let willDelay = 0;
  if (packet.will) {
    const invalid = topicNameError(packet.will.topic, broker.limits.maxTopicLevels);
    if (invalid !== null) {
      // MQTT 5 can say why (CONNACK 0x90); 3.1.1 has no code for it and closes [MQTT-3.1.2-9].
      if (version === 5) refuse(broker, conn, ReasonCode.TopicNameInvalid, `invalid will topic: ${invalid.message}`);
      else conn.close('protocol-error', `invalid will topic ${JSON.stringify(packet.will.topic)}: ${invalid.message}`);
      return;
    }
    const payload = typeof packet.will.payload === 'string' ? Buffer.from(packet.will.payload) : packet.will.payload;
    // The Will Delay Interval is about when to publish, not part of the message.
    const { willDelayInterval, ...properties } = packet.will.properties ?? {};
    willDelay = willDelayInterval ?? 0;
    const kept = keptProperties(payload, Object.keys(properties).length === 0 ? undefined : properties);
    if (isProblem(kept)) {
      refuse(broker, conn, kept.reasonCode, `will: ${kept.detail}`);
      return;
    }
    will = messageOf(packet.will.topic, payload, (packet.will.qos ?? 0) as QoS, packet.will.retain ?? false, kept);
  }

  let authenticator: EnhancedAuthenticator | undefined;
  const method = conn.mqtt5?.authMethod;
  if (method !== undefined) {
    authenticator = findAuthenticator(broker, method);
    if (authenticator === undefined) {
      refuse(broker, conn, ReasonCode.BadAuthenticationMethod, `authentication method ${JSON.stringify(method)} is not supported`);
      return;
    }
  }

  // Checked before the authentication gate runs, so a full broker does no work for the client.
  if (refusedAtConnectionLimit(broker, conn, clientId)) return;

  const credentials: Credentials =
    conn.certificateUsername === undefined
      ? { username: packet.username, password: packet.password }
      : { username: conn.certificateUsername, password: undefined, fromCertificate: true };
  // The name ACLs see (%u); the connection is closed if the gates refuse it. Set before the
  // transition: from 'authenticating' on, clientInfo(conn) is cached with it (broker.ts).
  conn.username = credentials.username;
  conn.clientId = clientId;
  conn.transition('authenticating');
  // Server Keep Alive (MQTT 5): above limits.maxKeepalive, or 0 (none), the server's value
  // applies [MQTT-3.2.2-21]. 3.1.1 has no way to tell the client, so its keepalive stands.
  const keepalive = packet.keepalive ?? 0;
  const maxKeepalive = broker.limits.maxKeepalive;
  const serverKeepAlive = version === 5 && maxKeepalive > 0 && (keepalive === 0 || keepalive > maxKeepalive);
  const request: ConnectRequest = {
    clean,
    sessionExpiry: version === 5 ? (packet.properties?.sessionExpiryInterval ?? 0) : clean ? 0 : NEVER_EXPIRES,
    keepalive: serverKeepAlive ? maxKeepalive : keepalive,
    willDelay,
    serverKeepAlive,
    will,
    assignedId,
  };
  // Without any authentication there is nothing to guess: no back-off, and no cost for it.
  if (authenticator === undefined && broker.hooks.authenticate.length === 0) {
    completeConnect(broker, conn, request, undefined);
    return;
  }
  const chosen = authenticator;
  throughLoginBackoff(broker, conn, () => {
    if (chosen === undefined) {
      checkCredentials(broker, conn, request, credentials, undefined);
      return;
    }
    authStep(broker, conn, chosen, packet.properties?.authenticationData, {
      success: (data) => checkCredentials(broker, conn, request, credentials, { authenticationMethod: chosen.method, ...(data === undefined ? {} : { authenticationData: data }) }),
      fail: (reasonCode, detail) => endLogin(broker, conn, 'failure', () => refuseIfAuthenticating(broker, conn, reasonCode, detail)),
    });
  });
}

/**
 * Authentication waits for the failed-login back-off of the client's address (login-backoff.ts,
 * README "Abuse resistance"): `authenticate` runs at once, or when the address's turn comes. The
 * connect timeout is suspended while the attempt waits — the wait is ours, and a legitimate
 * client behind a back-off longer than connectTimeout must still get in once it is over — and
 * restarted for the authentication itself. What waiting attempts hold is bounded there.
 */
function throughLoginBackoff(broker: Broker, conn: Connection, authenticate: () => void): void {
  const attempt = broker.loginBackoff.begin(conn.socket.remoteAddress ?? 'unknown', () => {
    if (conn.state !== 'authenticating') return;
    conn.armConnectTimeout(broker.limits.connectTimeout);
    authenticate();
  });
  if (attempt === null) {
    refuse(broker, conn, ReasonCode.ServerBusy, 'too many login attempts waiting from this address');
    return;
  }
  conn.loginAttempt = attempt;
  if (attempt.state === 'active') authenticate();
  else conn.armConnectTimeout(0);
}

/**
 * Records how the login ended in the back-off of the client's address, then calls `then` — after
 * the back-off delay when this failure imposes one (the refusal is held: the client learns the
 * result no sooner than it could try again).
 */
function endLogin(broker: Broker, conn: Connection, outcome: LoginOutcome, then: () => void): void {
  const attempt = conn.loginAttempt;
  if (attempt === null) {
    then();
    return;
  }
  const held = broker.loginBackoff.finish(attempt, outcome, () => {
    conn.loginAttempt = null;
    then();
  });
  // Held open by us: the connect timeout must not cut the hold short (bounded by maxDelay).
  if (held > 0) conn.armConnectTimeout(0);
}

/** Runs the authenticate gates (user name and password), then completes the connection. */
function checkCredentials(broker: Broker, conn: Connection, request: ConnectRequest, credentials: Credentials, auth: ConnackProperties | undefined): void {
  const gates = broker.hooks.authenticate;
  if (gates.length === 0) {
    endLogin(broker, conn, 'success', () => completeConnect(broker, conn, request, auth));
    return;
  }
  authenticate(broker, conn, credentials).then(
    (allowed) => {
      if (conn.state !== 'authenticating') return; // closed while the gate ran
      if (allowed) endLogin(broker, conn, 'success', () => completeConnect(broker, conn, request, auth));
      else endLogin(broker, conn, 'failure', () => refuseIfAuthenticating(broker, conn, ReasonCode.NotAuthorized, 'not authorized'));
    },
    (err: unknown) => {
      broker.logger.error('authentication hook failed', { clientId: conn.clientId, error: errorMessage(err) });
      if (conn.state === 'authenticating') endLogin(broker, conn, 'neutral', () => refuseIfAuthenticating(broker, conn, ReasonCode.ServerUnavailable, 'authentication failed'));
    },
  );
}

/** A refusal sent later (after a back-off hold): only if the connection is still waiting for it. */
function refuseIfAuthenticating(broker: Broker, conn: Connection, reasonCode: number, detail: string): void {
  if (conn.state === 'authenticating') refuse(broker, conn, reasonCode, detail);
}

/** Runs the authenticate gates in order; the first deny wins. */
async function authenticate(broker: Broker, conn: Connection, credentials: Credentials): Promise<boolean> {
  const info = clientInfo(conn);
  for (const gate of broker.hooks.authenticate) {
    if (!(await gate(info, credentials))) return false;
  }
  return true;
}

function completeConnect(broker: Broker, conn: Connection, request: ConnectRequest, auth: ConnackProperties | undefined): void {
  const clientId = conn.clientId;
  // Checked again: connections that passed the first check together may have completed while an
  // asynchronous authentication gate ran.
  if (refusedAtConnectionLimit(broker, conn, clientId)) return;
  // [MQTT-3.1.4-2] a second connection with the same id takes over: the old one is closed
  // (its will is published, as for any ungraceful close; an MQTT 5 client gets DISCONNECT 0x8E).
  const previous = broker.clients.get(clientId);
  if (previous !== undefined) previous.close('session-taken-over', `taken over by ${conn.remote}`);

  let session = broker.sessions.get(clientId);
  // [MQTT-3.1.2-6] (3.1.1), [MQTT-3.1.2-4] (MQTT 5): Clean Start discards the session; so does
  // its expiry, even if the expiry timer has not come round to it yet.
  if (session !== undefined && (request.clean || sessionExpiresAt(session) <= Date.now())) {
    broker.destroySession(session);
    session = undefined;
  }
  const sessionPresent = session !== undefined; // [MQTT-3.2.2-1], [MQTT-3.2.2-2]
  // The session is resumed in time: the will of its last connection is not published [MQTT-3.1.3-9].
  // (Ending the session above published it.)
  if (sessionPresent) broker.delayedWills.cancel(clientId);
  if (session === undefined) {
    const created = broker.createSession(clientId, request.sessionExpiry);
    if (created === null) {
      broker.limitHit('maxSessions', 'connection refused: every session belongs to a connected client', { remote: conn.remote, maxSessions: broker.limits.maxSessions });
      refuse(broker, conn, ReasonCode.QuotaExceeded, 'maxSessions reached');
      return;
    }
    session = created;
  }
  session.setExpiryInterval(request.sessionExpiry);
  session.setOwner(conn.generation);
  conn.session = session;
  // One ClientInfo per connection, kept by the session: authorisation hooks may cache by it.
  const info = clientInfo(conn);
  session.client = info;
  conn.keepalive = request.keepalive;
  conn.will = request.will;
  const mqtt5 = conn.mqtt5;
  if (mqtt5 !== null) mqtt5.willDelay = request.willDelay;
  conn.inflightLimit = Math.min(broker.limits.maxInflight, mqtt5?.receiveMaximum ?? DEFAULT_RECEIVE_MAXIMUM);
  broker.clients.set(clientId, conn);
  if (broker.clients.size > broker.metrics.clientsMaximum) broker.metrics.clientsMaximum = broker.clients.size;
  conn.transition('connected');
  if (mqtt5 === null) conn.write(encodeConnackV4(0, sessionPresent));
  else conn.write(encodeV5(mqtt5, { cmd: 'connack', reasonCode: ReasonCode.Success, sessionPresent, properties: connackProperties(broker, conn, request, auth) }));
  conn.startKeepalive();
  broker.logger.info('client connected', { clientId, remote: conn.remote, protocol: conn.protocolVersion, clean: request.clean, sessionPresent, keepalive: conn.keepalive });
  for (const hook of broker.hooks.clientConnected) hook(info);

  broker.resumeSession(session, conn);
  // Packets that arrived while authentication ran, in order.
  const pending = conn.pending;
  conn.pending = null;
  if (pending !== null) for (const p of pending) broker.onPacket(conn, p);
}

/**
 * What an MQTT 5 client learns in CONNACK (section 3.2.2.3): the identifier chosen for it and
 * the server's limits. Absent means the protocol's default: Maximum QoS 2 (a value of 2 may not
 * be sent), Receive Maximum 65,535, Topic Alias Maximum 0, the client's own keepalive.
 */
function connackProperties(broker: Broker, conn: Connection, request: ConnectRequest, auth: ConnackProperties | undefined): ConnackProperties {
  const { limits } = broker;
  return {
    ...(request.assignedId ? { assignedClientIdentifier: conn.clientId } : {}), // [MQTT-3.2.2-16]
    ...(limits.receiveMaximum < DEFAULT_RECEIVE_MAXIMUM ? { receiveMaximum: limits.receiveMaximum } : {}),
    ...(limits.maxPacketSize < MQTT_MAX_PACKET_SIZE ? { maximumPacketSize: limits.maxPacketSize } : {}),
    ...(limits.topicAliasMaximum > 0 ? { topicAliasMaximum: limits.topicAliasMaximum } : {}),
    ...(request.serverKeepAlive ? { serverKeepAlive: request.keepalive } : {}),
    retainAvailable: true,
    wildcardSubscriptionAvailable: true,
    subscriptionIdentifiersAvailable: true,
    sharedSubscriptionAvailable: true,
    ...auth,
  };
}

/**
 * Refuses the client with CONNACK "server unavailable" (MQTT 5: "quota exceeded") when
 * maxConnections clients are connected. A takeover does not add a connection, so it is always allowed.
 */
function refusedAtConnectionLimit(broker: Broker, conn: Connection, clientId: string): boolean {
  if (broker.clients.size < broker.limits.maxConnections || broker.clients.has(clientId)) return false;
  broker.limitHit('maxConnections', 'connection refused: maxConnections reached', { remote: conn.remote, maxConnections: broker.limits.maxConnections });
  refuse(broker, conn, ReasonCode.QuotaExceeded, 'maxConnections reached');
  return true;
}

/**
 * Sends a refusing CONNACK [MQTT-3.2.2-5] (sessionPresent 0, [MQTT-3.2.2-6]) and closes after it
 * is flushed. 3.1/3.1.1 get the nearest return code; MQTT 5 the reason code and, unless it asked
 * for none, the reason as a Reason String.
 */
export function refuse(broker: Broker, conn: Connection, reasonCode: number, detail: string): void {
  let connack: Buffer;
  if (conn.mqtt5 !== null) connack = encodeV5(conn.mqtt5, { cmd: 'connack', reasonCode, sessionPresent: false, properties: conn.mqtt5.reason(detail) });
  else if (conn.protocolVersion === 5) connack = encodePacket({ cmd: 'connack', reasonCode, sessionPresent: false }, 5);
  else connack = encodeConnackV4(connackReturnCodeV4(reasonCode), false);
  conn.write(connack);
  conn.close('connect-refused', detail, true);
  broker.logger.info('connection refused', { remote: conn.remote, clientId: conn.clientId, reason: detail });
}
