import { isProblem, keptProperties } from './incoming';
import type { PublishProperties, QoS } from './types';

/**
 * The outbox port (issue 4): the one queue between the broker and the uplink (DESIGN.md
 * convention 11). An ordered, persistent, bounded queue; the core owns this interface, adapters
 * implement it (adapters/sqlite on disk, MemoryOutbox here for tests and storage-less runs).
 *
 * How the uplink (issue 5) is meant to drain it, in order, without loss or duplicates:
 *
 *   let cursor = 0;                               // nothing read yet in this process
 *   for (;;) {
 *     const batch = outbox.read(cursor, 500);     // durable entries with seq > cursor, ascending
 *                                                 // ({ pending: true }: and appended ones, see ReadOptions)
 *     if (batch.length === 0) { wait for outbox.stats().lastSeq to move; continue; }
 *     await redis XADD … with explicit stream id `${entry.seq}-0` per entry;   // idempotent
 *     cursor = batch[batch.length - 1].seq;
 *     void outbox.ack(cursor);                    // delete only after Redis confirmed
 *   }
 *
 * `seq` is strictly increasing per gateway and survives restarts (it never restarts at 1 after
 * the queue was emptied), so it can be the explicit Redis stream id: a batch re-sent after a crash
 * between Redis' reply and the ack's commit is refused by Redis as "ID not greater than the last"
 * instead of being stored twice. Entries can be missing between two seqs (dropped by the bound,
 * refused, or lost by a failed commit); a reader must not expect seqs to be contiguous.
 */

/**
 * `pending`: also return entries appended but not yet committed, after the durable ones. A reader
 * that delivers them somewhere durable (the Redis uplink) and acknowledges them before their
 * commit saves writing them at all. Their seqs are final — an implementation hands out only seqs
 * it has reserved durably, so a seq read here is never given to another message, even after a
 * crash before the commit (which loses the entry as it would have anyway: its append had not
 * resolved). An implementation may return fewer pending entries than there are (those beyond
 * its reservation), and then calls the `watch` listeners once more are readable.
 */
export interface ReadOptions {
  readonly pending?: boolean;
}

/**
 * An entry as `scanRaw` hands it over. ONE object is reused for every entry: copy the numbers you
 * keep. `data` is the outbox's own memory and must not be changed; its bytes stay as they are
 * after the call (a reader may decode a range later). Topic and source
 * are UTF-8 bytes `data[topicStart, topicEnd)` and `data[sourceStart, sourceEnd)`, the payload
 * `data[payloadStart, payloadEnd)`. The uplink copies them straight into its batch: decoding
 * entries into objects, strings and payload views cost it more than everything else it does.
 */
export interface RawEntry {
  seq: number;
  qos: QoS;
  retain: boolean;
  arrivedAt: number;
  data: Uint8Array;
  topicStart: number;
  topicEnd: number;
  sourceStart: number;
  sourceEnd: number;
  payloadStart: number;
  payloadEnd: number;
  /** outboxPropertiesJson's UTF-8 bytes; an empty range when the message had none. */
  propertiesStart: number;
  propertiesEnd: number;
}

/** A fresh RawEntry to be filled in (implementations keep one). */
export function emptyRawEntry(): RawEntry {
  return { seq: 0, qos: 0, retain: false, arrivedAt: 0, data: new Uint8Array(0), topicStart: 0, topicEnd: 0, sourceStart: 0, sourceEnd: 0, payloadStart: 0, payloadEnd: 0, propertiesStart: 0, propertiesEnd: 0 };
}

/**
 * A decoded entry as a RawEntry over bytes of its own (topic, source, payload, properties), for
 * code that holds entries rather than an outbox's raw blocks (the memory outbox, tests).
 */
export function rawEntryOf(entry: OutboxEntry, raw: RawEntry = emptyRawEntry()): RawEntry {
  const topic = Buffer.from(entry.topic);
  const source = Buffer.from(entry.source);
  const properties = Buffer.from(outboxPropertiesJson(entry.properties) ?? '');
  raw.data = Buffer.concat([topic, source, entry.payload, properties]);
  raw.seq = entry.seq;
  raw.qos = entry.qos;
  raw.retain = entry.retain;
  raw.arrivedAt = entry.arrivedAt;
  raw.topicStart = 0;
  raw.topicEnd = topic.length;
  raw.sourceStart = topic.length;
  raw.sourceEnd = topic.length + source.length;
  raw.payloadStart = raw.sourceEnd;
  raw.payloadEnd = raw.payloadStart + entry.payload.length;
  raw.propertiesStart = raw.payloadEnd;
  raw.propertiesEnd = raw.data.length;
  return raw;
}

