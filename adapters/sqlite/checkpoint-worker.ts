/**
 * The checkpoint worker (checkpointer.ts): a thread with its own connection to the gateway's
 * database that copies the write-ahead log into the database file on request. It never writes
 * rows and never changes the schema.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type { CheckpointWorkerData } from './checkpointer';
import { passiveCheckpoint, type CheckpointReply } from './passive-checkpoint';

const { path, sync, journalSizeLimit, closedFlag } = workerData as CheckpointWorkerData;
const port = parentPort;
if (port === null) throw new Error('checkpoint-worker.js runs as a worker thread only');

const db = new Database(path, { fileMustExist: true });
// The same durability as the writer: with synchronous NORMAL or FULL a checkpoint syncs the
// database file before the log may be reused.
db.pragma(`synchronous = ${sync === 'full' ? 'FULL' : 'NORMAL'}`);
db.pragma(`journal_size_limit = ${journalSizeLimit}`);
db.pragma('wal_autocheckpoint = 0');
// A checkpoint that meets the writer's lock gives up at once (PASSIVE): it is retried later.
db.pragma('busy_timeout = 0');
const flag = new Int32Array(closedFlag);

port.on('message', (message: 'checkpoint' | 'close') => {
  if (message === 'close') {
    db.close();
    Atomics.store(flag, 0, 1);
    Atomics.notify(flag, 0);
    port.close();
    return;
  }
  port.postMessage(passiveCheckpoint(db));
});
port.postMessage({ kind: 'ready' } satisfies CheckpointReply);
