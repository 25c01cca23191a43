import type { ClientInfo } from './hooks';
import { QUEUED_ENTRY_BYTES, type ByteBudget } from './memory-budget';
import type { SessionStore, StoredSession } from './persistence';
import { RingBuffer } from './ring-buffer';
import type { Message, SubscriptionOptions } from './types';

/** Session Expiry Interval meaning "never expires" (MQTT 5 section 3.1.2.11.2). */
export const NEVER_EXPIRES = 0xffffffff;

/**
 * Where a message delivered through a shared subscription came from, so that another member can
 * take it if this one leaves before it was sent (broker.ts redistributeShared). In memory only:
 * after a restart such a message is an ordinary message of its session.
 */
export interface SharedOrigin {
  /** The `$share/…` filter (SharedGroup.key). */
  readonly group: string;
  /** The message as published, before this member's options (subscription identifier) were applied. */
  readonly message: Message;
}

/** A QoS 1/2 message waiting for a free inflight slot or for the client to come back. */
export interface Queued {
  /** Place in the session, in the order messages entered it (the store's key, persistence.ts). */
  readonly ord: number;
  readonly message: Message;
  readonly qos: 1 | 2;
  /** Whether it goes out flagged retained (a retained message sent on SUBSCRIBE). */
  readonly retain: boolean;
  readonly shared?: SharedOrigin;
}

/** Why `Session.enqueue` refused a message: the session's own queue limits, or the global budget. */
export type QueueRefusal = 'maxQueued' | 'maxQueuedBytesTotal';

/** An outgoing QoS 1/2 message that the client has not yet fully acknowledged. */
export interface Inflight extends Queued {
  /** 'publish': waiting for PUBACK/PUBREC; 'pubrel': PUBREL sent, waiting for PUBCOMP. */
  state: 'publish' | 'pubrel';
}

/**
 * Session state (MQTT 3.1.1 section 3.1.2.4, MQTT 5 section 4.1). Shaped for MQTT 5: a session
 * has an expiry interval; 3.1.1's clean session 1 is expiry 0 and clean session 0 is "never".
 * The session outlives its connections; the connection that currently owns it is recorded with
 * its generation so that a superseded connection cannot touch it (DESIGN.md convention 9).
 *
 * The collections are read freely but changed only through the methods below, which report each
 * change to the session store while the session is persistent (expiry > 0) and storage is on.
 */
export class Session {
  readonly subscriptions = new Map<string, SubscriptionOptions>();
  /** Outgoing QoS 1/2 messages by packet identifier, in the order they were sent. */
  readonly inflight = new Map<number, Inflight>();
  readonly queue: RingBuffer<Queued>;
  /** Incoming QoS 2 packet identifiers received and PUBREC'd but not yet released (method A, 4.3.3). */
  readonly incomingQos2 = new Set<number>();
  private expiry: number;
  /** Generation of the connection that owns the session, or null while the client is away. */
  owner: number | null = null;
  /** When the session was left without a connection (ms), for expiry and eviction. */
  disconnectedAt = 0;
  /**
   * Payload bytes of the messages in `queue` (bounded by limits.maxQueuedBytes). Changed only
   * with `countQueued`, which keeps the global budget in step.
   */
  queuedBytes = 0;
  private nextPacketId = 1;
  private nextOrd = 1;
  /** Where changes are reported: set while the session is persistent and storage is on. */
  private store: SessionStore | null = null;
  /**
   * Who the session's client is (its latest connection's ClientInfo): the identity authorisation
   * checks messages for it against, also while it is away. Null for a session restored from
   * storage whose client has not connected since (its queued messages are checked when sent).
   */
  client: ClientInfo | null = null;

  constructor(
    readonly clientId: string,
    expiryInterval: number,
    maxQueued: number,
    /** limits.maxQueuedBytes: the same queue, bounded by payload bytes. */
    private readonly maxQueuedBytes: number,
    /**
     * limits.maxQueuedBytesTotal, shared by every session: it counts the payload of each queued
     * message plus QUEUED_ENTRY_BYTES. Inflight messages are not in it (bounded by maxInflight).
     */
    private readonly budget: ByteBudget,
    /** The broker's session store, if storage is on; used only while the session is persistent. */
    private readonly storage: SessionStore | null = null,
  ) {
    this.expiry = expiryInterval;
    this.queue = new RingBuffer(maxQueued);
  }

  get expiryInterval(): number {
    return this.expiry;
  }

  /**
   * Sets the expiry interval. A session that becomes persistent is written whole; one that stops
   * being persistent is deleted from the store (it ends with its connection).
   */
  setExpiryInterval(interval: number): void {
    this.expiry = interval;
    if (interval > 0 && this.storage !== null && this.store === null) {
      this.store = this.storage;
      this.writeWhole();
    } else if (interval === 0 && this.store !== null) {
      this.store.sessionDeleted(this.clientId);
      this.store = null;
    }
  }

