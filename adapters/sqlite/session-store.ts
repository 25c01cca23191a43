import {
  RateLimitedLog,
  type Message,
  type QoS,
  type SessionMessageState,
  type SessionStore,
  type StoredSession,
  type StoredSessionMessage,
  type SubscriptionOptions,
} from '../../gateway/broker';
import type { SqliteDatabase } from './database';
import { decodeProperties, encodeProperties, type Properties } from './properties-json';
import type { SqliteStorage, StoragePart } from './storage';

/** `session_messages.state`; the index is the stored code. */
const STATES = ['queued', 'publish', 'pubrel'] as const satisfies readonly SessionMessageState[];
const STATE_CODE: Readonly<Record<SessionMessageState, number>> = { queued: 0, publish: 1, pubrel: 2 };

/** A `session_messages` row as it will be written; `state`/`packetId` follow updates while the insert is pending. */
interface MessageRow {
  state: number;
  packetId: number;
  readonly qos: number;
  readonly retain: number;
  readonly messageQos: number;
  readonly messageRetain: number;
  readonly topic: string;
  readonly properties: string | null;
  readonly expiresAt: number | null;
  readonly payload: Buffer;
}

type MessageOp =
  /** Entered the session within the window: not on disk yet. */
  | { readonly kind: 'insert'; readonly row: MessageRow }
  | { readonly kind: 'update'; readonly state: number; readonly packetId: number }
  | { readonly kind: 'delete' };

interface SubscriptionRow {
  readonly qos: number;
  /** JSON of the options other than qos. */
  readonly options: string;
}

/**
 * What changed for one client since the last commit: at most one pending change per stored row,
 * so memory stays bounded by the size of the sessions however long the disk refuses writes.
 */
interface ClientChanges {
  /** Delete every row of the client first (sessionDeleted); the rest of this object applies after. */
  readonly wipe: boolean;
  session: { readonly expiryInterval: number; readonly disconnectedAt: number | null } | undefined;
  readonly subs: Map<string, SubscriptionRow | null>;
  readonly messages: Map<number, MessageOp>;
  /** Incoming QoS 2 packet id → held. */
  readonly qos2: Map<number, boolean>;
}

function freshChanges(wipe: boolean): ClientChanges {
  return { wipe, session: undefined, subs: new Map(), messages: new Map(), qos2: new Map() };
}

function isEmpty(c: ClientChanges): boolean {
  return !c.wipe && c.session === undefined && c.subs.size === 0 && c.messages.size === 0 && c.qos2.size === 0;
}

interface SessionDbRow {
  client_id: string;
  expiry_interval: number;
  disconnected_at: number | null;
}
interface SubscriptionDbRow {
  client_id: string;
  filter: string;
  qos: number;
  options: string;
}
interface MessageDbRow {
  client_id: string;
  ord: number;
  state: number;
  packet_id: number;
  qos: number;
  retain: number;
  message_qos: number;
  message_retain: number;
  topic: string;
  properties: string | null;
  expires_at: number | null;
  payload: Buffer;
}
interface Qos2DbRow {
  client_id: string;
  packet_id: number;
}

type Statements = ReturnType<typeof prepare>;

