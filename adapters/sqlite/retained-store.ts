import type { Message, QoS, RetainedStore } from '../../gateway/broker';
import type { SqliteDatabase } from './database';
import { decodeProperties, encodeProperties } from './properties-json';
import type { SqliteStorage, StoragePart } from './storage';

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
  private upsert: ((topic: string, msg: Message) => void) | undefined;
  private remove: ((topic: string) => void) | undefined;
  private selectAll: (() => Row[]) | undefined;
  private readonly pending = new Map<string, Message | null>();
  private written = 0;
  readonly counters = { rowsWritten: 0 };

  constructor(private readonly storage: SqliteStorage) {
    storage.attach(this);
  }

  opened(db: SqliteDatabase): void {
    const upsert = db.prepare('INSERT INTO retained (topic, qos, properties, payload) VALUES (?, ?, ?, ?) ON CONFLICT(topic) DO UPDATE SET qos = excluded.qos, properties = excluded.properties, payload = excluded.payload');
    const remove = db.prepare('DELETE FROM retained WHERE topic = ?');
    const all = db.prepare('SELECT topic, qos, properties, payload FROM retained');
    this.upsert = (topic, msg) => upsert.run(topic, msg.qos, msg.properties === undefined ? null : encodeProperties(msg.properties), msg.payload);
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
      ...(row.properties === null ? {} : { properties: decodeProperties(row.properties) }),
    }));
  }

  save(topic: string, message: Message | null): void {
    if (this.upsert === undefined) return;
    this.pending.set(topic, message);
    this.storage.schedule();
  }

  hasPending(): boolean {
    return this.pending.size > 0;
  }

  write(): void {
    for (const [topic, msg] of this.pending) {
      if (msg === null) this.remove?.(topic);
      else this.upsert?.(topic, msg);
    }
    this.written = this.pending.size;
  }

  committed(): void {
    if (this.written === 0) return;
    // The transaction ran synchronously: nothing was added between write() and now.
    this.pending.clear();
    this.counters.rowsWritten += this.written;
    this.written = 0;
  }

  failed(): void {
    this.written = 0; // kept pending; the storage retries
  }

  closed(): void {
    if (this.pending.size > 0) this.storage.logger.error('storage: retained changes lost at close', { pending: this.pending.size });
    this.pending.clear();
    this.upsert = undefined;
    this.remove = undefined;
    this.selectAll = undefined;
  }
}
