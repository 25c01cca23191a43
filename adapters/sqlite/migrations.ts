import type Database from 'better-sqlite3';
import { OutboxBlockBuilder } from './outbox-block';

/** 'EGWY': marks the file as edgeway's, so a foreign SQLite file is recognised and left alone. */
export const APPLICATION_ID = 0x45475759;

/**
 * Schema migrations, versioned with `PRAGMA user_version`: MIGRATIONS[n] takes a database from
 * version n to n + 1. Append only; never edit a released step: a new table or column is a new
 * step at the end.
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
  // 3: persistent sessions (issue 4). Every child row is keyed by client_id first, so deleting a
  // session is one range delete per table. `disconnected_at` is NULL while the client is connected.
  // Subscription options other than qos are JSON: new MQTT 5 options need no migration.
  // Messages: `qos`/`retain` are how the message goes out to this client, `message_qos`/
  // `message_retain` what the publisher sent (a Message keeps both). `state` 0 queued, 1 publish
  // (waiting for PUBACK/PUBREC), 2 pubrel; `expires_at` NULL = never. It keeps its rowid: rows
  // carry payload blobs, which a WITHOUT ROWID b-tree stores badly.
  (db) =>
    db.exec(`
      CREATE TABLE sessions (
        client_id TEXT PRIMARY KEY,
        expiry_interval INTEGER NOT NULL,
        disconnected_at INTEGER
      ) STRICT, WITHOUT ROWID;
      CREATE TABLE session_subscriptions (
        client_id TEXT NOT NULL,
        filter TEXT NOT NULL,
        qos INTEGER NOT NULL,
        options TEXT NOT NULL,
        PRIMARY KEY (client_id, filter)
      ) STRICT, WITHOUT ROWID;
      CREATE TABLE session_messages (
        client_id TEXT NOT NULL,
        ord INTEGER NOT NULL,
        state INTEGER NOT NULL,
        packet_id INTEGER NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        message_qos INTEGER NOT NULL,
        message_retain INTEGER NOT NULL,
        topic TEXT NOT NULL,
        properties TEXT,
        expires_at INTEGER,
        payload BLOB NOT NULL,
        PRIMARY KEY (client_id, ord)
      ) STRICT;
      CREATE TABLE session_incoming_qos2 (
        client_id TEXT NOT NULL,
        packet_id INTEGER NOT NULL,
        PRIMARY KEY (client_id, packet_id)
      ) STRICT, WITHOUT ROWID;
    `),
  // 4: small named values of adapters (the uplink's stream-id epoch, the downlink's last entry id),
  // written in the same group commit as everything else.
  (db) => db.exec(`CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT, WITHOUT ROWID`),
  // 5: the outbox in blocks (outbox-block.ts): a row holds a run of consecutive entries instead of
  // one entry. `last_seq` is the key: the block holding seq s is the first with last_seq >= s.
  // `bytes` is the logical size of all its entries (what the bounds count). `outbox_head` holds
  // the highest seq that is gone (acknowledged or dropped): a block's entries up to it no longer
  // count, and it keeps seqs increasing after the queue emptied (as sqlite_sequence did for the
  // table of step 1, whose value is kept in `used`). The rows of step 1 are converted and that
  // table dropped.
  migrateOutboxToBlocks,
];

function migrateOutboxToBlocks(db: Database.Database): void {
  db.exec(`
    CREATE TABLE outbox_blocks (
      last_seq INTEGER PRIMARY KEY,
      first_seq INTEGER NOT NULL,
      bytes INTEGER NOT NULL,
      data BLOB NOT NULL
    ) STRICT;
    CREATE TABLE outbox_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, used INTEGER NOT NULL) STRICT;
  `);
  // `used`: the highest seq the old table ever handed out (sqlite_sequence), which new seqs must
  // stay above even when its newest rows are gone.
  const used = db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").pluck().get() as number | undefined;
  const oldest = db.prepare('SELECT min(seq) FROM outbox').pluck().get() as number | null;
  db.prepare('INSERT INTO outbox_head (id, seq, used) VALUES (1, ?, ?)').run(oldest === null ? (used ?? 0) : oldest - 1, used ?? 0);
  const page = db.prepare('SELECT seq, qos, retain, arrived_at, source, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT 10000');
  const insert = db.prepare('INSERT INTO outbox_blocks (last_seq, first_seq, bytes, data) VALUES (?, ?, ?, ?)');
  let block: { first: number; last: number; builder: OutboxBlockBuilder } | undefined;
  const store = () => {
    if (block !== undefined) insert.run(block.last, block.first, block.builder.bytes, block.builder.finish());
    block = undefined;
  };
  // Page by page: better-sqlite3 cannot run the INSERT while a SELECT on the same connection iterates.
  for (let after = 0; ; ) {
    const rows = page.all(after) as { seq: number; qos: number; retain: number; arrived_at: number; source: string; topic: string; payload: Buffer }[];
    if (rows.length === 0) break;
    for (const r of rows) {
      // A block holds consecutive seqs only: the old table could have gaps (refused or dropped entries).
      if (block !== undefined && (block.builder.full || r.seq !== block.last + 1)) store();
      block ??= { first: r.seq, last: r.seq - 1, builder: new OutboxBlockBuilder() };
      block.builder.add({ topic: r.topic, payload: r.payload, qos: r.qos as 0 | 1 | 2, retain: r.retain === 1, arrivedAt: r.arrived_at, source: r.source });
      block.last = r.seq;
    }
    after = (rows[rows.length - 1] as { seq: number }).seq;
  }
  store();
  db.exec('DROP TABLE outbox');
}

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
