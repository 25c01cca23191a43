/**
 * Counters of the broker core. Plain numbers on one object: incrementing a property is the
 * cheapest thing the hot path can do. $SYS topics and (later) the Prometheus endpoint read them.
 */
export class BrokerMetrics {
  /** MQTT packets of any type, like Mosquitto's $SYS/broker/messages/received. */
  packetsReceived = 0;
  packetsSent = 0;
  bytesReceived = 0;
  bytesSent = 0;
  publishReceived = 0;
  publishSent = 0;
  /** Messages not delivered to a subscriber because of a limit (sum of the drop counters below). */
  publishDropped = 0;
  /** MQTT 5 messages not sent from a queue or the retained store because their Message Expiry Interval passed. */
  publishExpired = 0;
  connectionsAccepted = 0;
  /**
   * TLS handshakes that failed on an mqtts or wss listener (a plain-TCP client on the TLS port,
   * a missing or refused client certificate, an old TLS version, a handshake timeout), and
   * verified client certificates refused for lack of a subject CN (useIdentityAsUsername).
   */
  tlsHandshakeFailures = 0;
  /** HTTP requests a ws or wss listener refused: another path, not a WebSocket upgrade, a bad request. */
  webSocketRefused = 0;
  clientsMaximum = 0;
  /** Connections closed because the storage closed before the commit their acknowledgements waited for. */
  storageFailures = 0;
  /** Connections closed because handling one of their packets threw (a bug; Broker.onPacket). */
  handlerErrors = 0;
  /**
   * Refused by the authorisation hooks (an ACL): messages a client or in-process publisher may
   * not publish (wills included), subscriptions refused in SUBACK, and deliveries of messages a
   * subscriber may not read.
   */
  readonly denied = { publish: 0, subscribe: 0, read: 0 };

  /** One counter per limit (config/schema.ts `limits`), counted each time the limit is hit. */
  readonly limitHits = {
    maxPacketSize: 0,
    maxConnections: 0,
    maxQueued: 0,
    /** A QoS 1/2 message was not queued for a session: all session queues together were at limits.maxQueuedBytesTotal. */
    maxQueuedBytesTotal: 0,
    maxSessions: 0,
    maxRetainedBytes: 0,
    maxOutgoingBytes: 0,
    /** A QoS 0 message to a slow subscriber was dropped: all sockets together held limits.maxOutgoingBytesTotal. */
    maxOutgoingBytesTotal: 0,
    maxSubscriptionsPerClient: 0,
    maxRetained: 0,
    maxTopicLevels: 0,
    backpressurePauses: 0,
    backpressureTimeouts: 0,
    /** A connection held MAX_HELD_ACKS acknowledgements waiting for a commit and was paused. */
    heldAcks: 0,
    /** A message was not sent to an MQTT 5 client because it exceeds the client's Maximum Packet Size. */
    clientMaxPacketSize: 0,
    /** A connection sent no CONNECT (or was not authenticated) within limits.connectTimeout and was closed. */
    connectTimeout: 0,
    /** A connection was closed at accept: its address had limits.perAddress.maxConnections open. */
    perAddressConnections: 0,
    /** A connection was closed at accept: its address opened more than connectionsPerSecond (burst connectionBurst). */
    perAddressRate: 0,
    /** An authentication gate refused a CONNECT (limits.loginBackoff counts these per address). */
    loginFailures: 0,
    /** A login attempt waited for the back-off of its address, before authentication or before its refusal. */
    loginDelayed: 0,
    /** A login attempt was refused unchecked: its address already had that many attempts waiting. */
    loginQueueFull: 0,
  };
}

export type LimitName = keyof BrokerMetrics['limitHits'];
