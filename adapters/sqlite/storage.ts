import { errorMessage, StorageError, RateLimitedLog, silentLogger, type Logger } from '../../gateway/broker';
import { describeStorageError, openDatabase, type SqliteDatabase, type SyncMode } from './database';
import { Checkpointer } from './checkpointer';
import { DiskWriteMeter } from './disk-write-meter';

export interface SqliteStorageOptions {
  readonly path: string;
  readonly sync: SyncMode;
  /** Group-commit window in ms: every change within it shares one transaction. 0 = commit at once. */
  readonly flushInterval: number;
  readonly logger?: Logger;
  /** For the name of a file moved aside; tests pin it. */
  readonly now?: () => Date;
  /** How long a commit waits for a lock held by another process; default 2000 ms. */
  readonly busyTimeoutMs?: number;
  /** A checkpoint on the event loop slower than this (ms) moves checkpoints to a thread; default INLINE_STALL_MS. */
  readonly inlineCheckpointLimitMs?: number;
}

/**
 * One kind of state kept in the database (outbox, retained messages, sessions). Parts buffer
 * their changes in memory and write them when the storage commits; they never open transactions
 * of their own, so one flush costs one transaction (one WAL sync) whatever changed.
 */
export interface StoragePart {
  /**
   * The database was opened: prepare statements, read what the part needs to know at start.
   * Runs inside the quarantine guard of `openDatabase`, so corruption found here moves the file
   * aside like a bad header does.
   */
  opened(db: SqliteDatabase): void;
  hasPending(): boolean;
  /** Writes the pending changes; runs inside the commit's transaction. Throwing aborts the commit. */
  write(): void;
  /** The transaction that contained the last `write` committed. */
  committed(): void;
  /** It rolled back (disk full, read-only…): the part keeps its changes for the retry. */
  failed(error: StorageError): void;
  /** The database is closing; nothing pending will be written any more. */
  closed(): void;
}

/** Someone waiting for a commit: resolved when it is done, rejected if the storage closes first. */
export interface Waiter {
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

/** A failed commit is retried no sooner than this (ms): a full disk does not empty itself in 50 ms. */
const RETRY_AFTER_FAILURE_MS = 1000;

/**
 * Changes after which the commit does not wait for the end of the window. Under load a batch this
 * big costs few bytes per change (the per-commit overhead is spread thin), and acknowledgements
 * waiting for the commit should not wait for the timer as well: with a client's ten messages in
 * flight, a 50 ms window alone would cap it at 200 messages/s. At low rates the window still
 * bounds how often the card is written.
 */
export const EARLY_COMMIT_CHANGES = 256;

/**
 * The SQLite database of one gateway and its group commit (issue 4, DESIGN.md convention 10).
 * Every part's changes within `flushInterval` go into ONE transaction: an SD card wears per write,
 * not per message. The timer only runs while something is pending, so an idle gateway writes
 * nothing. `durable()` lets a caller wait for the commit that contains what was changed so far —
 * how a PUBACK waits until the message it acknowledges survives `kill -9` (and a power cut with
 * `sync: full`).
 */
export class SqliteStorage {
  private db: SqliteDatabase | undefined;
  private state: 'new' | 'open' | 'closed' = 'new';
  private readonly parts: StoragePart[] = [];
  private commitTx: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** An early commit is queued as a microtask (see schedule). */
  private earlyCommitQueued = false;
  /** Changes reported through schedule() since the last commit. */
  private changes = 0;
  /** After a failed commit: no commit before this time (ms), 0 otherwise. */
  private retryAt = 0;
  private waiters: Waiter[] = [];
  private readonly failLog: RateLimitedLog;
  readonly logger: Logger;
  readonly counters = { commits: 0, failedCommits: 0 };
  readonly diskWrites = new DiskWriteMeter();
  /** WAL checkpoints, on the event loop or in a worker thread (checkpointer.ts). */
  checkpointer: Checkpointer | undefined;

  /** No side effects: no file is touched until open(). */
  constructor(readonly options: SqliteStorageOptions) {
    this.logger = options.logger ?? silentLogger;
    this.failLog = new RateLimitedLog((msg, fields) => this.logger.error(msg, fields));
  }

  /** The last commit failed and its changes wait for a retry (disk full, read-only file system…). */
  get failing(): boolean {
    return this.retryAt > 0;
  }

  /** Adds a part; parts attached before `open()` read their state inside the quarantine guard. */
  attach(part: StoragePart): void {
    this.parts.push(part);
    if (this.db !== undefined) part.opened(this.db);
  }

  /**
   * Opens (or creates) and migrates the database. Throws a `StorageError` EDGEWAY_ERR_STORAGE_OPEN
   * (after logging it) when it cannot. Idempotent; a closed storage is not reopened.
   */
  open(): void {
    if (this.state === 'open') return;
    if (this.state === 'closed') throw new StorageError('EDGEWAY_ERR_STORAGE_CLOSED', 'the storage was closed');
    try {
      const { db } = openDatabase({
        path: this.options.path,
        sync: this.options.sync,
        logger: this.logger,
        now: this.options.now,
        busyTimeoutMs: this.options.busyTimeoutMs,
        verify: (db) => {
          for (const part of this.parts) part.opened(db);
        },
      });
      this.db = db;
    } catch (err) {
      this.logger.error('storage: cannot open the database', { path: this.options.path, error: errorMessage(err) });
      throw err;
    }
    this.commitTx = this.db.transaction(() => {
      for (const part of this.parts) if (part.hasPending()) part.write();
    });
    this.state = 'open';
    this.diskWrites.start();
    this.checkpointer = new Checkpointer(this.db, {
      path: this.options.path,
      sync: this.options.sync,
      logger: this.logger,
      ...(this.options.inlineCheckpointLimitMs === undefined ? {} : { inlineStallMs: this.options.inlineCheckpointLimitMs }),
    });
  }

