import { RateLimitedLog, silentLogger, type Logger, type Message, type QoS, type RetainedStore } from '../../gateway/broker';
import { describeStorageError, openDatabase, type SqliteDatabase, type SyncMode } from './database';

export interface SqliteRetainedStoreOptions {
  readonly path: string;
  readonly sync: SyncMode;
  /** ms; changes within it are written in one transaction. 0 = one transaction per change. */
  readonly flushInterval: number;
  readonly logger?: Logger;
}

interface Row {
  topic: string;
  qos: number;
  properties: string | null;
  payload: Buffer;
}

/**
 * Retained messages in SQLite. Changes are kept per topic (the last one wins: a sensor updating
 * its retained value ten times within a flush costs one row write) and written in one
 * transaction per flushInterval — nothing at all while nothing changes (DESIGN.md convention 10).
 * A failed commit (disk full, read-only file system) is logged at a bounded rate and counted; the
 * changes stay pending and the next flush tries again, so nothing accepted is forgotten while the
 * process lives.
 */
export class SqliteRetainedStore implements RetainedStore {
  private db: SqliteDatabase | undefined;
  private writeTx: ((changes: [string, Message | null][]) => void) | undefined;
  private readonly pending = new Map<string, Message | null>();
  private timer: NodeJS.Timeout | undefined;
  private readonly logger: Logger;
  private readonly failLog: RateLimitedLog;
  readonly counters = { commits: 0, rowsWritten: 0, failedCommits: 0 };

  /** No side effects: no file is touched until open(). */
  constructor(private readonly options: SqliteRetainedStoreOptions) {
    this.logger = options.logger ?? silentLogger;
    this.failLog = new RateLimitedLog((msg, fields) => this.logger.error(msg, fields));
  }

  /** Opens (or creates) the database; throws (after logging) when it cannot. Idempotent. */
  open(): void {
    if (this.db !== undefined) return;
    const { db } = openDatabase({ path: this.options.path, sync: this.options.sync, logger: this.logger });
    const upsert = db.prepare('INSERT INTO retained (topic, qos, properties, payload) VALUES (?, ?, ?, ?) ON CONFLICT(topic) DO UPDATE SET qos = excluded.qos, properties = excluded.properties, payload = excluded.payload');
    const remove = db.prepare('DELETE FROM retained WHERE topic = ?');
    this.writeTx = db.transaction((changes: [string, Message | null][]) => {
      for (const [topic, msg] of changes) {
        if (msg === null) remove.run(topic);
        else upsert.run(topic, msg.qos, msg.properties === undefined ? null : JSON.stringify(msg.properties), msg.payload);
      }
    });
    this.db = db;
  }

  load(): Message[] {
    if (this.db === undefined) return [];
    const rows = this.db.prepare('SELECT topic, qos, properties, payload FROM retained').all() as Row[];
    return rows.map((row) => ({
      topic: row.topic,
      payload: row.payload,
      qos: row.qos as QoS,
      retain: true,
      ...(row.properties === null ? {} : { properties: JSON.parse(row.properties) as Message['properties'] }),
    }));
  }

  save(topic: string, message: Message | null): void {
    if (this.db === undefined) return;
    this.pending.set(topic, message);
    if (this.timer === undefined) this.timer = setTimeout(() => this.flush(), this.options.flushInterval);
  }

  /** Writes the pending changes in one transaction; on failure they stay pending for the next try. */
  flush(): void {
    this.timer = undefined;
    if (this.pending.size === 0 || this.writeTx === undefined) return;
    const changes = [...this.pending];
    try {
      this.writeTx(changes);
    } catch (err) {
      this.counters.failedCommits++;
      this.failLog.emit('storage: retained messages not saved; retrying', { path: this.options.path, pending: this.pending.size, error: describeStorageError(err) });
      // Bounded retry: the pending map holds at most one entry per retained topic (≤ maxRetained).
      this.timer = setTimeout(() => this.flush(), Math.max(this.options.flushInterval, 1000));
      return;
    }
    this.pending.clear(); // the transaction ran synchronously: nothing was added meanwhile
    this.counters.commits++;
    this.counters.rowsWritten += changes.length;
  }

  /** Writes what is pending and closes the database. Idempotent. */
  close(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.flush();
    if (this.timer !== undefined) clearTimeout(this.timer); // a failed flush re-armed it
    this.timer = undefined;
    if (this.pending.size > 0) this.logger.error('storage: retained changes lost at close', { pending: this.pending.size });
    this.db?.close();
    this.db = undefined;
    this.writeTx = undefined;
  }
}
