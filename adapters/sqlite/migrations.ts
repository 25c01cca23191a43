import type Database from 'better-sqlite3';

/** 'EGWY': marks the file as edgeway's, so a foreign SQLite file is recognised and left alone. */
export const APPLICATION_ID = 0x45475759;

/**
 * Schema migrations, versioned with `PRAGMA user_version`: MIGRATIONS[n] takes a database from
 * version n to n + 1. Append only; never edit a released step. Later steps (retained messages,
 * sessions — issue 4, later increments) go after the outbox.
 */
const MIGRATIONS: readonly ((db: Database.Database) => void)[] = [
  // 1: the outbox. AUTOINCREMENT keeps the highest seq ever used in sqlite_sequence, so seqs never
  // go back after the table was emptied (they are the uplink's Redis stream ids, convention 11).
  // `bytes` before the payload: summing it at open does not read overflow pages of big payloads.
  (db) =>
    db.exec(`CREATE TABLE outbox (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      bytes INTEGER NOT NULL,
      qos INTEGER NOT NULL,
      retain INTEGER NOT NULL,
      arrived_at INTEGER NOT NULL,
      source TEXT NOT NULL,
      topic TEXT NOT NULL,
      payload BLOB NOT NULL
    ) STRICT`),
  // 2: retained messages, one row per topic. MQTT 5 properties as JSON text (null without).
  (db) =>
    db.exec(`CREATE TABLE retained (
      topic TEXT PRIMARY KEY,
      qos INTEGER NOT NULL,
      properties TEXT,
      payload BLOB NOT NULL
    ) STRICT, WITHOUT ROWID`),
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/** Brings a database at `from` to SCHEMA_VERSION in one transaction; no write when it is current. */
export function migrate(db: Database.Database, from: number): void {
  if (from >= SCHEMA_VERSION) return;
  db.transaction(() => {
    for (let v = from; v < SCHEMA_VERSION; v++) MIGRATIONS[v]?.(db);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
    db.pragma(`application_id = ${APPLICATION_ID}`);
  })();
}
