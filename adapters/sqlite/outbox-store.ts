import {
  OutboxWatchers,
  StorageError,
  RateLimitedLog,
  errorMessage,
  outboxEntryBytes,
  type Outbox,
  type OutboxEntry,
  type OutboxInput,
  type OutboxLimits,
  type OutboxStats,
  type RawEntry,
  type ReadOptions,
  emptyRawEntry,
} from '../../gateway/broker';
import type { SqliteDatabase } from './database';
import { MAX_BLOCK_BYTES, MalformedBlockError, OutboxBlockBuilder, blockEntrySizes, decodeBlock, scanBlockRaw } from './outbox-block';
import type { SqliteStorage, StoragePart, Waiter } from './storage';

/** Appended entries waiting for the next commit: a block being built, consecutive seqs from firstSeq. */
interface PendingBlock {
  readonly firstSeq: number;
  readonly builder: OutboxBlockBuilder;
}

/** A stored block's header. */
interface BlockRow {
  last_seq: number;
  first_seq: number;
  bytes: number;
}

/**
 * Seqs reserved ahead of the entries handed out, so that a reader may send pending entries before
 * they are stored (see `read`): the reservation is stored first, and a gateway killed before its
 * next commit continues above it instead of handing those seqs out again for other messages. A
 * crash then leaves a gap of at most this many seqs; a clean stop leaves none (`closed`).
 */
export const SEQ_RESERVATION = 65_536;

/** What one commit changed; applied to the counters only once the transaction committed. */
interface CommitDelta {
  inserted: number;
  insertedBytes: number;
  /** Pending entries the reader had acknowledged already: never written, gone with this commit. */
  skipped: number;
  acked: number;
  ackedBytes: number;
  evicted: number;
  evictedBytes: number;
  /** The head after the commit: every seq up to it is gone. */
  head: number;
  /** The highest seq stored (or skipped) after the commit. */
  storedLastSeq: number;
  /** The seq reservation after the commit (`outbox_head.used`). */
  reservedSeq: number;
}

type Statements = ReturnType<typeof prepare>;

function prepare(db: SqliteDatabase) {
  return {
    insert: db.prepare('INSERT INTO outbox_blocks (last_seq, first_seq, bytes, data) VALUES (?, ?, ?, ?)'),
    readFrom: db.prepare('SELECT first_seq, data FROM outbox_blocks WHERE last_seq >= ? ORDER BY last_seq'),
    data: db.prepare('SELECT data FROM outbox_blocks WHERE last_seq = ?').pluck(),
    /** Headers of the blocks holding seqs in [from, to]. */
    headersBetween: db.prepare('SELECT last_seq, first_seq, bytes FROM outbox_blocks WHERE last_seq >= ? AND first_seq <= ? ORDER BY last_seq'),
    firstHeaderFrom: db.prepare('SELECT last_seq, first_seq, bytes FROM outbox_blocks WHERE last_seq >= ? ORDER BY last_seq LIMIT 1'),
    deleteUpTo: db.prepare('DELETE FROM outbox_blocks WHERE last_seq <= ?'),
    setHead: db.prepare('UPDATE outbox_head SET seq = ? WHERE id = 1'),
    setUsed: db.prepare('UPDATE outbox_head SET used = ? WHERE id = 1'),
  };
}

