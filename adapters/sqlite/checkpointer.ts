import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { RateLimitedLog, errorMessage, type Logger } from '../../gateway/broker';
import { JOURNAL_SIZE_LIMIT, type SqliteDatabase, type SyncMode } from './database';
import { passiveCheckpoint, type CheckpointReply } from './passive-checkpoint';

/** What the worker is started with. */
export interface CheckpointWorkerData {
  readonly path: string;
  readonly sync: SyncMode;
  readonly journalSizeLimit: number;
  /** An Int32 the worker sets to 1 once its connection is closed (close() waits for it). */
  readonly closedFlag: SharedArrayBuffer;
}

/** A checkpoint at most this often (ms) while commits happen: the log grows by at most what one second writes. */
const CHECKPOINT_INTERVAL_MS = 1000;
/**
 * An inline checkpoint that took longer than this (ms) moves checkpoints to the worker thread for
 * the rest of the run. The thread costs ~15 MB of memory (a V8 isolate with SQLite), which a
 * gateway whose checkpoints are quick — little data, a fast disk — should not pay.
 */
export const INLINE_STALL_MS = 20;
/**
 * Frames in the log (since its last rewind) above which the writer finishes a worker checkpoint
 * itself, so that the log is rewound: JOURNAL_SIZE_LIMIT at 4 KiB pages.
 */
const REWIND_FRAMES = JOURNAL_SIZE_LIMIT / 4096;
/** How long close() waits for the worker to close its connection (it may be inside a checkpoint). */
const CLOSE_WAIT_MS = 2000;

/**
 * Runs the WAL checkpoints itself instead of SQLite's automatic one, which copies 1,000 log
 * pages into the database file and syncs it inside whichever commit crosses that mark — on an SD
 * card a stall of every client for tens of milliseconds, and at high rates a fifth of the time.
 *
 * After commits, at most every CHECKPOINT_INTERVAL_MS (and once more that long after the last
 * commit, so a burst's end is synced within about a second: with `sync: normal` only a checkpoint
 * syncs commits), it runs `wal_checkpoint(PASSIVE)`: on the event loop while that is quick; once
 * one takes longer than `inlineStallMs`, in a worker thread with its own connection (WAL mode lets
 * it run beside the writer). If the worker cannot start or dies, checkpoints run inline again
 * (logged once). Durability does not change: a commit is durable once it is in the log, and a
 * checkpoint syncs the database before the log is reused.
 */
export class Checkpointer {
  private worker: Worker | undefined;
  private mode: 'inline' | 'starting' | 'worker' | 'closed' = 'inline';
  /** The worker failed once: checkpoints stay inline. */
  private workerFailed = false;
  private inProgress = false;
  /** Commits since the last checkpoint started (or one did not copy the whole log). */
  private dirty = false;
  private timer: NodeJS.Timeout | undefined;
  private lastStartedAt = -Infinity;
  private closedFlag: Int32Array | undefined;
  readonly counters = { checkpoints: 0, inline: 0, failed: 0, finishedInline: 0 };
  /** The last checkpoint's result: frames in the log and frames copied so far (SQLite's numbers). */
  last: { readonly busy: number; readonly log: number; readonly checkpointed: number } | undefined;
  private readonly failLog: RateLimitedLog;

  constructor(
    private readonly db: SqliteDatabase,
    private readonly options: {
      readonly path: string;
      readonly sync: SyncMode;
      readonly logger: Logger;
      readonly workerScript?: string;
      /** Default INLINE_STALL_MS; 0 moves to the worker at the first checkpoint (tests). */
      readonly inlineStallMs?: number;
    },
  ) {
    this.failLog = new RateLimitedLog((msg, fields) => options.logger.warn(msg, fields));
    db.pragma('wal_autocheckpoint = 0');
  }

  /**
   * After a commit: a checkpoint now if none runs and the last one started long enough ago, else
   * once that is so — also when no commit follows. Nothing runs while nothing is committed.
   */
  committed(): void {
    this.dirty = true;
    this.maybeStart();
  }

  /** A checkpoint runs or is due (false: nothing committed since the last one). */
  get pending(): boolean {
    return this.inProgress || this.timer !== undefined;
  }

  /** True while checkpoints run in the worker thread. */
  get workerRunning(): boolean {
    return this.mode === 'worker';
  }

  /**
   * Synchronous, like the storage's close: the worker closes its connection first (waited for at
   * most CLOSE_WAIT_MS), so that the writer's close is the last one and leaves no log behind.
   */
  close(): void {
    const worker = this.worker;
    const wasReady = this.mode === 'worker';
    this.worker = undefined;
    this.mode = 'closed';
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

  private maybeStart(): void {
    if (this.mode === 'closed' || this.inProgress || !this.dirty || this.timer !== undefined) return;
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
    this.lastStartedAt = now;
    if (this.mode === 'worker') {
      this.inProgress = true;
      this.worker?.postMessage('checkpoint');
      return;
    }
    this.checkpointInline();
  }

  private checkpointInline(): void {
    const reply = passiveCheckpoint(this.db);
    this.counters.inline++;
    this.settle(reply);
    if (reply.kind === 'done' && reply.ms > (this.options.inlineStallMs ?? INLINE_STALL_MS) && this.mode === 'inline' && !this.workerFailed) {
      this.options.logger.info('storage: checkpoints move to a background thread', { path: this.options.path, checkpointMs: Math.round(reply.ms) });
      this.startWorker();
    }
  }

  private startWorker(): void {
    this.mode = 'starting';
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

  private readonly onReply = (reply: CheckpointReply): void => {
    if (reply.kind === 'ready') {
      if (this.mode === 'starting') this.mode = 'worker';
      return;
    }
    this.inProgress = false;
    this.settle(reply);
    if (reply.kind === 'done' && reply.log >= REWIND_FRAMES && this.mode === 'worker') {
      // The log was not rewound for a while: SQLite rewinds it when a commit starts after a
      // checkpoint copied every frame, and under steady load a commit always lands while the
      // worker copies, so the log would grow for as long as the load lasts. The writer copies
      // the frames appended meanwhile itself, between commits (none can land then): the next
      // commit rewinds the log, and journal_size_limit trims the file.
      this.counters.finishedInline++;
      this.checkpointInline();
    }
    this.maybeStart();
  };

  private settle(reply: CheckpointReply): void {
    if (reply.kind === 'failed') {
      this.counters.failed++;
      this.dirty = true;
      this.failLog.emit('storage: checkpoint failed; retried in a second', { path: this.options.path, error: reply.error, failed: this.counters.failed });
    } else if (reply.kind === 'done') {
      this.counters.checkpoints++;
      this.last = { busy: reply.busy, log: reply.log, checkpointed: reply.checkpointed };
      // Frames the writer appended meanwhile, a checkpoint that met a reader, or one that could not
      // get the lock at all (busy, -1/-1): copied next time.
      if (reply.busy !== 0 || reply.log < 0 || reply.checkpointed < reply.log) this.dirty = true;
    }
    if (this.mode === 'inline' && this.dirty) this.maybeStart();
  }

  private fallBack(reason: string): void {
    if (this.mode === 'closed' || this.workerFailed) return;
    this.workerFailed = true;
    this.mode = 'inline';
    this.worker = undefined;
    // A checkpoint the worker took with it still has to happen.
    if (this.inProgress) this.dirty = true;
    this.inProgress = false;
    this.options.logger.warn('storage: checkpoint worker unavailable; checkpoints run in the main thread again', { path: this.options.path, reason });
    this.maybeStart();
  }
}
