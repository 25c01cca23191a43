import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { RateLimitedLog, errorMessage, type Logger } from '../../gateway/broker';
import { JOURNAL_SIZE_LIMIT, type SqliteDatabase, type SyncMode } from './database';

/** What the worker is started with. */
export interface CheckpointWorkerData {
  readonly path: string;
  readonly sync: SyncMode;
  readonly journalSizeLimit: number;
  /** An Int32 the worker sets to 1 once its connection is closed (close() waits for it). */
  readonly closedFlag: SharedArrayBuffer;
}

export type CheckpointReply =
  | { readonly kind: 'ready' }
  | { readonly kind: 'done'; readonly busy: number; readonly log: number; readonly checkpointed: number; readonly ms: number }
  | { readonly kind: 'failed'; readonly error: string };

/** A checkpoint at most this often (ms) while commits happen: the log grows by at most what one second writes. */
export const CHECKPOINT_INTERVAL_MS = 1000;
/** SQLite's own default, restored on the writer whenever the worker is not available. */
const AUTOCHECKPOINT_PAGES = 1000;
/** How long close() waits for the worker to close its connection (it may be inside a checkpoint). */
const CLOSE_WAIT_MS = 2000;

/**
 * Moves WAL checkpoints off the event loop. SQLite checkpoints inside the commit that crosses
 * 1,000 log pages: it copies those pages into the database file and syncs it, which on an SD card
 * stalls every client for tens of milliseconds (and a fifth of the time under the durable
 * benchmark's load). Here the writer's automatic checkpoint is off while a worker thread with its
 * own connection runs `wal_checkpoint(PASSIVE)` after commits, at most every CHECKPOINT_INTERVAL_MS
 * (and once more that long after the last commit); WAL mode lets it run beside the writer. Durability does not change: a commit is durable once it
 * is in the log, and the checkpoint syncs the database before the log is reused.
 *
 * If the worker cannot start or dies, the writer's automatic checkpoint is switched back on
 * (logged once): the log stays bounded either way.
 */
export class Checkpointer {
  private worker: Worker | undefined;
  private state: 'new' | 'starting' | 'ready' | 'unavailable' | 'closed' = 'new';
  private inProgress = false;
  /** Commits since the last checkpoint started (or one did not copy the whole log). */
  private dirty = false;
  private timer: NodeJS.Timeout | undefined;
  private lastStartedAt = -Infinity;
  private closedFlag: Int32Array | undefined;
  readonly counters = { checkpoints: 0, failed: 0, pagesCheckpointed: 0 };
  private readonly failLog: RateLimitedLog;

  constructor(
    private readonly db: SqliteDatabase,
    private readonly options: { readonly path: string; readonly sync: SyncMode; readonly logger: Logger; readonly workerScript?: string },
  ) {
    this.failLog = new RateLimitedLog((msg, fields) => options.logger.warn(msg, fields));
  }

  /** Starts the worker; until it reports ready, SQLite's automatic checkpoint stays on. */
  start(): void {
    if (this.state !== 'new') return;
    this.state = 'starting';
    const closedFlag = new SharedArrayBuffer(4);
    this.closedFlag = new Int32Array(closedFlag);
    const workerData: CheckpointWorkerData = { path: this.options.path, sync: this.options.sync, journalSizeLimit: JOURNAL_SIZE_LIMIT, closedFlag };
    try {
      this.worker = new Worker(this.options.workerScript ?? join(__dirname, 'checkpoint-worker.js'), { workerData });
    } catch (err) {
      this.fallBack(errorMessage(err));
      return;
    }
    this.worker.unref(); // never what keeps the process alive
    this.worker.on('message', this.onReply);
    this.worker.on('error', (err) => this.fallBack(errorMessage(err)));
    this.worker.on('exit', (code) => this.fallBack(`exited with code ${code}`));
  }

  /**
   * After a commit: a checkpoint now if none runs and the last one started long enough ago, else
   * once that is so — also when no commit follows, so that a burst's last commits are synced
   * within about a second (with `sync: normal` only a checkpoint syncs them). Nothing runs while
   * nothing is committed.
   */
  committed(): void {
    this.dirty = true;
    this.maybeStart();
  }

  private maybeStart(): void {
    if (this.state !== 'ready' || this.inProgress || !this.dirty || this.timer !== undefined) return;
    const now = Date.now();
    const wait = this.lastStartedAt + CHECKPOINT_INTERVAL_MS - now;
    if (wait > 0) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.maybeStart();
      }, wait);
      this.timer.unref();
      return;
    }
    this.dirty = false;
    this.inProgress = true;
    this.lastStartedAt = now;
    this.worker?.postMessage('checkpoint');
  }

  /** A checkpoint runs or is due (false: nothing committed since the last one). */
  get pending(): boolean {
    return this.inProgress || this.timer !== undefined;
  }

  /** True while checkpoints run in the worker (false: starting, closed, or fallen back to SQLite's own). */
  get workerRunning(): boolean {
    return this.state === 'ready';
  }

  /**
   * Synchronous, like the storage's close: the worker closes its connection first (waited for at
   * most CLOSE_WAIT_MS), so that the writer's close is the last one and leaves no log behind.
   */
  close(): void {
    const worker = this.worker;
    const wasReady = this.state === 'ready';
    this.worker = undefined;
    this.state = 'closed';
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    if (worker === undefined) return;
    worker.removeAllListeners();
    worker.on('error', () => undefined);
    if (wasReady && this.closedFlag !== undefined) {
      worker.postMessage('close');
      Atomics.wait(this.closedFlag, 0, 0, CLOSE_WAIT_MS);
    }
    void worker.terminate();
  }

  private readonly onReply = (reply: CheckpointReply): void => {
    if (reply.kind === 'ready') {
      if (this.state !== 'starting') return;
      this.state = 'ready';
      this.db.pragma('wal_autocheckpoint = 0');
      return;
    }
    this.inProgress = false;
    if (reply.kind === 'failed') {
      this.counters.failed++;
      this.dirty = true;
      this.failLog.emit('storage: checkpoint failed; retried in a second', { path: this.options.path, error: reply.error, failed: this.counters.failed });
    } else {
      this.counters.checkpoints++;
      this.counters.pagesCheckpointed += Math.max(0, reply.checkpointed);
      // Frames the writer appended meanwhile (or a checkpoint that met a reader) are copied next time.
      if (reply.checkpointed < reply.log) this.dirty = true;
    }
    this.maybeStart();
  };

  private fallBack(reason: string): void {
    if (this.state === 'closed' || this.state === 'unavailable') return;
    this.state = 'unavailable';
    this.worker = undefined;
    this.inProgress = false;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    try {
      if (this.db.open) this.db.pragma(`wal_autocheckpoint = ${AUTOCHECKPOINT_PAGES}`);
    } catch {
      // the database is closing
    }
    this.options.logger.warn('storage: checkpoint worker unavailable; SQLite checkpoints in the main thread again', { path: this.options.path, reason });
  }
}