function prepare(db: SqliteDatabase) {
  return {
    wipe: [
      db.prepare('DELETE FROM sessions WHERE client_id = ?'),
      db.prepare('DELETE FROM session_subscriptions WHERE client_id = ?'),
      db.prepare('DELETE FROM session_messages WHERE client_id = ?'),
      db.prepare('DELETE FROM session_incoming_qos2 WHERE client_id = ?'),
    ],
    upsertSession: db.prepare(
      'INSERT INTO sessions (client_id, expiry_interval, disconnected_at) VALUES (?, ?, ?) ON CONFLICT(client_id) DO UPDATE SET expiry_interval = excluded.expiry_interval, disconnected_at = excluded.disconnected_at',
    ),
    upsertSubscription: db.prepare(
      'INSERT INTO session_subscriptions (client_id, filter, qos, options) VALUES (?, ?, ?, ?) ON CONFLICT(client_id, filter) DO UPDATE SET qos = excluded.qos, options = excluded.options',
    ),
    deleteSubscription: db.prepare('DELETE FROM session_subscriptions WHERE client_id = ? AND filter = ?'),
    // An upsert although the row is new by contract (ords never repeat within a session): a plain
    // INSERT hitting a leftover row would fail every retry of the commit, and with it every other
    // part of the storage (outbox included) for as long as the process lives.
    insertMessage: db.prepare(
      `INSERT INTO session_messages (client_id, ord, state, packet_id, qos, retain, message_qos, message_retain, topic, properties, expires_at, payload)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(client_id, ord) DO UPDATE SET state = excluded.state, packet_id = excluded.packet_id, qos = excluded.qos, retain = excluded.retain,
         message_qos = excluded.message_qos, message_retain = excluded.message_retain, topic = excluded.topic, properties = excluded.properties,
         expires_at = excluded.expires_at, payload = excluded.payload`,
    ),
    updateMessage: db.prepare('UPDATE session_messages SET state = ?, packet_id = ? WHERE client_id = ? AND ord = ?'),
    deleteMessage: db.prepare('DELETE FROM session_messages WHERE client_id = ? AND ord = ?'),
    holdQos2: db.prepare('INSERT OR IGNORE INTO session_incoming_qos2 (client_id, packet_id) VALUES (?, ?)'),
    releaseQos2: db.prepare('DELETE FROM session_incoming_qos2 WHERE client_id = ? AND packet_id = ?'),
    allSessions: db.prepare('SELECT client_id, expiry_interval, disconnected_at FROM sessions'),
    allSubscriptions: db.prepare('SELECT client_id, filter, qos, options FROM session_subscriptions ORDER BY client_id, filter'),
    allMessages: db.prepare(
      'SELECT client_id, ord, state, packet_id, qos, retain, message_qos, message_retain, topic, properties, expires_at, payload FROM session_messages ORDER BY client_id, ord',
    ),
    allQos2: db.prepare('SELECT client_id, packet_id FROM session_incoming_qos2 ORDER BY client_id, packet_id'),
  };
}

function encodeOptions(options: SubscriptionOptions): SubscriptionRow {
  const { qos, noLocal, retainAsPublished, retainHandling, subscriptionId } = options;
  return { qos, options: JSON.stringify({ noLocal, retainAsPublished, retainHandling, subscriptionId }) };
}

function decodeOptions(qos: number, text: string): SubscriptionOptions {
  const o = JSON.parse(text) as { noLocal?: unknown; retainAsPublished?: unknown; retainHandling?: unknown; subscriptionId?: unknown };
  return {
    qos: qos as QoS,
    noLocal: o.noLocal === true,
    retainAsPublished: o.retainAsPublished === true,
    retainHandling: o.retainHandling === 1 || o.retainHandling === 2 ? o.retainHandling : 0,
    ...(typeof o.subscriptionId === 'number' ? { subscriptionId: o.subscriptionId } : {}),
  };
}

/**
 * A fractional or NaN number bound to a STRICT INTEGER column fails its statement, and that
 * failure would repeat on every retry of the commit: checked when the change arrives instead.
 */
function integers(...values: (number | null | undefined)[]): boolean {
  return values.every((v) => v === null || v === undefined || Number.isSafeInteger(v));
}

interface Written {
  readonly rows: number;
  readonly statements: number;
}

/**
 * Persistent sessions in SQLite, a part of the gateway's `SqliteStorage` (issue 4). Changes are
 * kept per client and per key (subscription filter, message ord, incoming packet id) and written
 * in the storage's group commit, coalesced: a message queued and acknowledged within one window
 * never reaches the disk, and a message sent and acknowledged costs one row write, not three —
 * an SD card wears per write (DESIGN.md convention 10). A failed commit leaves every change
 * pending for the storage's retry; the core waits for `durable()` before acknowledging, so
 * nothing acknowledged is lost while the process lives.
 */
export class SqliteSessionStore implements SessionStore, StoragePart {
  private stmts: Statements | undefined;
  private readonly pending = new Map<string, ClientChanges>();
  private written: Written | undefined;
  private readonly invalidLog: RateLimitedLog;
  readonly counters = {
    /** Rows inserted, updated or deleted by committed transactions. */
    rowsWritten: 0,
    /** Statements run by committed transactions (some change no row: a delete of a row never written). */
    statements: 0,
    /** Changes refused because a value cannot be stored (a bug upstream); logged. */
    invalid: 0,
  };

  constructor(private readonly storage: SqliteStorage) {
    this.invalidLog = new RateLimitedLog((msg, fields) => storage.logger.error(msg, fields));
    storage.attach(this);
  }

  opened(db: SqliteDatabase): void {
    this.stmts = prepare(db);
  }

