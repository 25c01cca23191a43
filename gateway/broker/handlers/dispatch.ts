import type { Packet } from 'mqtt-packet';
import type { Broker } from '../broker';
import type { Connection } from '../connection';
import { encodeConnackV4 } from '../encode';
import { ReasonCode } from '../errors';
import { propertiesProblem } from '../properties';
import { handleAuth } from './auth';
import { handleConnect, refuse } from './connect';
import { handleDisconnect } from './disconnect';
import { handlePingreq } from './pingreq';
import { handlePuback } from './puback';
import { handlePubcomp } from './pubcomp';
import { handlePublish } from './publish';
import { handlePubrec } from './pubrec';
import { handlePubrel } from './pubrel';
import { handleSubscribe } from './subscribe';
import { handleUnsubscribe } from './unsubscribe';

/** Packets accepted while an asynchronous authentication runs; more is abuse. */
const MAX_PENDING_PACKETS = 64;

/** Routes a parsed packet to its handler, gated on the connection state. */
export function dispatchPacket(broker: Broker, conn: Connection, packet: Packet): void {
  switch (conn.state) {
    case 'closed':
      return; // the rest of a chunk parsed after a close
    case 'awaiting-connect':
      if (packet.cmd !== 'connect') {
        // [MQTT-3.1.0-1] the first packet from the client must be CONNECT.
        conn.close('protocol-error', `first packet was ${packet.cmd.toUpperCase()}, not CONNECT`);
        return;
      }
      handleConnect(broker, conn, packet);
      return;
    case 'authenticating':
      if (packet.cmd === 'auth') {
        handleAuth(broker, conn, packet);
        return;
      }
      // [MQTT-3.1.2-30] with enhanced authentication, only AUTH or DISCONNECT before CONNACK.
      if (conn.mqtt5?.authMethod !== undefined && packet.cmd !== 'disconnect') {
        refuse(broker, conn, ReasonCode.ProtocolError, `${packet.cmd.toUpperCase()} during enhanced authentication`);
        return;
      }
      conn.pending ??= [];
      if (conn.pending.length >= MAX_PENDING_PACKETS) {
        conn.close('protocol-error', `more than ${MAX_PENDING_PACKETS} packets before CONNACK`);
        return;
      }
      conn.pending.push(packet);
      return;
    case 'connected':
      dispatchConnected(broker, conn, packet);
      return;
  }
}

function dispatchConnected(broker: Broker, conn: Connection, packet: Packet): void {
  // MQTT 5 properties are checked once here (properties.ts); 3.1.1 packets have none.
  if (conn.mqtt5 !== null && 'properties' in packet) {
    const problem = propertiesProblem(packet.cmd, packet.properties);
    if (problem !== null) {
      conn.close(problem.reasonCode === ReasonCode.MalformedPacket ? 'malformed-packet' : 'protocol-error', problem.detail, false, problem.reasonCode);
      return;
    }
  }
  switch (packet.cmd) {
    case 'publish':
      return handlePublish(broker, conn, packet);
    case 'puback':
      return handlePuback(broker, conn, packet);
    case 'pubrec':
      return handlePubrec(broker, conn, packet);
    case 'pubrel':
      return handlePubrel(broker, conn, packet);
    case 'pubcomp':
      return handlePubcomp(broker, conn, packet);
    case 'subscribe':
      return handleSubscribe(broker, conn, packet);
    case 'unsubscribe':
      return handleUnsubscribe(broker, conn, packet);
    case 'pingreq':
      return handlePingreq(conn);
    case 'disconnect':
      return handleDisconnect(conn, packet);
    case 'auth':
      return handleAuth(broker, conn, packet);
    case 'connect':
      // [MQTT-3.1.0-2] a second CONNECT is a protocol violation.
      return conn.close('protocol-error', 'second CONNECT on one connection');
    default:
      // CONNACK, SUBACK, UNSUBACK, PINGRESP: server-to-client packets.
      return conn.close('protocol-error', `unexpected ${packet.cmd.toUpperCase()} from a client`);
  }
}

/**
 * A packet the parser rejected closes the connection [MQTT-4.8.0-1]. One case gets an answer
 * first: an unsupported protocol level gets CONNACK 0x01 [MQTT-3.1.2-2].
 */
export function handleParseError(broker: Broker, conn: Connection, err: Error): void {
  if (conn.state === 'awaiting-connect' && err.message === 'Invalid protocol version') {
    conn.write(encodeConnackV4(1, false));
    conn.close('connect-refused', 'unsupported protocol version', true);
    broker.logger.info('connection refused: unsupported protocol version', { remote: conn.remote });
    return;
  }
  conn.close('malformed-packet', err.message);
}
