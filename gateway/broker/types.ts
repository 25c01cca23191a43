import type { IPublishPacket } from 'mqtt-packet';
import type { Outbox } from './outbox';
import type { BrokerStorage } from './persistence';

export type QoS = 0 | 1 | 2;

/** MQTT 5 publish properties travel with the message unchanged (used fully by the MQTT 5 work). */
export type PublishProperties = NonNullable<IPublishPacket['properties']>;

/** An application message as it moves through the broker. Immutable once routed. */
export interface Message {
  readonly topic: string;
  readonly payload: Buffer;
  readonly qos: QoS;
  readonly retain: boolean;
  readonly properties?: PublishProperties;
  /** Absolute expiry time in ms since epoch (MQTT 5 message expiry); undefined = never. */
  readonly expiresAt?: number;
}

/** Subscription options, shaped for MQTT 5 (3.1.1 uses qos only). */
export interface SubscriptionOptions {
  readonly qos: QoS;
  readonly noLocal: boolean;
  readonly retainAsPublished: boolean;
  readonly retainHandling: 0 | 1 | 2;
  readonly subscriptionId?: number;
}

/** Limits of the broker core; each one is a config value with a default (config/schema.ts). */
export interface BrokerLimits {
  /** Largest packet accepted, in bytes: the whole packet, fixed header included (as MQTT 5 counts it). */
  readonly maxPacketSize: number;
  readonly maxConnections: number;
  /** QoS 1/2 messages sent to a client and not yet acknowledged (lowered to an MQTT 5 client's Receive Maximum). */
  readonly maxInflight: number;
  /**
   * The server's Receive Maximum (MQTT 5): QoS 1/2 messages an MQTT 5 client may have sent and not
   * yet had fully acknowledged; one more is a protocol violation (DISCONNECT 0x93).
   */
  readonly receiveMaximum: number;
  /**
   * Topic aliases per MQTT 5 connection, in each direction: how many a client may set up for its
   * PUBLISHes (Topic Alias Maximum in CONNACK), and the most the server assigns to a client that
   * takes them. 0: none.
   */
  readonly topicAliasMaximum: number;
  /** Seconds; an MQTT 5 client asking for a longer keepalive, or none, gets this one (Server Keep Alive). 0: no cap. */
  readonly maxKeepalive: number;
  /** QoS 1/2 messages waiting per session while inflight is full or the client is away. */
  readonly maxQueued: number;
  /** Payload bytes waiting per session (the same queue, bounded by size). */
  readonly maxQueuedBytes: number;
  /** Bytes waiting in all session queues together: payloads plus QUEUED_ENTRY_BYTES each (memory-budget.ts). */
  readonly maxQueuedBytesTotal: number;
  /** Sessions kept, connected or not; beyond it the longest-offline session is evicted. */
  readonly maxSessions: number;
  /** Payload bytes of all retained messages together. */
  readonly maxRetainedBytes: number;
  readonly maxTopicLevels: number;
  readonly maxSubscriptionsPerClient: number;
  readonly maxRetained: number;
  /** Bytes buffered on a socket above which QoS 0 messages to that client are dropped. */
  readonly maxOutgoingBytes: number;
  /**
   * Bytes buffered on all sockets together above which QoS 0 messages are dropped for every
   * subscriber whose socket holds more than outgoingHighWater.
   */
  readonly maxOutgoingBytesTotal: number;
  /** Bytes buffered on a subscriber's socket above which the publishers feeding it are paused. */
  readonly outgoingHighWater: number;
  /** How long a publisher stays paused for a subscriber that does not drain, in ms. */
  readonly backpressureTimeout: number;
  /** Time allowed between TCP accept and CONNECT, in ms. */
  readonly connectTimeout: number;
  /** Caps per source address (issue 8); see config/schema.ts. */
  readonly perAddress: {
    readonly maxConnections: number;
    readonly connectionsPerSecond: number;
    readonly connectionBurst: number;
    readonly exemptLoopback: boolean;
    readonly maxTracked: number;
  };
  /** Growing delay of login attempts from an address with failed logins (issue 8); see config/schema.ts. */
  readonly loginBackoff: {
    readonly freeAttempts: number;
    readonly initialDelay: number;
    readonly maxDelay: number;
    readonly forgetAfter: number;
  };
}

export interface BrokerOptions {
  readonly limits: BrokerLimits;
  /** Seconds between $SYS publications; 0 disables them. */
  readonly sysInterval: number;
  /** Version string reported in $SYS/broker/version. */
  readonly version: string;
  /** Where retained messages and persistent sessions survive restarts; none = in memory only. */
  readonly storage?: BrokerStorage;
  /**
   * The outbox of the uplink (issue 5) and the topic filters whose messages enter it, from
   * network clients and in-process publishers alike. A QoS 1/2 PUBLISH that enters it is
   * acknowledged only once the outbox has it durably.
   */
  readonly uplink?: {
    readonly outbox: Outbox;
    readonly topics: readonly string[];
    /** Publishers whose messages never enter it (messages that came from another gateway). */
    readonly skipSource?: (source: string) => boolean;
  };
}
