import type { SqliteDatabase } from './database';
import type { SqliteStorage, StoragePart } from './storage';

/**
 * Small named values that adapters keep across restarts (the uplink's stream-id epoch, the
 * downlink's last consumed entry id), a part of the gateway's `SqliteStorage`: a `set` is written
 * in the same group commit as the messages it goes with — so a downlink command queued for a
 * persistent session and the id that marks it consumed are stored together or not at all.
 * Reads come from memory (everything is loaded at open; there are a handful of keys).
 */
export class SqliteStateStore implements StoragePart {
  private readonly values = new Map<string, string>();
  private readonly pending = new Map<string, string>();
  private upsert: ((key: string, value: string) => void) | undefined;

  constructor(private readonly storage: SqliteStorage) {
    storage.attach(this);
  }

  get(key: string): string | undefined {
    return this.values.get(key);
  }

  /** Sets `key`; durable with the next commit (`storage.durable()` waits for it). */
  set(key: string, value: string): void {
    if (this.values.get(key) === value) return;
    this.values.set(key, value);
    if (this.upsert === undefined) return;
    this.pending.set(key, value);
    this.storage.schedule();
  }

  /** Resolves once every `set` so far is committed (with everything else pending). */
  durable(): Promise<void> {
    return this.storage.durable();
  }

  opened(db: SqliteDatabase): void {
    const rows = db.prepare('SELECT key, value FROM state').all() as { key: string; value: string }[];
    for (const row of rows) this.values.set(row.key, row.value);
    const upsert = db.prepare('INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value');
    this.upsert = (key, value) => upsert.run(key, value);
  }

  hasPending(): boolean {
    return this.pending.size > 0;
  }

  write(): void {
    for (const [key, value] of this.pending) this.upsert?.(key, value);
  }

  committed(): void {
    // The transaction ran synchronously: what is pending now is exactly what it wrote.
    this.pending.clear();
  }

  failed(): void {
    // kept pending; the storage retries
  }

  closed(): void {
    this.upsert = undefined;
    this.pending.clear();
  }
}
