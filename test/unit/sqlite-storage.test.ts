/**
 * SqliteStorage's group commit under failure and load, and the retained store's guard against
 * values SQLite refuses (review findings F and "poison row"):
 * - after a failed commit, arriving changes — however many — do not trigger commit attempts
 *   before the retry delay: a full disk (or a lock) is not hammered at the pace of arrivals;
 * - `durable()` keeps waiting through the failure and resolves once the retry commits;
 * - EARLY_COMMIT_CHANGES pending changes commit without waiting for the end of the window;
 * - a retained message SQLite would refuse is refused at save(), so it cannot fail every later
 *   commit of everything else.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import t, { type Test } from 'tap';
import { EARLY_COMMIT_CHANGES, JOURNAL_SIZE_LIMIT, SqliteOutbox, SqliteRetainedStore, SqliteStorage, type SqliteStorageOptions } from '../../adapters/sqlite';
import type { Message } from '../../gateway/broker';
import { within } from '../helpers/mqtt-client';
import { recordingLogger, tempDir } from '../helpers/sqlite';

/** The storage's documented retry delay after a failed commit (RETRY_AFTER_FAILURE_MS). */
const RETRY_DELAY_MS = 1000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const turns = async (n: number) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

function retained(topic: string, payload = topic): Message {
  return { topic, payload: Buffer.from(payload), qos: 1, retain: true };
}

/** A storage with a retained store attached, opened; closed when the test ends. */
function openStore(t: Test, path: string, options: Partial<SqliteStorageOptions> = {}) {
  const storage = new SqliteStorage({ path, sync: 'normal', flushInterval: 20, ...options });
  const store = new SqliteRetainedStore(storage);
  storage.open();
  t.teardown(() => storage.close(200));
  return { storage, store };
}

function rowsIn(path: string): string[] {
  const db = new Database(path, { readonly: true });
  try {
    return (db.prepare('SELECT topic FROM retained ORDER BY topic').all() as { topic: string }[]).map((r) => r.topic);
  } finally {
    db.close();
  }
}

t.test('after a failed commit, no commit is attempted before the retry delay, however many changes arrive; durable() waits and resolves after the retry', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const { storage, store } = openStore(t, path, { flushInterval: 20, busyTimeoutMs: 20 });
  // Another connection holds the write lock: every commit fails with SQLITE_BUSY after 20 ms.
  const locker = new Database(path);
  t.teardown(() => {
    if (locker.inTransaction) locker.exec('ROLLBACK');
    locker.close();
  });
  locker.exec('BEGIN IMMEDIATE');

  store.save('first', retained('first'));
  let outcome: 'pending' | 'resolved' | 'rejected' = 'pending';
  const durable = storage.durable().then(
    () => void (outcome = 'resolved'),
    (err: unknown) => {
      outcome = 'rejected';
      t.comment(`durable() rejected: ${String(err)}`);
    },
  );
  const deadline = Date.now() + 2000;
  while (storage.counters.failedCommits === 0 && Date.now() < deadline) await sleep(5);
  const failedAt = Date.now();
  t.equal(storage.counters.failedCommits, 1, 'the first commit failed (the database is locked)');

  // Load: 300 changes every 10 ms for ~500 ms — each batch alone is over EARLY_COMMIT_CHANGES.
  t.ok(300 >= EARLY_COMMIT_CHANGES, 'each batch is enough for an early commit');
  while (Date.now() - failedAt < 500) {
    for (let i = 0; i < 300; i++) store.save(`load/${i}`, retained(`load/${i}`, String(Date.now())));
    await sleep(10);
  }
  const elapsed = Date.now() - failedAt;
  t.ok(elapsed < RETRY_DELAY_MS, `the load window (${elapsed} ms) ended before the retry delay`);
  t.equal(storage.counters.failedCommits, 1, 'no further commit attempt during the retry delay, despite the load');
  t.equal(storage.counters.commits, 0, 'and no commit');
  t.equal(outcome, 'pending', 'durable() neither resolved nor rejected: it waits for the retry');

  locker.exec('ROLLBACK'); // the lock is gone: the retry can commit
  await within(durable, 'durable() after the lock is released', 3000);
  const waited = Date.now() - failedAt;
  t.equal(outcome, 'resolved', 'durable() resolved once the retry committed');
  t.ok(waited >= RETRY_DELAY_MS - 50, `the retry came after the delay (${waited} ms after the failure)`);
  t.equal(storage.counters.failedCommits, 1, 'one failure in all');
  t.ok(storage.counters.commits >= 1, 'the retry committed');
  t.notOk(store.hasPending(), 'nothing left pending');
  const rows = rowsIn(path);
  t.equal(rows.length, 301, 'every change is stored: the first one and the 300 load topics');
  t.ok(rows.includes('first'), 'including the change from before the failure');
});