/**
 * The MQTT 5 properties of an outbox entry as JSON text, or undefined when there is nothing to
 * keep: how the outbox stores them and — byte for byte — the `properties` field of the Redis
 * uplink's stream entry (a public contract, README). Only what describes the message itself:
 * payloadFormatIndicator, messageExpiryInterval (as published), contentType, responseTopic,
 * correlationData (base64), userProperties ({name: value, or [values] when repeated}). Topic
 * aliases and subscription identifiers belong to one connection and are not kept.
 */
export function outboxPropertiesJson(properties: PublishProperties | undefined): string | undefined {
  const kept = outboxProperties(properties);
  return kept === undefined ? undefined : JSON.stringify(kept);
}

/** outboxPropertiesJson's object before it becomes text (cluster frames embed it in their own JSON). */
export function outboxProperties(properties: PublishProperties | undefined): Record<string, unknown> | undefined {
  if (properties === undefined) return undefined;
  const kept: Record<string, unknown> = {};
  if (properties.payloadFormatIndicator !== undefined) kept['payloadFormatIndicator'] = properties.payloadFormatIndicator;
  if (properties.messageExpiryInterval !== undefined) kept['messageExpiryInterval'] = properties.messageExpiryInterval;
  if (properties.contentType !== undefined) kept['contentType'] = properties.contentType;
  if (properties.responseTopic !== undefined) kept['responseTopic'] = properties.responseTopic;
  if (properties.correlationData !== undefined) kept['correlationData'] = Buffer.from(properties.correlationData).toString('base64');
  if (properties.userProperties !== undefined) kept['userProperties'] = properties.userProperties;
  return Object.keys(kept).length === 0 ? undefined : kept;
}

/** outboxPropertiesJson read back (correlationData as a Buffer again). */
export function parseOutboxProperties(json: string): PublishProperties {
  const parsed = JSON.parse(json) as Record<string, unknown>;
  if (typeof parsed['correlationData'] === 'string') parsed['correlationData'] = Buffer.from(parsed['correlationData'], 'base64');
  return parsed as PublishProperties;
}

/** MQTT's limit for a UTF-8 string and for binary data (sections 1.5.4 and 1.5.6). */
const MAX_MQTT_STRING_BYTES = 65_535;
/** The Message Expiry Interval is a four byte integer (section 3.3.2.3.3). */
const MAX_EXPIRY_INTERVAL = 0xffff_ffff;

/**
 * outboxProperties' object read back when it came from outside this process (another gateway of a
 * cluster, through Redis), where nothing guarantees its shape: properties only if every one is what
 * an MQTT 5 PUBLISH could carry — the types, MQTT's strings (well-formed UTF-8 without U+0000
 * [MQTT-1.5.4-1] [MQTT-1.5.4-2], 65,535 bytes at most) — and passes the broker's own checks of a
 * PUBLISH (keptProperties); otherwise why not. Names it does not know are left out: a newer sender
 * may add some, and what belongs to one connection (topic alias, subscription identifiers) must
 * never be taken from a message that travelled.
 */
