import type Database from 'better-sqlite3';

/** What a checkpoint reports, on the main thread and from the worker alike. */
export type CheckpointReply =
  | { readonly kind: 'ready' }
  | { readonly kind: 'done'; readonly busy: number; readonly log: number; readonly checkpointed: number; readonly ms: number }
  | { readonly kind: 'failed'; readonly error: string };

/**
 * One `wal_checkpoint(PASSIVE)` on `db`, timed, as a reply. Shared by the writer's connection
 * (checkpointer.ts) and the worker's (checkpoint-worker.ts), which is why it imports nothing of
 * the gateway: the worker's thread loads only this and better-sqlite3.
 */
export function passiveCheckpoint(db: Database.Database): CheckpointReply {
  const started = performance.now();
  try {
    const [row] = db.pragma('wal_checkpoint(PASSIVE)') as { busy: number; log: number; checkpointed: number }[];
    return { kind: 'done', busy: row?.busy ?? 0, log: row?.log ?? 0, checkpointed: row?.checkpointed ?? 0, ms: performance.now() - started };
  } catch (err) {
    return { kind: 'failed', error: err instanceof Error ? err.message : String(err) };
  }
}
