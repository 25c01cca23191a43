import { RateLimitedLog, type Logger, silentLogger } from './logger';
import { StorageError } from './errors';
import {
  OutboxWatchers,
  detachedPayload,
  emptyRawEntry,
  outboxEntryBytes,
  rawEntryOf,
  type Outbox,
  type OutboxEntry,
  type OutboxInput,
  type OutboxLimits,
  type OutboxStats,
  type RawEntry,
} from './outbox';
import { RingBuffer } from './ring-buffer';

interface Stored {
  readonly entry: OutboxEntry;
  readonly bytes: number;
}

/**
 * The outbox port in memory: same order, cursor, bounds and drop counting as the SQLite store, but
 * nothing survives the process (seqs start at 1 again). For tests and for running without
 * storage. On the broker's RingBuffer (no Array#shift, convention 7); its capacity is the
 * message bound, and it grows lazily, so a bound of 1,000,000 costs nothing while empty.
 */
export class MemoryOutbox implements Outbox {
  private readonly ring: RingBuffer<Stored>;
  private state: 'new' | 'open' | 'closed' = 'new';
  private lastSeq = 0;
  private bytes = 0;
  /** Entries were added since the last durable(). */
  private added = false;
  private readonly counters = { appended: 0, acknowledged: 0, droppedOldest: 0, droppedNew: 0, commits: 0 };
  private readonly dropLog: RateLimitedLog;
  private readonly watchers = new OutboxWatchers();

  constructor(
    private readonly limits: OutboxLimits,
    logger: Logger = silentLogger,
  ) {
    this.ring = new RingBuffer(limits.maxMessages);
    this.dropLog = new RateLimitedLog((msg, fields) => logger.warn(msg, fields));
  }

  async open(): Promise<void> {
    if (this.state === 'new') this.state = 'open';
  }

  async close(): Promise<void> {
    this.state = 'closed';
  }

  async append(entries: readonly OutboxInput[]): Promise<(number | null)[]> {
    if (this.state !== 'open') throw new StorageError('EDGEWAY_ERR_STORAGE_CLOSED', 'the outbox is not open');
    const result = entries.map((input) => this.add(input));
    if (result.some((seq) => seq !== null)) await this.durable();
    return result;
  }

  add(input: OutboxInput): number | null {
    if (this.state !== 'open') return null;
    const { maxMessages, maxBytes, whenFull } = this.limits;
    const bytes = outboxEntryBytes(input);
    const fits = () => this.ring.length < maxMessages && this.bytes + bytes <= maxBytes;
    if (bytes > maxBytes || maxMessages === 0 || (whenFull === 'drop-new' && !fits())) {
      this.countDrops(0, 1);
      return null;
    }
    let droppedOldest = 0;
    while (!fits()) {
      const evicted = this.ring.shift();
      if (evicted === undefined) break;
      this.bytes -= evicted.bytes;
      droppedOldest++;
    }
    if (droppedOldest > 0) this.countDrops(droppedOldest, 0);
    const seq = ++this.lastSeq;
    this.ring.push({ entry: { ...input, payload: detachedPayload(input.payload), seq }, bytes });
    this.bytes += bytes;
    this.counters.appended++;
    this.added = true;
    return seq;
  }

  /** Everything added is "stored" at once; readers are told once per call, not per entry. */
  async durable(): Promise<void> {
    if (this.state !== 'open') throw new StorageError('EDGEWAY_ERR_STORAGE_CLOSED', 'the outbox is not open');
    if (!this.added) return;
    this.added = false;
    this.counters.commits++;
    this.watchers.notify();
  }

  private countDrops(droppedOldest: number, droppedNew: number): void {
    this.counters.droppedOldest += droppedOldest;
    this.counters.droppedNew += droppedNew;
    const { maxMessages, maxBytes, whenFull } = this.limits;
    this.dropLog.emit('outbox full: messages dropped', { policy: whenFull, droppedOldest, droppedNew, maxMessages, maxBytes });
  }

  watch(listener: () => void): () => void {
    return this.watchers.add(listener);
  }

  read(after: number, limit: number): OutboxEntry[] {
    const out: OutboxEntry[] = [];
    if (limit <= 0) return out;
    for (const stored of this.ring) {
      if (stored.entry.seq <= after) continue;
      out.push(stored.entry);
      if (out.length >= limit) break;
    }
    return out;
  }

  /** Builds each entry's bytes on the fly: this outbox serves tests and storage-less runs, not speed. */
  scanRaw(after: number, limit: number, visit: (entry: Readonly<RawEntry>) => boolean): number {
    const raw = emptyRawEntry();
    let visited = 0;
    for (const e of this.read(after, limit)) {
      visited++;
      if (!visit(rawEntryOf(e, raw))) break;
    }
    return visited;
  }

  async ack(upTo: number): Promise<void> {
    if (this.state !== 'open') throw new StorageError('EDGEWAY_ERR_STORAGE_CLOSED', 'the outbox is not open');
    for (let head = this.ring.peek(); head !== undefined && head.entry.seq <= upTo; head = this.ring.peek()) {
      this.ring.shift();
      this.bytes -= head.bytes;
      this.counters.acknowledged++;
    }
  }

  stats(): OutboxStats {
    return { size: this.ring.length, bytes: this.bytes, pending: 0, lastSeq: this.lastSeq, failed: 0, neverWritten: 0, ...this.counters };
  }
}