  /**
   * Called by a part that has `changes` new pending changes: arms the group-commit timer, or
   * commits at the end of this turn of the event loop once EARLY_COMMIT_CHANGES are pending.
   */
  schedule(changes = 1): void {
    if (this.state !== 'open') return;
    this.changes += changes;
    // After a failure the retry timer decides: a full disk is not retried at the pace of arrivals.
    if (Date.now() < this.retryAt) return;
    if (this.options.flushInterval === 0) {
      this.flush();
      return;
    }
    if (this.changes >= EARLY_COMMIT_CHANGES) {
      // Right after the code that crossed the threshold (a microtask), not in the next turn of the
      // event loop: the broker appends a turn's messages at its end, and a setImmediate queued
      // then would only run after another round of socket reads — one more turn every waiting
      // acknowledgement would wait.
      if (!this.earlyCommitQueued) {
        this.earlyCommitQueued = true;
        queueMicrotask(this.onEarlyCommit);
      }
      return;
    }
    // One timer per window, armed by the first change: nothing runs (or writes) while idle.
    this.timer ??= setTimeout(this.onTimer, this.options.flushInterval);
  }

  /** For the timer: flush() cancels it when something else committed first. */
  private readonly onTimer = (): void => this.flush();

  private readonly onEarlyCommit = (): void => {
    // Cancelled (flush() or close() came first) when the flag is down.
    if (this.earlyCommitQueued && this.state === 'open') this.flush();
  };

  /**
   * Resolves once every change handed to the parts before this call is committed — after retries,
   * if commits fail meanwhile (disk full): nothing is given up while the process runs. Rejects
   * with a `StorageError` EDGEWAY_ERR_STORAGE_CLOSED only if the storage closes first. Resolves
   * at once when nothing is pending.
   */
  durable(): Promise<void> {
    if (this.state !== 'open') return Promise.reject(new StorageError('EDGEWAY_ERR_STORAGE_CLOSED', 'the storage is not open'));
    if (!this.parts.some((p) => p.hasPending())) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.schedule();
    });
  }

  /**
   * One transaction for everything pending. Never throws. A failure (disk full, read-only file
   * system, I/O error) is logged at a bounded rate and counted; every part keeps its changes and
   * the commit is retried no sooner than RETRY_AFTER_FAILURE_MS, while whoever waits for it
   * (acknowledgements, appends) keeps waiting. Memory stays bounded by the parts' own bounds.
   */
  flush(): void {
    this.cancelTimer();
    if (this.commitTx === undefined) return;
    this.changes = 0;
    if (!this.parts.some((p) => p.hasPending())) {
      const waiters = this.waiters;
      this.waiters = [];
      for (const w of waiters) w.resolve();
      return;
    }
    try {
      this.commitTx();
    } catch (err) {
      this.counters.failedCommits++;
      const reason = describeStorageError(err);
      this.failLog.emit('storage: commit failed; changes kept in memory and retried', { path: this.options.path, error: reason, failedCommits: this.counters.failedCommits });
      for (const part of this.parts) part.failed(new StorageError('EDGEWAY_ERR_STORAGE_WRITE', `storage commit failed: ${reason}`, { cause: err }));
      this.retryAt = Date.now() + Math.max(this.options.flushInterval, RETRY_AFTER_FAILURE_MS);
      if (this.state === 'open') this.timer ??= setTimeout(this.onTimer, this.retryAt - Date.now());
      return;
    }
    this.retryAt = 0;
    this.counters.commits++;
    this.checkpointer?.committed();
    const waiters = this.waiters;
    this.waiters = [];
    for (const part of this.parts) part.committed();
    for (const w of waiters) w.resolve();
  }

  /**
   * Commits what is pending, then closes the database (SQLite checkpoints the WAL on close). The
   * final commit waits for a lock at most `timeoutMs`. Idempotent.
   */
  close(timeoutMs = 2000): void {
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
    this.cancelTimer(); // a failed final flush re-armed it
    this.state = 'closed';
    this.diskWrites.stop();
    const closed = new StorageError('EDGEWAY_ERR_STORAGE_CLOSED', 'the storage was closed before this commit');
    for (const w of this.waiters) w.reject(closed);
    this.waiters = [];
    for (const part of this.parts) part.closed();
    this.checkpointer?.close();
    try {
      db.close();
    } catch (err) {
      this.logger.error('storage: error while closing the database', { error: describeStorageError(err) });
    }
    this.db = undefined;
    this.commitTx = undefined;
  }

  private cancelTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.earlyCommitQueued = false;
  }
}
