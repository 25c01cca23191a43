import {
  OutboxWatchers,
  StorageError,
  RateLimitedLog,
  outboxEntryBytes,
  type Outbox,
  type OutboxEntry,
  type OutboxInput,
  type OutboxLimits,
  type OutboxStats,
} from '../../gateway/broker';
import type { SqliteDatabase } from './database';
import type { SqliteStorage, StoragePart } from './storage';

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

const ROW = '(?, ?, ?, ?, ?, ?, ?, ?)';
/**
 * Rows per multi-row INSERT: one statement step for many rows costs a fraction of one per row
 * (binding and stepping dominate an append), and 64 × 8 parameters stay far below SQLite's limit.
 */
const ROWS_PER_INSERT = 64;

function prepare(db: SqliteDatabase) {
  return {
    insert: db.prepare(`INSERT INTO outbox (seq, bytes, qos, retain, arrived_at, source, topic, payload) VALUES ${ROW}`),
    insertMany: db.prepare(`INSERT INTO outbox (seq, bytes, qos, retain, arrived_at, source, topic, payload) VALUES ${Array(ROWS_PER_INSERT).fill(ROW).join(', ')}`),
    read: db.prepare('SELECT seq, qos, retain, arrived_at, source, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?'),
    // One pass: the deleted rows' sizes come back with the delete (the byte bound needs them).
    deleteReturning: db.prepare('DELETE FROM outbox WHERE seq <= ? RETURNING bytes').pluck(),
    deleteUpTo: db.prepare('DELETE FROM outbox WHERE seq <= ?'),
    oldest: db.prepare('SELECT seq, bytes FROM outbox ORDER BY seq'),
  };
}

/**
 * The outbox port on SQLite (issue 4), a part of the gateway's `SqliteStorage`: appends and acks
 * are buffered and written in the storage's group commit, together with every other change of the
 * window. An `append` resolves after the commit that contains it, so "resolved" means "survives
 * kill -9" (and a power cut with sync: full).
 *
 * Bounds: `drop-new` is decided at append time against stored + pending entries; `drop-oldest`
 * deletes the oldest rows inside the commit that would exceed a bound, so after every commit the
 * table is within both bounds. A failed commit (disk full, read-only file system) keeps its
 * entries pending and their appends waiting (counted in `failed`; the storage logs it at a bounded
 * rate and retries): nothing accepted is given up while the process runs, and the pending entries
 * stay within the same bounds (under `drop-oldest` the oldest pending ones make room).
 *
 * `open()` and `close()` open and close the whole storage: an outbox on its own storage (tests,
 * the benchmark) needs nothing else; in the gateway they are idempotent calls on a storage the
 * composition root opened already.
 */
export class SqliteOutbox implements Outbox, StoragePart {
  private stmts: Statements | undefined;
  private closed_ = false;
  private pending: Pending[] = [];
  private pendingBytes = 0;
  private appendWaiters: Waiter[] = [];
  private ackUpTo = 0;
  private ackWaiters: Waiter[] = [];
  /** What the transaction in progress changed, applied by committed() or dropped by failed(). */
  private delta: CommitDelta | undefined;
  private size = 0;
  private bytes = 0;
  private lastSeq = 0;
  private readonly counters = { appended: 0, acknowledged: 0, droppedOldest: 0, droppedNew: 0, failed: 0, commits: 0 };
  private readonly dropLog: RateLimitedLog;
  private readonly watchers = new OutboxWatchers();

  /**
   * `ownsStorage` (default true): `open()` / `close()` open and close the storage itself — an
   * outbox on a storage of its own (tests, benchmarks). The gateway passes false: its storage
   * also holds sessions and retained messages, and only the composition root closes it.
   */
  constructor(
    private readonly storage: SqliteStorage,
    private readonly limits: OutboxLimits,
    private readonly options: { readonly ownsStorage?: boolean } = {},
  ) {
    this.dropLog = new RateLimitedLog((msg, fields) => storage.logger.warn(msg, fields));
    storage.attach(this);
  }

  /** Opens the storage (if it is not open yet); rejects with EDGEWAY_ERR_STORAGE_OPEN, logged. Idempotent. */
  async open(): Promise<void> {
    if (this.closed_) throw new StorageError('EDGEWAY_ERR_STORAGE_CLOSED', 'the outbox was closed');
    this.storage.open();
  }

  /**
   * Commits what is pending; closes the storage if this outbox owns it. Whatever could not be
   * committed rejects. Afterwards this outbox refuses appends and reads.
   */
  async close(timeoutMs = 2000): Promise<void> {
    if (this.options.ownsStorage ?? true) this.storage.close(timeoutMs);
    else this.storage.flush();
    this.closed();
  }

  // ---- StoragePart ----

  opened(db: SqliteDatabase): void {
    // A full scan of the row headers: the bounds need exact numbers.
    const totals = db.prepare('SELECT count(*) AS n, coalesce(sum(bytes), 0) AS b, coalesce(max(seq), 0) AS m FROM outbox').get() as { n: number; b: number; m: number };
    const sequence = db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").pluck().get() as number | undefined;
    this.size = totals.n;
    this.bytes = totals.b;
    this.lastSeq = Math.max(totals.m, sequence ?? 0);
    this.stmts = prepare(db);
    this.storage.logger.info('storage: outbox open', { path: this.storage.options.path, sync: this.storage.options.sync, messages: this.size, bytes: this.bytes, lastSeq: this.lastSeq });
  }

  hasPending(): boolean {
    return this.pending.length > 0 || this.ackWaiters.length > 0;
  }

  write(): void {
    this.delta = this.writeRows(this.pending, this.ackUpTo);
  }