  /** The client connected (owner set) or left (owner null): recorded for expiry across a restart. */
  setOwner(generation: number | null): void {
    this.owner = generation;
    if (generation === null) this.disconnectedAt = Date.now();
    this.store?.sessionSaved(this.clientId, this.expiry, generation === null ? this.disconnectedAt : null);
  }

  setSubscription(filter: string, options: SubscriptionOptions): void {
    this.subscriptions.set(filter, options);
    this.store?.subscriptionSaved(this.clientId, filter, options);
  }

  removeSubscription(filter: string): boolean {
    if (!this.subscriptions.delete(filter)) return false;
    this.store?.subscriptionSaved(this.clientId, filter, null);
    return true;
  }

  /**
   * Queues a message unless this queue is full by count or by payload bytes ('maxQueued'), or
   * the queues of all sessions together are at limits.maxQueuedBytesTotal. Returns null when queued.
   */
  enqueue(message: Message, qos: 1 | 2, retain: boolean, shared?: SharedOrigin): QueueRefusal | null {
    const refused = this.refusal(message.payload.length);
    if (refused !== null) return refused;
    const item: Queued = shared === undefined ? { ord: this.nextOrd, message, qos, retain } : { ord: this.nextOrd, message, qos, retain, shared };
    this.queue.push(item);
    this.nextOrd++;
    this.countQueued(message.payload.length, 1);
    this.store?.messageAdded(this.clientId, { ord: item.ord, message, qos, retain, state: 'queued', packetId: 0 });
    return null;
  }

  /** Which limit a message of `payloadBytes` would exceed if it were queued, or null. */
  private refusal(payloadBytes: number): QueueRefusal | null {
    if (this.queuedBytes + payloadBytes > this.maxQueuedBytes || this.queue.isFull()) return 'maxQueued';
    return this.budget.fits(payloadBytes + QUEUED_ENTRY_BYTES) ? null : 'maxQueuedBytesTotal';
  }

  /** Adds (`sign` 1) or removes (-1) one queued message of `payloadBytes`, here and in the global budget. */
  private countQueued(payloadBytes: number, sign: 1 | -1): void {
    this.queuedBytes += sign * payloadBytes;
    this.budget.used += sign * (payloadBytes + QUEUED_ENTRY_BYTES);
  }

  /** Takes the oldest queued message; the caller sends it with `addInflight`. */
  dequeue(): Queued | undefined {
    const item = this.queue.shift();
    if (item !== undefined) this.countQueued(item.message.payload.length, -1);
    return item;
  }

  /** A message taken from the queue is not sent after all (expired, or too large for the client): it leaves the session. */
  discard(ord: number): void {
    this.store?.messageRemoved(this.clientId, ord);
  }

  /**
   * Records a message as sent with `packetId`: one from `dequeue()` (it keeps its place), or a new
   * one (`ord` undefined) sent at once.
   */
  addInflight(packetId: number, message: Message, qos: 1 | 2, retain: boolean, ord?: number, shared?: SharedOrigin): void {
    const entry: Inflight = { ord: ord ?? this.nextOrd++, message, qos, retain, state: 'publish', ...(shared === undefined ? {} : { shared }) };
    this.inflight.set(packetId, entry);
    if (this.store === null) return;
    if (ord === undefined) this.store.messageAdded(this.clientId, { ord: entry.ord, message, qos, retain, state: 'publish', packetId });
    else this.store.messageUpdated(this.clientId, ord, 'publish', packetId);
  }

  /**
   * Takes out the messages of shared subscriptions whose group `movable` accepts and whose
   * delivery can move to another member (MQTT 5.0 section 4.8.2): every one still queued, and QoS 1
   * ones sent but not acknowledged. QoS 2 ones already sent stay: their delivery must be completed
   * with this client [MQTT-4.8.2-4]. Returned in the order they entered the session.
   */
  takeShared(movable: (group: string) => boolean): (Queued & { readonly shared: SharedOrigin })[] {
    const taken: (Queued & { readonly shared: SharedOrigin })[] = [];
    for (const [packetId, entry] of this.inflight) {
      if (entry.shared !== undefined && entry.qos === 1 && movable(entry.shared.group)) {
        taken.push(entry as Inflight & { readonly shared: SharedOrigin });
        this.completeInflight(packetId);
      }
    }
    let movableQueued = false;
    for (const item of this.queue) {
      if (item.shared !== undefined && movable(item.shared.group)) {
        movableQueued = true;
        break;
      }
    }
    if (movableQueued) {
      // The ring buffer has no removal from the middle: it is rebuilt (once, when a member leaves).
      const kept: Queued[] = [];
      for (let item = this.dequeue(); item !== undefined; item = this.dequeue()) {
        if (item.shared !== undefined && movable(item.shared.group)) {
          taken.push(item as Queued & { readonly shared: SharedOrigin });
          this.discard(item.ord);
        } else {
          kept.push(item);
        }
      }
      // Put back unchecked: they were in the budget before the rebuild took them out, so the
      // total only drops, by the taken ones.
      for (const item of kept) {
        this.queue.push(item);
        this.countQueued(item.message.payload.length, 1);
      }
    }
    return taken.sort((a, b) => a.ord - b.ord);
  }