t.test('EARLY_COMMIT_CHANGES pending changes commit at once, not at the end of the window', async (t) => {
  t.equal(EARLY_COMMIT_CHANGES, 256, 'the threshold');
  const dir = tempDir(t);

  const below = openStore(t, join(dir, 'below.db'), { flushInterval: 10_000 });
  for (let i = 0; i < EARLY_COMMIT_CHANGES - 1; i++) below.store.save(`t/${i}`, retained(`t/${i}`));
  await turns(5);
  t.equal(below.storage.counters.commits, 0, `${EARLY_COMMIT_CHANGES - 1} changes wait for the window`);
  t.ok(below.store.hasPending(), 'and stay pending');

  const at = openStore(t, join(dir, 'at.db'), { flushInterval: 10_000 });
  for (let i = 0; i < EARLY_COMMIT_CHANGES; i++) at.store.save(`t/${i}`, retained(`t/${i}`));
  t.equal(at.storage.counters.commits, 0, 'not committed synchronously inside save()');
  await turns(5);
  t.equal(at.storage.counters.commits, 1, `${EARLY_COMMIT_CHANGES} changes committed within a few event-loop turns, long before the 10 s window`);
  t.notOk(at.store.hasPending(), 'nothing pending');
  t.equal(rowsIn(join(dir, 'at.db')).length, EARLY_COMMIT_CHANGES, 'all rows in the database');

  // The same through durable(): the waiter is released by the early commit too.
  for (let i = 0; i < EARLY_COMMIT_CHANGES; i++) at.store.save(`u/${i}`, retained(`u/${i}`));
  let resolved = false;
  void at.storage.durable().then(() => (resolved = true));
  await turns(5);
  t.ok(resolved, 'durable() resolved by the early commit');
  t.equal(at.storage.counters.commits, 2, 'one more commit');
});

t.test('the retained store refuses at save() what SQLite would refuse; later commits still succeed', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const logger = recordingLogger();
  const { storage, store } = openStore(t, path, { flushInterval: 20, logger });

  store.save('ok/1', retained('ok/1'));
  // A BigInt in the properties (JSON cannot encode it) and a payload that is not a Buffer
  // (better-sqlite3 cannot bind an object).
  store.save('bad/bigint', { ...retained('bad/bigint'), properties: { userProperties: { n: 1n as unknown as string } } });
  store.save('bad/payload', { ...retained('bad/payload'), payload: { not: 'a buffer' } as unknown as Buffer });
  t.equal(store.counters.refused, 2, 'both refused, and counted');
  const line = logger.lines.find((l) => l.level === 'error' && /retained/.test(l.msg));
  t.ok(line, 'the refusal is logged as an error');
  t.equal(line?.fields?.topic, 'bad/bigint', 'naming the topic');

  await within(storage.durable(), 'the commit of the good change', 3000);
  t.equal(storage.counters.failedCommits, 0, 'no commit failed');
  t.same(rowsIn(path), ['ok/1'], 'the good change is stored; the refused ones are not');

  store.save('ok/2', retained('ok/2'));
  store.save('ok/1', null);
  await within(storage.durable(), 'a later commit', 3000);
  t.equal(storage.counters.failedCommits, 0, 'later commits succeed too');
  t.same(rowsIn(path), ['ok/2'], 'with their changes');
  t.notOk(store.hasPending(), 'nothing pending');
});

