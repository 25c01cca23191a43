import {
  errorMessage,
  OutboxError,
  RateLimitedLog,
  outboxEntryBytes,
  silentLogger,
  type Logger,
  type Outbox,
  type OutboxEntry,
  type OutboxInput,
  type OutboxLimits,
  type OutboxStats,
} from '../../gateway/broker';
import { describeStorageError, openDatabase, type SqliteDatabase, type SyncMode } from './database';

export interface SqliteOutboxOptions {
  readonly path: string;
  readonly sync: SyncMode;
  /** Group-commit window in ms; 0 commits each append in its own transaction. */
  readonly flushInterval: number;
  readonly limits: OutboxLimits;
  readonly logger?: Logger;
  /** For the name of a file moved aside; tests pin it. */
  readonly now?: () => Date;
  /** How long a commit waits for a lock held by another process; default 2000 ms. */
  readonly busyTimeoutMs?: number;
}

interface Pending {
  readonly input: OutboxInput;
  readonly seq: number;
  readonly bytes: number;
}

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

interface Row {
  seq: number;
  qos: number;
  retain: number;
  arrived_at: number;
  source: string;
  topic: string;
  payload: Buffer;
}

/** What one commit changed; applied to the counters only once the transaction committed. */
interface CommitDelta {
  inserted: number;
  insertedBytes: number;
  acked: number;
  ackedBytes: number;
  evicted: number;
  evictedBytes: number;
}

type Statements = ReturnType<typeof prepare>;

