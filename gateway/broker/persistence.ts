import type { Message, SubscriptionOptions } from './types';

/**
 * Storage ports of the core (issue 4, item 2). The core calls them synchronously: `load` once
 * before the listeners open, the change methods on every change. Implementations buffer the
 * changes and write them in a group commit; they must not throw from a change method: a storage
 * fault is theirs to log and count, while live routing goes on.
 */

/** Retained messages. */
export interface RetainedStore {
  /** Every stored retained message. */
  load(): Message[];
  /** The retained message of `topic` is now `message`; null when it was deleted. */
  save(topic: string, message: Message | null): void;
}

/**
 * Where an outgoing QoS 1/2 message of a session stands: waiting in the session's queue, sent and
 * waiting for PUBACK/PUBREC ('publish'), or PUBREL sent and waiting for PUBCOMP ('pubrel').
 */
export type SessionMessageState = 'queued' | 'publish' | 'pubrel';

/** An outgoing QoS 1/2 message of a persistent session. */
export interface StoredSessionMessage {
  /**
   * Its place in the session: strictly increasing per session in the order messages entered it,
   * which is the order they are (re)sent in [MQTT-4.4.0-1]. The key of the message in the store.
   */
  readonly ord: number;
  readonly state: SessionMessageState;
  /** The packet identifier it was sent with; 0 while queued. */
  readonly packetId: number;
  readonly qos: 1 | 2;
  /** Whether it goes out flagged retained (a retained message sent on SUBSCRIBE). */
  readonly retain: boolean;
  readonly message: Message;
}

/** A persistent session as stored. */
export interface StoredSession {
  readonly clientId: string;
  readonly expiryInterval: number;
  /** When the client went away (ms since epoch); null if it was connected when the gateway stopped. */
  readonly disconnectedAt: number | null;
  readonly subscriptions: readonly (readonly [filter: string, options: SubscriptionOptions])[];
  /** Queued and inflight messages, in ascending `ord`. */
  readonly messages: readonly StoredSessionMessage[];
  /** Incoming QoS 2 packet ids PUBREC'd and not yet released (exactly-once across a restart). */
  readonly incomingQos2: readonly number[];
}

/**
 * Persistent sessions (expiry interval > 0; clean session 0 in MQTT 3.1.1). Only those are
 * stored; a clean session lives and dies with its connection. Every change is keyed so that an
 * implementation can coalesce changes within one commit window: a message queued and acknowledged
 * within the window need never reach the disk.
 */
export interface SessionStore {
  /** Every stored session. */
  load(): StoredSession[];
  /** The session exists (created, resumed, or its client left); `disconnectedAt` null while connected. */
  sessionSaved(clientId: string, expiryInterval: number, disconnectedAt: number | null): void;
  /** The session and everything in it are gone (clean start, eviction, expiry). */
  sessionDeleted(clientId: string): void;
  /** A subscription was added or replaced (`options`), or removed (null). */
  subscriptionSaved(clientId: string, filter: string, options: SubscriptionOptions | null): void;
  /** A message entered the session (queued, or sent at once). */
  messageAdded(clientId: string, message: StoredSessionMessage): void;
  /** A message moved on: sent from the queue with `packetId`, or PUBREC'd ('pubrel'). */
  messageUpdated(clientId: string, ord: number, state: SessionMessageState, packetId: number): void;
  /** A message left the session (PUBACK, PUBCOMP). */
  messageRemoved(clientId: string, ord: number): void;
  /** An incoming QoS 2 packet id was PUBREC'd (`held` true) or released by PUBREL (false). */
  incomingQos2Saved(clientId: string, packetId: number, held: boolean): void;
}

/** Everything the core keeps on storage, and the group commit behind it. */
export interface BrokerStorage {
  readonly retained: RetainedStore;
  readonly sessions: SessionStore;
  /**
   * Resolves once every change handed to the stores so far is durable (committed); rejects if
   * that commit failed. The core holds PUBACK/PUBREC of a message that changed stored state until
   * then: "acknowledged means durable".
   */
  durable(): Promise<void>;
}