/**
 * The outbox port on SQLite (issue 4), a part of the gateway's `SqliteStorage`: appends and acks
 * are buffered and written in the storage's group commit, together with every other change of the
 * window. An `append` resolves after the commit that contains it, so "resolved" means "survives
 * kill -9" (and a power cut with sync: full).
 *
 * Entries are stored in blocks of consecutive seqs (outbox-block.ts), encoded as they are appended;
 * a commit inserts one row per block. Acknowledging and dropping move the *head* (every seq up to
 * it is gone): blocks wholly behind it are deleted in the same commit, and the entries of the
 * block it points into are skipped by readers and no longer counted.
 *
 * Bounds: `drop-new` is decided at append time against stored + pending entries; `drop-oldest`
 * moves the head past the oldest entries inside the commit that would exceed a bound, so after
 * every commit the stored entries are within both bounds. A failed commit (disk full, read-only
 * file system) keeps its entries pending and their appends waiting (counted in `failed`; the
 * storage logs it at a bounded rate and retries): nothing accepted is given up while the process
 * runs. Pending entries stay within the same bounds plus at most one block: under `drop-oldest`
 * whole pending blocks that no longer fit make room.
 *
 * A reader may take entries before their commit (`read` with `pending`, the live uplink); those
 * it acknowledges before the commit are never written — while Redis keeps up, the SD card sees
 * only the head moving. QoS 0 appends therefore only arm the window's timer instead of counting
 * towards an early commit. Seqs read that way are reserved on disk first (SEQ_RESERVATION).
 *
 * `open()` and `close()` open and close the whole storage: an outbox on its own storage (tests,
 * the benchmark) needs nothing else; in the gateway they are idempotent calls on a storage the
 * composition root opened already.
 */