  /** Every stored session, read with one query per table and grouped here. */
  load(): StoredSession[] {
    const s = this.stmts;
    if (s === undefined) return [];
    interface Building {
      readonly clientId: string;
      readonly expiryInterval: number;
      readonly disconnectedAt: number | null;
      readonly subscriptions: [string, SubscriptionOptions][];
      readonly messages: StoredSessionMessage[];
      readonly incomingQos2: number[];
    }
    const sessions = new Map<string, Building>();
    for (const r of s.allSessions.iterate() as IterableIterator<SessionDbRow>) {
      sessions.set(r.client_id, { clientId: r.client_id, expiryInterval: r.expiry_interval, disconnectedAt: r.disconnected_at, subscriptions: [], messages: [], incomingQos2: [] });
    }
    // Rows of a client without a session row are not written by this store (the core saves the
    // session before its contents, and a delete removes all four tables at once); should some
    // appear anyway, restoring half a session would be worse than leaving them out.
    let orphans = 0;
    for (const r of s.allSubscriptions.iterate() as IterableIterator<SubscriptionDbRow>) {
      const b = sessions.get(r.client_id);
      if (b === undefined) orphans++;
      else b.subscriptions.push([r.filter, decodeOptions(r.qos, r.options)]);
    }
    for (const r of s.allMessages.iterate() as IterableIterator<MessageDbRow>) {
      const b = sessions.get(r.client_id);
      if (b === undefined) {
        orphans++;
        continue;
      }
      const message: Message = {
        topic: r.topic,
        payload: r.payload,
        qos: r.message_qos as QoS,
        retain: r.message_retain === 1,
        ...(r.properties === null ? {} : { properties: decodeProperties(r.properties) }),
        ...(r.expires_at === null ? {} : { expiresAt: r.expires_at }),
      };
      // An unknown state cannot come from this schema version; 'queued' at least re-sends it.
      const state = STATES[r.state] ?? 'queued';
      b.messages.push({ ord: r.ord, state, packetId: r.packet_id, qos: r.qos === 2 ? 2 : 1, retain: r.retain === 1, message });
    }
    for (const r of s.allQos2.iterate() as IterableIterator<Qos2DbRow>) {
      const b = sessions.get(r.client_id);
      if (b === undefined) orphans++;
      else b.incomingQos2.push(r.packet_id);
    }
    if (orphans > 0) this.storage.logger.warn('storage: session rows without their session ignored', { rows: orphans });
    return [...sessions.values()];
  }

  sessionSaved(clientId: string, expiryInterval: number, disconnectedAt: number | null): void {
    if (this.stmts === undefined) return;
    if (!integers(expiryInterval, disconnectedAt)) return this.refuse('session', clientId);
    this.changesOf(clientId).session = { expiryInterval, disconnectedAt };
    this.storage.schedule();
  }

  sessionDeleted(clientId: string): void {
    if (this.stmts === undefined) return;
    // Everything pending for the client is void: the wipe deletes what is on disk, and changes
    // made after this call (a session recreated within the window) go into the fresh object.
    this.pending.set(clientId, freshChanges(true));
    this.storage.schedule();
  }

  subscriptionSaved(clientId: string, filter: string, options: SubscriptionOptions | null): void {
    if (this.stmts === undefined) return;
    if (options !== null && !integers(options.qos)) return this.refuse('subscription', clientId);
    const c = this.changesOf(clientId);
    // After a wipe in this window the only rows on disk will be the ones written since.
    if (options === null && c.wipe) c.subs.delete(filter);
    else c.subs.set(filter, options === null ? null : encodeOptions(options));
    this.settle(clientId, c);
  }

  messageAdded(clientId: string, m: StoredSessionMessage): void {
    if (this.stmts === undefined) return;
    const msg = m.message;
    let properties: string | null = null;
    try {
      if (msg.properties !== undefined) properties = encodeProperties(msg.properties);
    } catch {
      return this.refuse('message properties', clientId); // a BigInt or a cycle: not JSON
    }
    if (!integers(m.ord, m.packetId, m.qos, msg.qos, msg.expiresAt) || !Buffer.isBuffer(msg.payload)) return this.refuse('message', clientId);
    const row: MessageRow = {
      state: STATE_CODE[m.state],
      packetId: m.packetId,
      qos: m.qos,
      retain: m.retain ? 1 : 0,
      messageQos: msg.qos,
      messageRetain: msg.retain ? 1 : 0,
      topic: msg.topic,
      properties,
      expiresAt: msg.expiresAt ?? null,
      payload: msg.payload,
    };
    this.changesOf(clientId).messages.set(m.ord, { kind: 'insert', row });
    this.storage.schedule();
  }