export function checkedOutboxProperties(value: unknown, payload: Buffer): { readonly properties: PublishProperties | undefined } | { readonly problem: string } {
  if (!isPlainObject(value)) return { problem: 'properties: not an object' };
  const read: Record<string, unknown> = {};
  const pfi = value['payloadFormatIndicator'];
  if (pfi !== undefined) {
    if (typeof pfi !== 'boolean') return { problem: 'payloadFormatIndicator: not a boolean' };
    read['payloadFormatIndicator'] = pfi;
  }
  const expiry = value['messageExpiryInterval'];
  if (expiry !== undefined) {
    if (!Number.isInteger(expiry) || (expiry as number) < 0 || (expiry as number) > MAX_EXPIRY_INTERVAL) return { problem: 'messageExpiryInterval: not an integer from 0 to 2^32-1' };
    read['messageExpiryInterval'] = expiry;
  }
  for (const name of ['contentType', 'responseTopic'] as const) {
    const text = value[name];
    if (text === undefined) continue;
    if (!isMqttString(text)) return { problem: `${name}: not an MQTT string` };
    read[name] = text;
  }
  const correlation = value['correlationData'];
  if (correlation !== undefined) {
    const bytes = typeof correlation === 'string' ? Buffer.from(correlation, 'base64') : null;
    // Buffer.from skips what is not base64; reading it back whole is the only test it passes.
    if (bytes === null || bytes.toString('base64') !== correlation || bytes.length > MAX_MQTT_STRING_BYTES) return { problem: 'correlationData: not base64 of at most 65,535 bytes' };
    read['correlationData'] = bytes;
  }
  const user = value['userProperties'];
  if (user !== undefined) {
    if (!isPlainObject(user)) return { problem: 'userProperties: not an object' };
    for (const [name, values] of Object.entries(user)) {
      const valid = isMqttString(name) && (Array.isArray(values) ? values.length > 0 && values.every(isMqttString) : isMqttString(values));
      if (!valid) return { problem: `userProperties: ${JSON.stringify(name).slice(0, 80)} is not a name with a string or a list of strings` };
    }
    read['userProperties'] = user;
  }
  const properties = Object.keys(read).length === 0 ? undefined : (read as PublishProperties);
  const kept = keptProperties(payload, properties);
  return isProblem(kept) ? { problem: kept.detail } : { properties: kept };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isMqttString(value: unknown): value is string {
  if (typeof value !== 'string' || value.includes('\u0000')) return false;
  const bytes = Buffer.from(value);
  // A lone surrogate has no UTF-8 form: Buffer.from writes U+FFFD instead, which reads back different.
  return bytes.length <= MAX_MQTT_STRING_BYTES && bytes.toString() === value;
}

/** What a producer hands to `append`. */
export interface OutboxInput {
  readonly topic: string;
  readonly payload: Buffer;
  readonly qos: QoS;
  readonly retain: boolean;
  /**
   * When the message reached the gateway, in ms since the epoch. Taken at arrival, not at commit
   * or upload: data buffered for days keeps its real time (a Pi without RTC should set its clock by
   * NTP before this means much, but the order never depends on it — `seq` gives the order).
   */
  readonly arrivedAt: number;
  /** Who published it: an MQTT client id, or `serial:<port name>` for the serial bridge. */
  readonly source: string;
  /** MQTT 5 properties the message carried (see outboxPropertiesJson for what is kept). */
  readonly properties?: PublishProperties | undefined;
}

/** A stored entry: the input plus its sequence number. */
export interface OutboxEntry extends OutboxInput {
  /** Strictly increasing per gateway, never reused, ≥ 1; a safe integer. */
  readonly seq: number;
}

export type OutboxFullPolicy = 'drop-oldest' | 'drop-new';

/** Bounds of the outbox (config `storage.outbox`, DESIGN.md convention 6). */
export interface OutboxLimits {
  readonly maxMessages: number;
  /** Bound on the sum of `outboxEntryBytes` of the stored entries. */
  readonly maxBytes: number;
  /**
   * At a bound: `drop-oldest` deletes the oldest entries to make room (a sensor's latest values
   * matter most); `drop-new` refuses the new entry. Either way every dropped entry is counted.
   * An entry larger than `maxBytes` on its own is always refused and counted in `droppedNew`.
   */
  readonly whenFull: OutboxFullPolicy;
}

/** Counters since `open()` (the drop counters are not persisted), and the current size. */
export interface OutboxStats {
  /** Entries stored and not acknowledged (committed entries only, for a persistent outbox). */
  readonly size: number;
  /** Their bytes, as counted by `outboxEntryBytes`. */
  readonly bytes: number;
  /** Entries appended and waiting for the next group commit (always 0 in memory). */
  readonly pending: number;
  /** Highest seq ever assigned (persisted); 0 when nothing was ever appended. */
  readonly lastSeq: number;
  /** Entries accepted by `append` since open. */
  readonly appended: number;
  /** Entries deleted by `ack` since open. */
  readonly acknowledged: number;
  /** Of those, entries acknowledged before their commit (read with `pending`): never written at all. */
  readonly neverWritten: number;
  /** Entries deleted to make room (`drop-oldest`). */
  readonly droppedOldest: number;
  /** Entries refused: full under `drop-new`, or larger than `maxBytes`. */
  readonly droppedNew: number;
  /** Commits of entries that failed (disk full, read-only…); the entries stayed pending and were retried. */
  readonly failed: number;
  /** Transactions committed (group commits); what an SD card pays for. */
  readonly commits: number;
}

export interface Outbox {
  /** Opens the storage (files, timers). Idempotent. Rejects with a `StorageError` if it cannot. */
  open(): Promise<void>;
  /**
   * Commits what is pending (bounded by `timeoutMs`), then releases files and timers. Appends still
   * pending after that reject with `EDGEWAY_ERR_STORAGE_CLOSED`. Idempotent.
   */
  close(timeoutMs?: number): Promise<void>;
  /**
   * Appends a batch, in order. Resolves once the batch is durable (after the group commit that
   * contains it), with one result per input: its seq, or `null` if it was refused (`drop-new`, or
   * larger than `maxBytes`). A commit that fails (disk full) is retried and the promise keeps
   * waiting; it rejects with a `StorageError` only if the outbox closes before the batch is stored.
   * A payload may be a view of a larger buffer (the socket chunk it was read from): an
   * implementation that keeps it beyond the call keeps a copy (`detachedPayload`).
   */
  append(entries: readonly OutboxInput[]): Promise<(number | null)[]>;
  /**
   * Appends one entry now — encoded or copied at once, so neither the input nor its payload is
   * kept — and returns its seq, or null when it is refused (as `append` would) or the outbox is
   * not open. It is durable after the next commit: `durable()`. The broker adds each message as it
   * routes it and asks for `durable()` once per turn of the event loop: inputs collected until the
   * end of a turn had all survived the young-generation collections within that turn, so V8 began
   * allocating them in its old generation (pretenuring) — at 50,000 msg/s that cost the gateway
   * more CPU than the outbox itself.
   */
  add(input: OutboxInput): number | null;
  /**
   * Resolves once every entry added so far is durable, with the same guarantees as `append`
   * (failed commits retried; rejects only if the outbox closes first, or is not open).
   */
  durable(): Promise<void>;
  /**
   * Up to `limit` entries with `seq > after`, in ascending seq order: durable ones, and with
   * `pending` also entries appended but not committed yet (see ReadOptions).
   */
  read(after: number, limit: number, options?: ReadOptions): OutboxEntry[];
  /**
   * `read` for a hot path: calls `visit` for each entry in turn, as numbers and byte ranges (no
   * strings, no buffers, no object per entry — see RawEntry), until it returns false or `limit`
   * entries were visited; returns how many were.
   */
  scanRaw(after: number, limit: number, visit: (entry: Readonly<RawEntry>) => boolean, options?: ReadOptions): number;
  /**
   * Deletes every stored entry with `seq <= upTo` (acknowledged by the uplink). Resolves once the
   * deletion is durable. Acknowledging seqs already gone is a no-op.
   */
  ack(upTo: number): Promise<void>;
  stats(): OutboxStats;
  /**
   * Calls `listener` whenever new entries have become readable (appended, for a reader of pending
   * entries, or committed), so a reader can wait instead of polling. Returns the function that
   * removes the listener.
   */
  watch(listener: () => void): () => void;
}

/** The listeners of `Outbox.watch`, for implementations. A listener that throws is skipped, not fatal. */
export class OutboxWatchers {
  private readonly listeners = new Set<() => void>();

  add(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  notify(): void {
    for (const listener of this.listeners) {
      try {
        listener();
      } catch {
        // a reader's bug must not break the writer's commit path
      }
    }
  }
}

/**
 * The size of an entry as the `maxBytes` bound counts it: payload, topic, source and properties bytes. Shared
 * by every implementation so the bound means the same thing whatever the store.
 */
export function outboxEntryBytes(entry: OutboxInput): number {
  const properties = outboxPropertiesJson(entry.properties);
  return entry.payload.length + Buffer.byteLength(entry.topic) + Buffer.byteLength(entry.source) + (properties === undefined ? 0 : Buffer.byteLength(properties));
}

/**
 * A payload decoded from a socket chunk is a view of that whole chunk (up to 64 KiB). Whatever keeps
 * a payload beyond this tick keeps this instead: a copy of just the payload when it is a view of a
 * much larger buffer, so that it does not pin the chunk; the payload itself otherwise.
 */
export function detachedPayload(payload: Buffer): Buffer {
  return payload.buffer.byteLength <= payload.length + 1024 ? payload : Buffer.from(payload);
}