/** Waits until `check` is true (polling), failing the test after `ms`. */
async function until(t: Test, check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check() && Date.now() < deadline) await sleep(10);
  t.ok(check(), what);
}

/**
 * A store whose checkpoints moved to the worker thread (any inline checkpoint counts as slow), with
 * the writer's connection for pragmas.
 */
async function withCheckpointWorker(t: Test) {
  const path = join(tempDir(t), 'edgeway.db');
  const logger = recordingLogger();
  const { storage, store } = openStore(t, path, { logger, inlineCheckpointLimitMs: -1 });
  const checkpointer = storage.checkpointer;
  if (checkpointer === undefined) throw new Error('no checkpointer');
  store.save('warm/up', retained('warm/up'));
  await storage.durable();
  await until(t, () => checkpointer.workerRunning, 5000, 'the first checkpoint ran inline and moved them to the worker');
  t.ok(logger.lines.some((l) => /checkpoints move to a background thread/.test(l.msg)), 'logged');
  const writer = (storage as unknown as { db: Database.Database }).db;
  return { path, logger, storage, store, checkpointer, writer };
}

t.test('quick checkpoints stay on the event loop: no worker thread, the log still copied after commits', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const { storage, store } = openStore(t, path, { inlineCheckpointLimitMs: 60_000 });
  const checkpointer = storage.checkpointer;
  if (checkpointer === undefined) throw new Error('no checkpointer');
  const writer = (storage as unknown as { db: Database.Database }).db;
  t.equal(writer.pragma('wal_autocheckpoint', { simple: true }), 0, "SQLite's automatic checkpoint is off: the checkpointer decides");
  store.save('q/1', retained('q/1', 'x'.repeat(50_000)));
  await storage.durable();
  await until(t, () => checkpointer.counters.checkpoints >= 1 && !checkpointer.pending, 5000, 'a checkpoint ran');
  t.equal(checkpointer.counters.inline, checkpointer.counters.checkpoints, 'inline');
  t.notOk(checkpointer.workerRunning, 'no worker thread');
  t.ok((checkpointer.last?.checkpointed ?? 0) > 10 && checkpointer.last?.checkpointed === checkpointer.last?.log, `the whole log was copied (${JSON.stringify(checkpointer.last)})`);
});

t.test('checkpoints run in a worker thread: the writer never checkpoints, the log is copied into the database', async (t) => {
  const { path, storage, store, checkpointer, writer } = await withCheckpointWorker(t);
  t.equal(writer.pragma('wal_autocheckpoint', { simple: true }), 0, "the writer's automatic checkpoint is off");
  // One commit and nothing after it: its checkpoint still comes (a burst's end gets synced).
  const c0 = checkpointer.counters.checkpoints;
  store.save('a/1', retained('a/1', 'x'.repeat(100_000)));
  await storage.durable();
  await until(t, () => checkpointer.counters.checkpoints > c0, 5000, 'a checkpoint ran');
  t.ok((checkpointer.last?.checkpointed ?? 0) > 20, `the 100 kB value's pages were copied (${JSON.stringify(checkpointer.last)})`);
  // Commits in quick succession: at most one checkpoint per interval, and one after the last.
  const before = checkpointer.counters.checkpoints;
  const inlineBefore = checkpointer.counters.inline;
  for (let i = 0; i < 20; i++) {
    store.save(`a/${i + 2}`, retained(`a/${i + 2}`));
    await storage.durable();
    await sleep(25);
  }
  await until(t, () => !checkpointer.pending, 5000, 'the checkpoint after the last commit ran');
  const after = checkpointer.counters.checkpoints;
  t.ok(after - before >= 1 && after - before <= 3, `about one checkpoint per second of commits (${after - before} for ~0.6 s)`);
  await sleep(1200);
  t.equal(checkpointer.counters.checkpoints, after, 'none while nothing is committed');
  t.equal(checkpointer.counters.inline, inlineBefore, 'all of them in the worker');
  t.equal(checkpointer.counters.failed, 0);
  storage.close();
  t.notOk(existsSync(`${path}-wal`), 'after close the log is gone: the writer closed last and checkpointed it');
  t.equal(rowsIn(path).length, 22, 'everything is in the database');
});