export class SqliteOutbox implements Outbox, StoragePart {
  private stmts: Statements | undefined;
  private closed_ = false;
  private pending: PendingBlock[] = [];
  private pendingCount = 0;
  private pendingBytes = 0;
  /** Entries added since the last durable(), and how many of them are QoS 1/2. */
  private unscheduled = 0;
  private unscheduledAwaited = 0;
  private appendWaiters: Waiter[] = [];
  private ackUpTo = 0;
  private ackWaiters: Waiter[] = [];
  /** What the transaction in progress changed, applied by committed() or dropped by failed(). */
  private delta: CommitDelta | undefined;
  /** Committed state: entries stored with seq > head, their logical bytes, the highest seq stored. */
  private size = 0;
  private bytes = 0;
  private head = 0;
  private storedLastSeq = 0;
  /** Highest seq handed out (pending ones included). */
  private lastSeq = 0;
  /** Stored: no seq up to here is handed out again after a restart. Pending entries up to it are readable. */
  private reservedSeq = 0;
  /** A reader asked for pending entries beyond the reservation: the next commit extends it. */
  private reservationWanted = false;
  /** The entry sizes of the block last decoded for them: the head's block, decoded again at every ack. */
  private sizesCache: { lastSeq: number; sizes: number[] } | undefined;
  private readonly counters = { appended: 0, acknowledged: 0, neverWritten: 0, droppedOldest: 0, droppedNew: 0, failed: 0, commits: 0 };
  private readonly dropLog: RateLimitedLog;
  private readonly malformedLog: RateLimitedLog;
  private readonly watchers = new OutboxWatchers();
  /** The one RawEntry scanRaw fills for every entry. */
  private readonly rawEntry = emptyRawEntry();

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
    this.malformedLog = new RateLimitedLog((msg, fields) => storage.logger.error(msg, fields));
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
    this.stmts = prepare(db);
    const head = db.prepare('SELECT seq, used FROM outbox_head WHERE id = 1').get() as { seq: number; used: number };
    this.head = head.seq;
    // Block headers only: the bounds need exact numbers, and the first block may be partly gone.
    const totals = db.prepare('SELECT coalesce(sum(last_seq - first_seq + 1), 0) AS n, coalesce(sum(bytes), 0) AS b, coalesce(max(last_seq), 0) AS m FROM outbox_blocks').get() as { n: number; b: number; m: number };
    this.size = totals.n;
    this.bytes = totals.b;
    const first = this.stmts.firstHeaderFrom.get(0) as BlockRow | undefined;
    if (first !== undefined && first.first_seq <= this.head) {
      const gone = this.span(first, first.first_seq, this.head);
      this.size -= gone.count;
      this.bytes -= gone.bytes;
    }
    this.storedLastSeq = Math.max(totals.m, this.head, head.used);
    this.lastSeq = this.storedLastSeq;
    this.reservedSeq = this.lastSeq;
    this.storage.logger.info('storage: outbox open', { path: this.storage.options.path, sync: this.storage.options.sync, messages: this.size, bytes: this.bytes, lastSeq: this.lastSeq });
  }

  hasPending(): boolean {
    return this.pendingCount > 0 || this.ackWaiters.length > 0;
  }

  write(): void {
    this.delta = this.writeBlocks();
  }

  /**
   * The transaction ran synchronously, so what is pending now is exactly what write() wrote: it
   * is settled here, and on failure simply stays pending for the storage's retry.
   */
  committed(): void {
    const delta = this.delta;
    if (delta === undefined) return;
    this.delta = undefined;
    const { appended, appendWaiters, ackWaiters } = this.takePending();
    this.counters.commits++;
    this.counters.appended += appended;
    this.counters.acknowledged += delta.acked + delta.skipped;
    this.counters.neverWritten += delta.skipped;
    this.size += delta.inserted - delta.acked - delta.evicted;
    this.bytes += delta.insertedBytes - delta.ackedBytes - delta.evictedBytes;
    this.head = delta.head;
    this.storedLastSeq = delta.storedLastSeq;
    const reservationGrew = delta.reservedSeq > this.reservedSeq;
    this.reservedSeq = delta.reservedSeq;
    this.reservationWanted = false;
    if (delta.evicted > 0) this.countDrops(delta.evicted, 0);
    for (const w of appendWaiters) w.resolve();
    for (const w of ackWaiters) w.resolve();
    if (delta.inserted > 0 || reservationGrew) this.watchers.notify();
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
    // After the final commit nothing is pending and no seq above lastSeq was handed out: give
    // the unused reservation back, so that a clean restart continues without a gap.
    if (this.stmts !== undefined && this.pendingCount === 0 && this.reservedSeq > this.lastSeq) {
      try {
        this.stmts.setUsed.run(this.lastSeq);
      } catch {
        // a gap after the restart, nothing worse
      }
    }
    this.stmts = undefined;
    const { appendWaiters, ackWaiters } = this.takePending();
    const err = new StorageError('EDGEWAY_ERR_STORAGE_CLOSED', 'the outbox was closed before this commit');
    for (const w of [...appendWaiters, ...ackWaiters]) w.reject(err);
  }

  /** Everything pending (blocks, the ack, their waiters), leaving nothing pending. */
  private takePending(): { appended: number; appendWaiters: Waiter[]; ackWaiters: Waiter[] } {
    const taken = { appended: this.pendingCount, appendWaiters: this.appendWaiters, ackWaiters: this.ackWaiters };
    this.pending = [];
    this.pendingCount = 0;
    this.pendingBytes = 0;
    this.appendWaiters = [];
    this.ackWaiters = [];
    this.ackUpTo = 0;
    return taken;
  }

  // ---- Outbox ----

  append(entries: readonly OutboxInput[]): Promise<(number | null)[]> {
    if (this.stmts === undefined) return Promise.reject(new StorageError('EDGEWAY_ERR_STORAGE_CLOSED', 'the outbox is not open'));
    const result = entries.map((input) => this.add(input));
    if (result.every((seq) => seq === null)) return Promise.resolve(result);
    return this.durable().then(() => result);
  }

  add(input: OutboxInput): number | null {
    if (this.stmts === undefined) return null;
    const { maxMessages, maxBytes, whenFull } = this.limits;
    // An upper bound of the size first (UTF-8 needs at most 3 bytes per UTF-16 unit): far from
    // the bounds, which is the normal case, the exact size comes for free from the encoder.
    const atMost = input.payload.length + 3 * (input.topic.length + input.source.length);
    if (atMost > maxBytes || (whenFull === 'drop-new' && !this.roomFor(atMost))) {
      const bytes = outboxEntryBytes(input);
      if (bytes > maxBytes || (whenFull === 'drop-new' && !this.roomFor(bytes))) {
        this.countDrops(0, 1);
        return null;
      }
    }
    const seq = ++this.lastSeq;
    let block = this.pending[this.pending.length - 1];
    if (block === undefined || block.builder.full) {
      // Sized for a whole block at once: growing by doubling allocated and copied every block ~6 times.
      block = { firstSeq: seq, builder: new OutboxBlockBuilder(MAX_BLOCK_BYTES + 4096) };
      this.pending.push(block);
      if (whenFull === 'drop-oldest') this.trimPending();
    }
    this.pendingBytes += block.builder.add(input);
    this.pendingCount++;
    this.unscheduled++;
    // QoS 0 entries only arm the window's timer: no acknowledgement waits for them, and within
    // the window a live uplink confirms most of them — those are then never written at all.
    // QoS 1/2 entries count towards an early commit, like every change someone waits for.
    if (input.qos > 0) this.unscheduledAwaited++;
    return seq;
  }

  durable(): Promise<void> {
    if (this.stmts === undefined) return Promise.reject(new StorageError('EDGEWAY_ERR_STORAGE_CLOSED', 'the outbox is not open'));
    if (this.unscheduled === 0 && !this.hasPending()) return Promise.resolve();
    if (this.unscheduled > 0) {
      if (this.limits.whenFull === 'drop-oldest') this.trimPending();
      // The reader may take entries before they are stored (see read): tell it once per call.
      if (this.lastSeq - this.unscheduled < this.reservedSeq) this.watchers.notify();
      this.unscheduled = 0;
    }
    const awaited = this.unscheduledAwaited;
    this.unscheduledAwaited = 0;
    return new Promise<void>((resolve, reject) => {
      this.appendWaiters.push({ resolve, reject });
      this.storage.schedule(awaited);
    });
  }

  private roomFor(bytes: number): boolean {
    return this.size + this.pendingCount < this.limits.maxMessages && this.bytes + this.pendingBytes + bytes <= this.limits.maxBytes;
  }

  /**
   * Stored entries first, then pending ones up to the seq reservation: a reader may send an entry
   * before its commit, and if it acknowledges it before that commit the entry is never written
   * (writeBlocks). That is safe because the seq cannot be handed out again (SEQ_RESERVATION) and
   * an entry whose commit never comes (kill -9) was not acknowledged to anyone by the outbox.
   */
  read(after: number, limit: number, options?: ReadOptions): OutboxEntry[] {
    const out: OutboxEntry[] = [];
    this.walk(after, limit, (data, firstSeq, from, visit) => decodeBlock(data, firstSeq, from, visit), (entry: OutboxEntry) => {
      out.push(entry);
      return true;
    }, options);
    return out;
  }

  scanRaw(after: number, limit: number, visit: (entry: Readonly<RawEntry>) => boolean, options?: ReadOptions): number {
    const raw = this.rawEntry;
    return this.walk(after, limit, (data, firstSeq, from, v) => scanBlockRaw(data, firstSeq, from, raw, v), visit, options);
  }

  /**
   * The entries after `after` in order — stored blocks, then (with `pending`) pending ones up to
   * the reservation — each block through `decode` (objects or raw), at most `limit` of them.
   */
  private walk<E extends { readonly seq: number }>(
    after: number,
    limit: number,
    decode: (data: Buffer, firstSeq: number, from: number, visit: (entry: E) => boolean) => void,
    visit: (entry: E) => boolean,
    options: ReadOptions | undefined,
  ): number {
    const stmts = this.stmts;
    if (stmts === undefined) throw new StorageError('EDGEWAY_ERR_STORAGE_CLOSED', 'the outbox is not open');
    let visited = 0;
    if (limit <= 0) return visited;
    let more = true;
    let reserved = true;
    const take = (entry: E): boolean => {
      if (entry.seq > this.reservedSeq && entry.seq > this.storedLastSeq) {
        reserved = false;
        return false;
      }
      visited++;
      more = visit(entry) && visited < limit;
      return more;
    };
    const from = Math.floor(Math.max(after, this.head)) + 1;
    const block = (data: Buffer, firstSeq: number): void => {
      try {
        decode(data, firstSeq, Math.max(0, from - firstSeq), take);
      } catch (err) {
        // Only a damaged file (or a bug) gets here: the rest of the queue must still flow.
        this.malformedLog.emit('storage: an outbox block cannot be read; its entries are skipped', { firstSeq, error: errorMessage(err) });
      }
    };
    if (from <= this.storedLastSeq) {
      for (const row of stmts.readFrom.iterate(from) as IterableIterator<{ first_seq: number; data: Buffer }>) {
        block(row.data, row.first_seq);
        if (!more) return visited;
      }
    }
    if (options?.pending !== true) return visited;
    for (const { firstSeq, builder } of this.pending) {
      if (firstSeq + builder.count <= from) continue;
      block(builder.view(), firstSeq);
      if (!more || !reserved) break;
    }
    // The next commit extends the reservation; the reader is told (watch) when it did.
    if (!reserved) this.reservationWanted = true;
    return visited;
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
    return { size: this.size, bytes: this.bytes, pending: this.pendingCount, lastSeq: this.lastSeq, ...this.counters };
  }

  /**
   * Under drop-oldest, while commits fail: a pending block none of whose entries the bounds could
   * keep (the newer pending entries alone fill them) is dropped whole. Exactly what the policy would
   * drop entry by entry; what is left over the bounds is dropped exactly by the next commit.
   */
  private trimPending(): void {
    const { maxMessages, maxBytes } = this.limits;
    let trimmed = 0;
    for (let first = this.pending[0]; first !== undefined && this.pending.length > 1; first = this.pending[0]) {
      const { count, bytes } = first.builder;
      if (this.pendingCount - count < maxMessages && this.pendingBytes - bytes < maxBytes) break;
      this.pending.shift();
      this.pendingCount -= count;
      this.pendingBytes -= bytes;
      trimmed += count;
    }
    if (trimmed > 0) {
      this.counters.appended += trimmed; // accepted, then made room for newer ones
      this.countDrops(trimmed, 0);
    }
  }

  /** Inside the transaction: insert the pending blocks, apply the ack, then drop the oldest entries beyond a bound. */
  private writeBlocks(): CommitDelta {
    const stmts = this.stmts as Statements;
    const delta: CommitDelta = { inserted: 0, insertedBytes: 0, skipped: 0, acked: 0, ackedBytes: 0, evicted: 0, evictedBytes: 0, head: this.head, storedLastSeq: this.storedLastSeq, reservedSeq: this.reservedSeq };
    for (const { firstSeq, builder } of this.pending) {
      const lastSeq = firstSeq + builder.count - 1;
      if (lastSeq <= this.ackUpTo) {
        // Sent before its commit and confirmed already: nothing to write (a block only partly
        // confirmed is written, and the head then points into it).
        delta.skipped += builder.count;
        delta.storedLastSeq = lastSeq;
        continue;
      }
      stmts.insert.run(lastSeq, firstSeq, builder.bytes, builder.finish());
      delta.inserted += builder.count;
      delta.insertedBytes += builder.bytes;
      delta.storedLastSeq = lastSeq;
    }
    // Never past the last stored seq: an entry appended later must not start out behind the head.
    const ackTo = Math.min(Math.floor(this.ackUpTo), delta.storedLastSeq);
    if (ackTo > delta.head) {
      for (const row of stmts.headersBetween.all(delta.head + 1, ackTo) as BlockRow[]) {
        const gone = this.span(row, delta.head + 1, ackTo);
        delta.acked += gone.count;
        delta.ackedBytes += gone.bytes;
      }
      delta.head = ackTo;
    }
    this.evictBeyondBounds(delta);
    if (delta.head !== this.head) {
      stmts.deleteUpTo.run(delta.head);
      stmts.setHead.run(delta.head);
    }
    // Extended while a reader takes pending entries, half a reservation before it runs out.
    if (this.reservationWanted || (this.reservedSeq > this.storedLastSeq && this.lastSeq + SEQ_RESERVATION / 2 > this.reservedSeq)) {
      delta.reservedSeq = Math.max(this.reservedSeq, this.lastSeq + SEQ_RESERVATION);
      stmts.setUsed.run(delta.reservedSeq);
    }
    return delta;
  }

  /** drop-oldest (and drop-new's pending overflow): moves the head until the stored entries fit both bounds. */
  private evictBeyondBounds(delta: CommitDelta): void {
    const stmts = this.stmts as Statements;
    const { maxMessages, maxBytes } = this.limits;
    let count = this.size + delta.inserted - delta.acked;
    let bytes = this.bytes + delta.insertedBytes - delta.ackedBytes;
    while (count > maxMessages || bytes > maxBytes) {
      const row = stmts.firstHeaderFrom.get(delta.head + 1) as BlockRow | undefined;
      if (row === undefined) break; // nothing left to drop (the counts say otherwise only after a bug)
      const whole = this.span(row, delta.head + 1, row.last_seq);
      if (count - whole.count > maxMessages || bytes - whole.bytes > maxBytes || whole.count === 0) {
        count -= whole.count;
        bytes -= whole.bytes;
        delta.evicted += whole.count;
        delta.evictedBytes += whole.bytes;
        delta.head = row.last_seq;
        continue;
      }
      // The bounds are met inside this block: drop entry by entry.
      const sizes = this.entrySizes(row);
      for (let seq = Math.max(delta.head + 1, row.first_seq); count > maxMessages || bytes > maxBytes; seq++) {
        const size = sizes[seq - row.first_seq] as number;
        count--;
        bytes -= size;
        delta.evicted++;
        delta.evictedBytes += size;
        delta.head = seq;
      }
    }
  }

  /** How many entries, and their bytes, a block holds with seqs in [from, to]. */
  private span(row: BlockRow, from: number, to: number): { count: number; bytes: number } {
    const lo = Math.max(from, row.first_seq);
    const hi = Math.min(to, row.last_seq);
    if (hi < lo) return { count: 0, bytes: 0 };
    if (lo === row.first_seq && hi === row.last_seq) return { count: hi - lo + 1, bytes: row.bytes };
    const sizes = this.entrySizes(row);
    let bytes = 0;
    for (let seq = lo; seq <= hi; seq++) bytes += sizes[seq - row.first_seq] as number;
    return { count: hi - lo + 1, bytes };
  }

  private entrySizes(row: BlockRow): number[] {
    if (this.sizesCache?.lastSeq === row.last_seq) return this.sizesCache.sizes;
    const count = row.last_seq - row.first_seq + 1;
    let sizes: number[];
    // An SQLite error (I/O, busy) propagates: the commit fails and is retried with exact sizes.
    const data = (this.stmts as Statements).data.get(row.last_seq) as Buffer;
    try {
      sizes = blockEntrySizes(data);
      if (sizes.length !== count) throw new MalformedBlockError(`${sizes.length} entries, the row says ${count}`);
    } catch (err) {
      if (!(err instanceof MalformedBlockError)) throw err;
      // A damaged block must not stop every later commit: spread its recorded size evenly.
      this.malformedLog.emit('storage: an outbox block cannot be read; its entries are skipped', { firstSeq: row.first_seq, error: errorMessage(err) });
      sizes = Array.from({ length: count }, (_, i) => Math.floor((row.bytes * (i + 1)) / count) - Math.floor((row.bytes * i) / count));
    }
    this.sizesCache = { lastSeq: row.last_seq, sizes };
    return sizes;
  }

  private countDrops(oldest: number, refused: number): void {
    this.counters.droppedOldest += oldest;
    this.counters.droppedNew += refused;
    const { maxMessages, maxBytes, whenFull } = this.limits;
    this.dropLog.emit('storage: outbox full, messages dropped', { policy: whenFull, droppedOldest: oldest, droppedNew: refused, maxMessages, maxBytes });
  }
}