function prepare(db: SqliteDatabase) {
  return {
    insert: db.prepare('INSERT INTO outbox (seq, bytes, qos, retain, arrived_at, source, topic, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
    read: db.prepare('SELECT seq, qos, retain, arrived_at, source, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?'),
    sumUpTo: db.prepare('SELECT count(*) AS n, coalesce(sum(bytes), 0) AS b FROM outbox WHERE seq <= ?'),
    deleteUpTo: db.prepare('DELETE FROM outbox WHERE seq <= ?'),
    oldest: db.prepare('SELECT seq, bytes FROM outbox ORDER BY seq'),
  };
}

/**
 * The outbox port on SQLite (issue 4). Group commit: appends and acks are buffered and written in
 * ONE transaction per `flushInterval` (convention 10: an SD card wears per write, not per
 * message); the timer only runs while something is pending, so an idle gateway writes nothing.
 * An `append` resolves after the commit that contains it, so "resolved" means "survives kill -9"
 * (and a power cut with sync: full).
 *
 * Bounds: `drop-new` is decided at append time against stored + pending entries; `drop-oldest`
 * deletes the oldest rows inside the commit that would exceed a bound, so after every commit the
 * table is within both bounds. A failed commit (disk full, read-only file system) is logged at a
 * bounded rate, rejects the appends it contained (counted in `failed`), rolls back, and the next
 * commit tries again: the process never crashes on a storage error.
 */
export class SqliteOutbox implements Outbox {
  private state: 'new' | 'open' | 'closed' = 'new';
  private db: SqliteDatabase | undefined;
  private stmts: Statements | undefined;
  private commitTx: ((batch: Pending[], ackUpTo: number) => CommitDelta) | undefined;
  private pending: Pending[] = [];
  private pendingBytes = 0;
  private appendWaiters: Waiter[] = [];
  private ackUpTo = 0;
  private ackWaiters: Waiter[] = [];
  private timer: NodeJS.Timeout | undefined;
  private size = 0;
  private bytes = 0;
  private lastSeq = 0;
  private readonly counters = { appended: 0, acknowledged: 0, droppedOldest: 0, droppedNew: 0, failed: 0, commits: 0 };
  private readonly logger: Logger;
  private readonly dropLog: RateLimitedLog;
  private readonly failLog: RateLimitedLog;

  /** No side effects: no file is touched until open(). */
  constructor(private readonly options: SqliteOutboxOptions) {
    this.logger = options.logger ?? silentLogger;
    this.dropLog = new RateLimitedLog((msg, fields) => this.logger.warn(msg, fields));
    this.failLog = new RateLimitedLog((msg, fields) => this.logger.error(msg, fields));
  }

  /** Opens (or creates) the database; rejects with EDGEWAY_ERR_OUTBOX_OPEN, logged. Idempotent. */
  async open(): Promise<void> {
    if (this.state === 'open') return;
    let size = 0;
    let bytes = 0;
    let lastSeq = 0;
    try {
      const { db } = openDatabase({
        path: this.options.path,
        sync: this.options.sync,
        logger: this.logger,
        now: this.options.now,
        busyTimeoutMs: this.options.busyTimeoutMs,
        verify: (db) => {
          // A full scan of the row headers: the bounds need exact numbers (and corruption found
          // here moves the file aside like a bad header does).
          const totals = db.prepare('SELECT count(*) AS n, coalesce(sum(bytes), 0) AS b, coalesce(max(seq), 0) AS m FROM outbox').get() as { n: number; b: number; m: number };
          const sequence = db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").pluck().get() as number | undefined;
          size = totals.n;
          bytes = totals.b;
          lastSeq = Math.max(totals.m, sequence ?? 0);
        },
      });
      this.db = db;
    } catch (err) {
      this.logger.error('storage: cannot open the outbox', { path: this.options.path, error: errorMessage(err) });
      throw err;
    }
    this.stmts = prepare(this.db);
    this.commitTx = this.db.transaction((batch: Pending[], ackUpTo: number) => this.write(batch, ackUpTo));
    this.size = size;
    this.bytes = bytes;
    this.lastSeq = lastSeq;
    this.state = 'open';
    this.logger.info('storage: outbox open', { path: this.options.path, sync: this.options.sync, messages: size, bytes, lastSeq });
  }

  /**
   * Commits what is pending, then closes the database (SQLite checkpoints the WAL on close). The
   * final commit waits for a lock at most `timeoutMs`; whatever could not be committed rejects.
   */
  async close(timeoutMs = 2000): Promise<void> {
    if (this.state !== 'open' || this.db === undefined) {
      this.state = 'closed';
      return;
    }
    const db = this.db;
    this.cancelTimer();
    try {
      db.pragma(`busy_timeout = ${Math.max(0, Math.floor(timeoutMs))}`);
    } catch {
      // closing anyway
    }
    this.flush();
    this.state = 'closed';
    this.rejectAll(new OutboxError('EDGEWAY_ERR_OUTBOX_CLOSED', 'the outbox was closed before this commit'));
    try {
      db.close();
    } catch (err) {
      this.logger.error('storage: error while closing the database', { error: describeStorageError(err) });
    }
    this.db = undefined;
    this.stmts = undefined;
    this.commitTx = undefined;
  }

  append(entries: readonly OutboxInput[]): Promise<(number | null)[]> {
    if (this.state !== 'open') return Promise.reject(new OutboxError('EDGEWAY_ERR_OUTBOX_CLOSED', 'the outbox is not open'));
    const { maxMessages, maxBytes, whenFull } = this.options.limits;
    const result: (number | null)[] = [];
    let refused = 0;
    for (const input of entries) {
      const bytes = outboxEntryBytes(input);
      const full = this.size + this.pending.length >= maxMessages || this.bytes + this.pendingBytes + bytes > maxBytes;
      if (bytes > maxBytes || (whenFull === 'drop-new' && full)) {
        refused++;
        result.push(null);
        continue;
      }
      const seq = ++this.lastSeq;
      this.pending.push({ input, seq, bytes });
      this.pendingBytes += bytes;
      result.push(seq);
    }
    if (refused > 0) this.countDrops(0, refused);
    if (refused === entries.length) return Promise.resolve(result);
    return new Promise<void>((resolve, reject) => {
      this.appendWaiters.push({ resolve, reject });
      this.schedule();
    }).then(() => result);
  }

  read(after: number, limit: number): OutboxEntry[] {
    if (this.stmts === undefined) throw new OutboxError('EDGEWAY_ERR_OUTBOX_CLOSED', 'the outbox is not open');
    if (limit <= 0) return [];
    const rows = this.stmts.read.all(after, Math.floor(limit)) as Row[];
    return rows.map((r) => ({
      seq: r.seq,
      topic: r.topic,
      payload: r.payload,
      qos: r.qos as 0 | 1 | 2,
      retain: r.retain === 1,
      arrivedAt: r.arrived_at,
      source: r.source,
    }));
  }

  ack(upTo: number): Promise<void> {
    if (this.state !== 'open') return Promise.reject(new OutboxError('EDGEWAY_ERR_OUTBOX_CLOSED', 'the outbox is not open'));
    this.ackUpTo = Math.max(this.ackUpTo, upTo);
    return new Promise<void>((resolve, reject) => {
      this.ackWaiters.push({ resolve, reject });
      this.schedule();
    });
  }

  stats(): OutboxStats {
    return { size: this.size, bytes: this.bytes, pending: this.pending.length, lastSeq: this.lastSeq, ...this.counters };
  }

  private schedule(): void {
    if (this.options.flushInterval === 0) {
      this.flush();
      return;
    }
    // One timer per window, armed by the first change: nothing runs (or writes) while idle.
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, this.options.flushInterval);
  }

  private cancelTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** One transaction for everything pending. Never throws: a failure rejects the waiters. */
  private flush(): void {
    this.cancelTimer();
    if (this.commitTx === undefined || (this.pending.length === 0 && this.ackWaiters.length === 0)) return;
    const batch = this.pending;
    const appendWaiters = this.appendWaiters;
    const ackUpTo = this.ackUpTo;
    const ackWaiters = this.ackWaiters;
    this.pending = [];
    this.pendingBytes = 0;
    this.appendWaiters = [];
    this.ackUpTo = 0;
    this.ackWaiters = [];
    let delta: CommitDelta;
    try {
      delta = this.commitTx(batch, ackUpTo);
    } catch (err) {
      this.counters.failed += batch.length;
      const reason = describeStorageError(err);
      this.failLog.emit('storage: outbox commit failed, messages not stored', { path: this.options.path, error: reason, messages: batch.length });
      const error = new OutboxError('EDGEWAY_ERR_OUTBOX_WRITE', `outbox commit failed: ${reason}`, { cause: err });
      for (const w of appendWaiters) w.reject(error);
      for (const w of ackWaiters) w.reject(error);
      return;
    }
    this.counters.commits++;
    this.counters.appended += batch.length;
    this.counters.acknowledged += delta.acked;
    this.size += delta.inserted - delta.acked - delta.evicted;
    this.bytes += delta.insertedBytes - delta.ackedBytes - delta.evictedBytes;
    const trimmed = batch.length - delta.inserted;
    if (trimmed + delta.evicted > 0) this.countDrops(trimmed + delta.evicted, 0);
    for (const w of appendWaiters) w.resolve();
    for (const w of ackWaiters) w.resolve();
  }

  /** Inside the transaction: insert, apply the ack, then evict the oldest rows beyond a bound. */
  private write(batch: Pending[], ackUpTo: number): CommitDelta {
    const stmts = this.stmts as Statements;
    const { maxMessages, maxBytes } = this.options.limits;
    const delta: CommitDelta = { inserted: 0, insertedBytes: 0, acked: 0, ackedBytes: 0, evicted: 0, evictedBytes: 0 };
    // drop-oldest within the batch itself: never insert rows only to delete them in the same commit.
    let start = 0;
    let batchBytes = 0;
    for (const p of batch) batchBytes += p.bytes;
    while (batch.length - start > maxMessages || batchBytes > maxBytes) batchBytes -= (batch[start++] as Pending).bytes;
    for (let i = start; i < batch.length; i++) {
      const { input, seq, bytes } = batch[i] as Pending;
      stmts.insert.run(seq, bytes, input.qos, input.retain ? 1 : 0, input.arrivedAt, input.source, input.topic, input.payload);
      delta.inserted++;
      delta.insertedBytes += bytes;
    }
    if (ackUpTo > 0) {
      const gone = stmts.sumUpTo.get(ackUpTo) as { n: number; b: number };
      if (gone.n > 0) {
        stmts.deleteUpTo.run(ackUpTo);
        delta.acked = gone.n;
        delta.ackedBytes = gone.b;
      }
    }
    let count = this.size + delta.inserted - delta.acked;
    let bytes = this.bytes + delta.insertedBytes - delta.ackedBytes;
    if (count > maxMessages || bytes > maxBytes) {
      let lastEvicted = 0;
      for (const row of stmts.oldest.iterate() as IterableIterator<{ seq: number; bytes: number }>) {
        count--;
        bytes -= row.bytes;
        delta.evicted++;
        delta.evictedBytes += row.bytes;
        lastEvicted = row.seq;
        if (count <= maxMessages && bytes <= maxBytes) break;
      }
      stmts.deleteUpTo.run(lastEvicted);
    }
    return delta;
  }

  private countDrops(oldest: number, refused: number): void {
    this.counters.droppedOldest += oldest;
    this.counters.droppedNew += refused;
    const { maxMessages, maxBytes, whenFull } = this.options.limits;
    this.dropLog.emit('storage: outbox full, messages dropped', { policy: whenFull, droppedOldest: oldest, droppedNew: refused, maxMessages, maxBytes });
  }

  private rejectAll(err: Error): void {
    const waiters = [...this.appendWaiters, ...this.ackWaiters];
    this.pending = [];
    this.pendingBytes = 0;
    this.appendWaiters = [];
    this.ackWaiters = [];
    this.ackUpTo = 0;
    for (const w of waiters) w.reject(err);
  }
}
