import { errorMessage, RateLimitedLog, type Message, type QoS, type RetainedStore } from '../../gateway/broker';
import type { SqliteDatabase } from './database';
import { decodeProperties, encodeProperties, type Properties } from './properties-json';
import type { SqliteStorage, StoragePart } from './storage';

/**
 * The retained table has no column for the absolute expiry of an MQTT 5 message (Message Expiry
 * Interval): it travels in the properties JSON under this key, which is the name of no MQTT
 * property. One optional number did not seem worth a schema migration.
 */
const EXPIRES_AT = 'expiresAt';

type StoredProperties = Properties & { [EXPIRES_AT]?: number };

/** A retained message as the row stores it, checked before it is queued for the commit. */
interface EncodedRow {
  readonly qos: number;
  readonly properties: string | null;
  readonly payload: Buffer;
}

function encodeRow(msg: Message): EncodedRow {
  if (!Buffer.isBuffer(msg.payload)) throw new Error('payload is not a Buffer');
  if (msg.qos !== 0 && msg.qos !== 1 && msg.qos !== 2) throw new Error(`invalid QoS ${String(msg.qos)}`);
  const properties: StoredProperties | undefined = msg.expiresAt === undefined ? msg.properties : { ...msg.properties, [EXPIRES_AT]: msg.expiresAt };
  return { qos: msg.qos, properties: properties === undefined ? null : encodeProperties(properties), payload: msg.payload };
}

/** The properties and expiry of a stored row. */
function decodeRow(text: string | null): Pick<Message, 'properties' | 'expiresAt'> {
  if (text === null) return {};
  const { [EXPIRES_AT]: expiresAt, ...properties } = decodeProperties(text) as StoredProperties;
  return {
    ...(Object.keys(properties).length === 0 ? {} : { properties }),
    ...(typeof expiresAt === 'number' ? { expiresAt } : {}),
  };
}

interface Row {
  topic: string;
  qos: number;
  properties: string | null;
  payload: Buffer;
}

/**
 * Retained messages in SQLite, a part of the gateway's `SqliteStorage`. Changes are kept per topic
 * (the last one wins: a sensor updating its retained value ten times within a flush costs one row
 * write) and written in the storage's group commit — nothing at all while nothing changes
 * (DESIGN.md convention 10). A failed commit (disk full, read-only file system) leaves the changes
 * pending and the storage tries again, so nothing accepted is forgotten while the process lives.
 */
export class SqliteRetainedStore implements RetainedStore, StoragePart {
  private upsert: ((topic: string, row: EncodedRow) => void) | undefined;
  private remove: ((topic: string) => void) | undefined;
  private selectAll: (() => Row[]) | undefined;
  private readonly pending = new Map<string, EncodedRow | null>();
  private readonly refusedLog: RateLimitedLog;
  readonly counters = { rowsWritten: 0, refused: 0 };

  constructor(private readonly storage: SqliteStorage) {
    this.refusedLog = new RateLimitedLog((msg, fields) => storage.logger.error(msg, fields));
    storage.attach(this);
  }

  opened(db: SqliteDatabase): void {
    const upsert = db.prepare('INSERT INTO retained (topic, qos, properties, payload) VALUES (?, ?, ?, ?) ON CONFLICT(topic) DO UPDATE SET qos = excluded.qos, properties = excluded.properties, payload = excluded.payload');
    const remove = db.prepare('DELETE FROM retained WHERE topic = ?');
    const all = db.prepare('SELECT topic, qos, properties, payload FROM retained');
    this.upsert = (topic, row) => upsert.run(topic, row.qos, row.properties, row.payload);
    this.remove = (topic) => remove.run(topic);
    this.selectAll = () => all.all() as Row[];
  }

  load(): Message[] {
    if (this.selectAll === undefined) return [];
    return this.selectAll().map((row) => ({
      topic: row.topic,
      payload: row.payload,
      qos: row.qos as QoS,
      retain: true,
      ...decodeRow(row.properties),
    }));
  }

  save(topic: string, message: Message | null): void {
    if (this.upsert === undefined) return;
    let row: EncodedRow | null = null;
    if (message !== null) {
      // Encoded and checked here, not in write(): a value SQLite refuses would otherwise fail
      // this commit and every retry, holding up everything else the storage writes.
      try {
        row = encodeRow(message);
      } catch (err) {
        this.counters.refused++;
        this.refusedLog.emit('storage: retained message cannot be stored; kept in memory only', { topic, error: errorMessage(err), refused: this.counters.refused });
        return;
      }
    }
    this.pending.set(topic, row);
    this.storage.schedule();
  }

  hasPending(): boolean {
    return this.pending.size > 0;
  }

  write(): void {
    for (const [topic, row] of this.pending) {
      if (row === null) this.remove?.(topic);
      else this.upsert?.(topic, row);
    }
  }

  committed(): void {
    // The transaction ran synchronously: what is pending now is exactly what it wrote.
    this.counters.rowsWritten += this.pending.size;
    this.pending.clear();
  }

  failed(): void {
    // kept pending; the storage retries
  }

  closed(): void {
    if (this.pending.size > 0) this.storage.logger.error('storage: retained changes lost at close', { pending: this.pending.size });
    this.pending.clear();
    this.upsert = undefined;
    this.remove = undefined;
    this.selectAll = undefined;
  }
}