  messageUpdated(clientId: string, ord: number, state: SessionMessageState, packetId: number): void {
    if (this.stmts === undefined) return;
    if (!integers(ord, packetId)) return this.refuse('message update', clientId);
    const c = this.changesOf(clientId);
    const op = c.messages.get(ord);
    if (op?.kind === 'insert') {
      // Not written yet: it will be written once, in its latest state.
      op.row.state = STATE_CODE[state];
      op.row.packetId = packetId;
    } else if (op?.kind === 'delete' || (op === undefined && c.wipe)) {
      // Already gone (removed, or wiped and not added since): nothing on disk to update.
    } else {
      c.messages.set(ord, { kind: 'update', state: STATE_CODE[state], packetId });
    }
    this.settle(clientId, c);
  }

  messageRemoved(clientId: string, ord: number): void {
    if (this.stmts === undefined) return;
    if (!integers(ord)) return this.refuse('message removal', clientId);
    const c = this.changesOf(clientId);
    // Added within this window (never written), or wiped: no row to delete. The insert case is
    // the one that spares the SD card: queued and acknowledged before the commit.
    if (c.messages.get(ord)?.kind === 'insert' || c.wipe) c.messages.delete(ord);
    else c.messages.set(ord, { kind: 'delete' });
    this.settle(clientId, c);
  }

  incomingQos2Saved(clientId: string, packetId: number, held: boolean): void {
    if (this.stmts === undefined) return;
    if (!integers(packetId)) return this.refuse('incoming QoS 2 id', clientId);
    const c = this.changesOf(clientId);
    // Without a wipe a release must reach the disk even if its hold is still pending: the id may
    // have been stored by an earlier commit (a duplicate PUBLISH holds it again). Insert-or-ignore
    // and delete make either order of events correct without knowing what is on disk.
    if (!held && c.wipe) c.qos2.delete(packetId);
    else c.qos2.set(packetId, held);
    this.settle(clientId, c);
  }

  hasPending(): boolean {
    return this.pending.size > 0;
  }

  write(): void {
    const s = this.stmts;
    if (s === undefined) return;
    let rows = 0;
    let statements = 0;
    const run = (stmt: Statements['deleteMessage'], ...params: unknown[]): void => {
      statements++;
      rows += stmt.run(...params).changes;
    };
    for (const [clientId, c] of this.pending) {
      if (c.wipe) for (const del of s.wipe) run(del, clientId);
      if (c.session !== undefined) run(s.upsertSession, clientId, c.session.expiryInterval, c.session.disconnectedAt);
      for (const [filter, sub] of c.subs) {
        if (sub === null) run(s.deleteSubscription, clientId, filter);
        else run(s.upsertSubscription, clientId, filter, sub.qos, sub.options);
      }
      for (const [ord, op] of c.messages) {
        if (op.kind === 'insert') {
          const r = op.row;
          run(s.insertMessage, clientId, ord, r.state, r.packetId, r.qos, r.retain, r.messageQos, r.messageRetain, r.topic, r.properties, r.expiresAt, r.payload);
        } else if (op.kind === 'update') {
          run(s.updateMessage, op.state, op.packetId, clientId, ord);
        } else {
          run(s.deleteMessage, clientId, ord);
        }
      }
      for (const [packetId, held] of c.qos2) run(held ? s.holdQos2 : s.releaseQos2, clientId, packetId);
    }
    this.written = { rows, statements };
  }

  committed(): void {
    const written = this.written;
    if (written === undefined) return;
    // The transaction ran synchronously: nothing was added between write() and now.
    this.pending.clear();
    this.written = undefined;
    this.counters.rowsWritten += written.rows;
    this.counters.statements += written.statements;
  }

  failed(): void {
    this.written = undefined; // everything stays pending; the storage retries
  }

  closed(): void {
    if (this.pending.size > 0) this.storage.logger.error('storage: session changes lost at close', { clients: this.pending.size });
    this.pending.clear();
    this.written = undefined;
    this.stmts = undefined;
  }

  private changesOf(clientId: string): ClientChanges {
    let c = this.pending.get(clientId);
    if (c === undefined) {
      c = freshChanges(false);
      this.pending.set(clientId, c);
    }
    return c;
  }

  /** After a change that may have cancelled out: nothing left to write means no commit at all. */
  private settle(clientId: string, c: ClientChanges): void {
    if (isEmpty(c)) this.pending.delete(clientId);
    else this.storage.schedule();
  }

  private refuse(what: string, clientId: string): void {
    this.counters.invalid++;
    this.invalidLog.emit('storage: session change refused: a value cannot be stored', { what, clientId, invalid: this.counters.invalid });
  }
}