  /**
   * The transaction ran synchronously, so what is pending now is exactly what write() wrote: it
   * is settled here, and on failure simply stays pending for the storage's retry.
   */
  committed(): void {
    const delta = this.delta;
    if (delta === undefined) return;
    this.delta = undefined;
    const { batch, appendWaiters, ackWaiters } = this.takePending();
    this.counters.commits++;
    this.counters.appended += batch.length;
    this.counters.acknowledged += delta.acked;
    this.size += delta.inserted - delta.acked - delta.evicted;
    this.bytes += delta.insertedBytes - delta.ackedBytes - delta.evictedBytes;
    const trimmed = batch.length - delta.inserted;
    if (trimmed + delta.evicted > 0) this.countDrops(trimmed + delta.evicted, 0);
    for (const w of appendWaiters) w.resolve();
    for (const w of ackWaiters) w.resolve();
    if (delta.inserted > 0) this.watchers.notify();
  }

  watch(listener: () => void): () => void {
    return this.watchers.add(listener);
  }

  failed(): void {
    // Nothing is given up: the entries stay pending, their appends keep waiting (so their PUBACKs
    // stay withheld until the data is stored), and the storage retries.
    this.delta = undefined;
    if (this.hasPending()) this.counters.failed++;
  }

  closed(): void {
    this.closed_ = true;
    this.stmts = undefined;
    const { appendWaiters, ackWaiters } = this.takePending();
    const err = new StorageError('EDGEWAY_ERR_STORAGE_CLOSED', 'the outbox was closed before this commit');
    for (const w of [...appendWaiters, ...ackWaiters]) w.reject(err);
  }

  /** Everything pending (entries, the ack, their waiters), leaving nothing pending. */
  private takePending(): { batch: Pending[]; appendWaiters: Waiter[]; ackWaiters: Waiter[] } {
    const taken = { batch: this.pending, appendWaiters: this.appendWaiters, ackWaiters: this.ackWaiters };
    this.pending = [];
    this.pendingBytes = 0;
    this.appendWaiters = [];
    this.ackWaiters = [];
    this.ackUpTo = 0;
    return taken;
  }

  // ---- Outbox ----

  append(entries: readonly OutboxInput[]): Promise<(number | null)[]> {
    if (this.stmts === undefined) return Promise.reject(new StorageError('EDGEWAY_ERR_STORAGE_CLOSED', 'the outbox is not open'));
    const { maxMessages, maxBytes, whenFull } = this.limits;
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
    // Pending entries alone beyond a bound (commits failing for a while): the oldest make room.
    let trimmed = 0;
    while (this.pending.length > maxMessages || this.pendingBytes > maxBytes) {
      this.pendingBytes -= (this.pending.shift() as Pending).bytes;
      trimmed++;
    }
    if (trimmed > 0) {
      this.counters.appended += trimmed; // accepted, then made room for newer ones
      this.countDrops(trimmed, 0);
    }
    if (refused > 0) this.countDrops(0, refused);
    if (refused === entries.length) return Promise.resolve(result);
    return new Promise<void>((resolve, reject) => {
      this.appendWaiters.push({ resolve, reject });
      this.storage.schedule(entries.length - refused);
    }).then(() => result);
  }

  read(after: number, limit: number): OutboxEntry[] {
    if (this.stmts === undefined) throw new StorageError('EDGEWAY_ERR_STORAGE_CLOSED', 'the outbox is not open');
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
    if (this.stmts === undefined) return Promise.reject(new StorageError('EDGEWAY_ERR_STORAGE_CLOSED', 'the outbox is not open'));
    this.ackUpTo = Math.max(this.ackUpTo, upTo);
    return new Promise<void>((resolve, reject) => {
      this.ackWaiters.push({ resolve, reject });
      this.storage.schedule();
    });
  }

  stats(): OutboxStats {
    return { size: this.size, bytes: this.bytes, pending: this.pending.length, lastSeq: this.lastSeq, ...this.counters };
  }

  /** Inside the transaction: insert, apply the ack, then evict the oldest rows beyond a bound. */
  private writeRows(batch: Pending[], ackUpTo: number): CommitDelta {
    const stmts = this.stmts as Statements;
    const { maxMessages, maxBytes } = this.limits;
    const delta: CommitDelta = { inserted: 0, insertedBytes: 0, acked: 0, ackedBytes: 0, evicted: 0, evictedBytes: 0 };
    // drop-oldest within the batch itself: never insert rows only to delete them in the same commit.
    let start = 0;
    let batchBytes = 0;
    for (const p of batch) batchBytes += p.bytes;
    while (batch.length - start > maxMessages || batchBytes > maxBytes) batchBytes -= (batch[start++] as Pending).bytes;
    const params: unknown[] = [];
    for (let i = start; i < batch.length; i++) {
      const { input, seq, bytes } = batch[i] as Pending;
      params.push(seq, bytes, input.qos, input.retain ? 1 : 0, input.arrivedAt, input.source, input.topic, input.payload);
      if (params.length === ROWS_PER_INSERT * 8) {
        stmts.insertMany.run(params);
        params.length = 0;
      }
      delta.inserted++;
      delta.insertedBytes += bytes;
    }
    for (let i = 0; i < params.length; i += 8) stmts.insert.run(params.slice(i, i + 8));
    if (ackUpTo > 0) {
      for (const bytes of stmts.deleteReturning.iterate(ackUpTo) as IterableIterator<number>) {
        delta.acked++;
        delta.ackedBytes += bytes;
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
    const { maxMessages, maxBytes, whenFull } = this.limits;
    this.dropLog.emit('storage: outbox full, messages dropped', { policy: whenFull, droppedOldest: oldest, droppedNew: refused, maxMessages, maxBytes });
  }
}