  /** PUBREC received for an outgoing QoS 2 message: from now on only PUBREL is re-sent. */
  markReleased(packetId: number): void {
    const entry = this.inflight.get(packetId);
    if (entry === undefined || entry.qos !== 2 || entry.state === 'pubrel') return;
    entry.state = 'pubrel';
    this.store?.messageUpdated(this.clientId, entry.ord, 'pubrel', packetId);
  }

  /** PUBACK / PUBCOMP: the delivery is complete and its packet identifier free. */
  completeInflight(packetId: number): void {
    const entry = this.inflight.get(packetId);
    if (entry === undefined) return;
    this.inflight.delete(packetId);
    this.store?.messageRemoved(this.clientId, entry.ord);
  }

  holdIncomingQos2(packetId: number): void {
    this.incomingQos2.add(packetId);
    this.store?.incomingQos2Saved(this.clientId, packetId, true);
  }

  releaseIncomingQos2(packetId: number): void {
    if (!this.incomingQos2.delete(packetId)) return;
    this.store?.incomingQos2Saved(this.clientId, packetId, false);
  }

  /** Empties the session (it ends); removes it from the store. */
  clear(): void {
    this.subscriptions.clear();
    this.inflight.clear();
    this.budget.used -= this.queuedBytes + this.queue.length * QUEUED_ENTRY_BYTES;
    this.queue.clear();
    this.queuedBytes = 0;
    this.incomingQos2.clear();
    this.store?.sessionDeleted(this.clientId);
    this.store = null;
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

  /**
   * Fills a new session from its stored form (at start, before any client connects). Queued
   * messages beyond the queue's bounds, or beyond the global budget, are dropped and removed
   * from the store; returns how many, by the limit that refused them.
   */
  restore(stored: StoredSession): Record<QueueRefusal, number> {
    for (const [filter, options] of stored.subscriptions) this.subscriptions.set(filter, options);
    const dropped: Record<QueueRefusal, number> = { maxQueued: 0, maxQueuedBytesTotal: 0 };
    let lastPacketId = 0;
    for (const m of stored.messages) {
      this.nextOrd = Math.max(this.nextOrd, m.ord + 1);
      if (m.state === 'queued') {
        const refused = this.refusal(m.message.payload.length);
        if (refused === null) {
          this.queue.push({ ord: m.ord, message: m.message, qos: m.qos, retain: m.retain });
          this.countQueued(m.message.payload.length, 1);
        } else {
          dropped[refused]++;
          this.storage?.messageRemoved(this.clientId, m.ord);
        }
      } else {
        this.inflight.set(m.packetId, { ord: m.ord, message: m.message, qos: m.qos, retain: m.retain, state: m.state });
        lastPacketId = m.packetId;
      }
    }
    for (const id of stored.incomingQos2) this.incomingQos2.add(id);
    this.nextPacketId = lastPacketId === 65_535 ? 1 : lastPacketId + 1;
    this.disconnectedAt = stored.disconnectedAt ?? Date.now();
    this.store = this.expiry > 0 ? this.storage : null;
    // A session that was connected when the gateway stopped is offline now.
    if (stored.disconnectedAt === null) this.store?.sessionSaved(this.clientId, this.expiry, this.disconnectedAt);
    return dropped;
  }

  /** Writes the whole session to the store (it just became persistent). */
  private writeWhole(): void {
    const store = this.store;
    if (store === null) return;
    store.sessionSaved(this.clientId, this.expiry, this.owner === null ? this.disconnectedAt : null);
    for (const [filter, options] of this.subscriptions) store.subscriptionSaved(this.clientId, filter, options);
    for (const [packetId, e] of this.inflight) store.messageAdded(this.clientId, { ord: e.ord, state: e.state, packetId, qos: e.qos, retain: e.retain, message: e.message });
    for (const q of this.queue) store.messageAdded(this.clientId, { ...q, state: 'queued', packetId: 0 });
    for (const id of this.incomingQos2) store.incomingQos2Saved(this.clientId, id, true);
  }
}
