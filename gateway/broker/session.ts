import { RingBuffer } from './ring-buffer';
import type { Message, QoS, SubscriptionOptions } from './types';

/** Session Expiry Interval meaning "never expires" (MQTT 5 section 3.1.2.11.2). */
export const NEVER_EXPIRES = 0xffffffff;

/** An outgoing QoS 1/2 message that the client has not yet fully acknowledged. */
export interface Inflight {
  readonly message: Message;
  readonly qos: 1 | 2;
  /** Whether it goes out flagged retained (a retained message sent on SUBSCRIBE). */
  readonly retain: boolean;
  /** 'publish': waiting for PUBACK/PUBREC; 'pubrel': PUBREL sent, waiting for PUBCOMP. */
  state: 'publish' | 'pubrel';
}

/** A message waiting for a free inflight slot or for the client to come back. */
export interface Queued {
  readonly message: Message;
  readonly qos: QoS;
  readonly retain: boolean;
}

/**
 * Session state (MQTT 3.1.1 section 3.1.2.4, MQTT 5 section 4.1). Shaped for MQTT 5: a session
 * has an expiry interval; 3.1.1's clean session 1 is expiry 0 and clean session 0 is "never".
 * The session outlives its connections; the connection that currently owns it is recorded with
 * its generation so that a superseded connection cannot touch it (DESIGN.md convention 9).
 */
export class Session {
  readonly subscriptions = new Map<string, SubscriptionOptions>();
  /** Outgoing QoS 1/2 messages by packet identifier, in the order they were sent. */
  readonly inflight = new Map<number, Inflight>();
  readonly queue: RingBuffer<Queued>;
  /** Incoming QoS 2 packet identifiers received and PUBREC'd but not yet released (method A, 4.3.3). */
  readonly incomingQos2 = new Set<number>();
  expiryInterval: number;
  /** Generation of the connection that owns the session, or null while the client is away. */
  owner: number | null = null;
  /** When the session was left without a connection (ms), for expiry and eviction. */
  disconnectedAt = 0;
  /** Payload bytes of the messages in `queue` (bounded by limits.maxQueuedBytes). */
  queuedBytes = 0;
  private nextPacketId = 1;

  constructor(
    readonly clientId: string,
    expiryInterval: number,
    maxQueued: number,
    /** limits.maxQueuedBytes: the same queue, bounded by payload bytes. */
    private readonly maxQueuedBytes: number,
  ) {
    this.expiryInterval = expiryInterval;
    this.queue = new RingBuffer(maxQueued);
  }

  /** Queues a message unless the queue is full by count or by payload bytes. */
  enqueue(item: Queued): boolean {
    if (this.queuedBytes + item.message.payload.length > this.maxQueuedBytes) return false;
    if (!this.queue.push(item)) return false;
    this.queuedBytes += item.message.payload.length;
    return true;
  }

  dequeue(): Queued | undefined {
    const item = this.queue.shift();
    if (item !== undefined) this.queuedBytes -= item.message.payload.length;
    return item;
  }

  clearQueue(): void {
    this.queue.clear();
    this.queuedBytes = 0;
  }

  /** Allocates a packet identifier not currently inflight, or 0 when all 65535 are in use. */
  allocatePacketId(): number {
    for (let tries = 0; tries < 65_535; tries++) {
      const id = this.nextPacketId;
      this.nextPacketId = id === 65_535 ? 1 : id + 1;
      if (!this.inflight.has(id)) return id;
    }
    return 0;
  }
}