t.test('a checkpoint worker that dies: SQLite checkpoints in the main thread again, logged once; commits go on', async (t) => {
  const { path, logger, store, storage, checkpointer, writer } = await withCheckpointWorker(t);
  const worker = (checkpointer as unknown as { worker: { terminate(): Promise<number> } }).worker;
  await worker.terminate();
  await until(t, () => !checkpointer.workerRunning, 5000, 'the storage noticed');
  t.equal(logger.lines.filter((l) => /checkpoint worker unavailable/.test(l.msg)).length, 1, 'one warning');
  const inline = checkpointer.counters.inline;
  store.save('b/1', retained('b/1'));
  await storage.durable();
  await until(t, () => checkpointer.counters.inline > inline && !checkpointer.pending, 5000, 'checkpoints run inline again');
  t.notOk(checkpointer.workerRunning, 'and stay there');
  t.equal(writer.pragma('wal_autocheckpoint', { simple: true }), 0);
  t.same(rowsIn(path), ['b/1', 'warm/up'], 'commits go on');
});

t.test('steady commits while the worker checkpoints: the log is still rewound, the WAL file stays bounded', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const storage = new SqliteStorage({ path, sync: 'normal', flushInterval: 10, inlineCheckpointLimitMs: -1 });
  const outbox = new SqliteOutbox(storage, { maxMessages: 1_000_000, maxBytes: 1024 ** 3, whenFull: 'drop-oldest' });
  await outbox.open();
  t.teardown(() => outbox.close());
  const checkpointer = storage.checkpointer;
  if (checkpointer === undefined) throw new Error('no checkpointer');
  // Appends every 5 ms (acknowledged behind them, as by a live uplink) for 6 s: a commit lands
  // during nearly every checkpoint in the worker, so none of those copies the whole log.
  const started = Date.now();
  const walMax = [0, 0]; // largest WAL file in the first 2 s, and in the last 2 s
  const load = setInterval(() => {
    const batch = Array.from({ length: 200 }, (_, i) => ({ topic: 'a/b', source: 'c', payload: Buffer.alloc(200, i), qos: 1 as const, retain: false, arrivedAt: Date.now() }));
    // Appends and acks still in flight when the test closes the outbox reject: ignored.
    outbox
      .append(batch)
      .then((seqs) => outbox.ack(((seqs[seqs.length - 1] as number) ?? 0) - 100))
      .catch(() => undefined);
    const size = existsSync(`${path}-wal`) ? statSync(`${path}-wal`).size : 0;
    const elapsed = Date.now() - started;
    if (elapsed < 2000) walMax[0] = Math.max(walMax[0] as number, size);
    if (elapsed > 4000) walMax[1] = Math.max(walMax[1] as number, size);
  }, 5);
  await sleep(6000);
  clearInterval(load);
  const [early, late] = walMax as [number, number];
  t.ok(checkpointer.workerRunning, 'checkpoints ran in the worker');
  t.ok(checkpointer.counters.finishedInline >= 1, `the writer finished worker checkpoints so the log could rewind (${checkpointer.counters.finishedInline})`);
  // Without the rewind the file grows with the load: ~2.5 times as large after 6 s as after 2 s.
  t.ok(late < 2 * Math.max(early, JOURNAL_SIZE_LIMIT), `the WAL file does not grow with the load: ${(early / 1e6).toFixed(1)} MB in the first 2 s, ${(late / 1e6).toFixed(1)} MB in the last 2 s`);
});
