/**
 * Public API of the SQLite storage adapter (adapters/sqlite). It implements ports of the broker
 * core and imports from gateway/broker's public index only; gateway/main.ts wires it.
 */
export { EARLY_COMMIT_CHANGES, SqliteStorage, type SqliteStorageOptions, type StoragePart } from './storage';
export { SEQ_RESERVATION, SqliteOutbox } from './outbox-store';
export { SqliteRetainedStore } from './retained-store';
export { SqliteStateStore } from './state-store';
export { SqliteSessionStore } from './session-store';
export { DiskWriteMeter, readWriteBytes } from './disk-write-meter';
export { JOURNAL_SIZE_LIMIT, describeStorageError, openDatabase, type OpenDatabaseOptions, type OpenedDatabase, type SyncMode } from './database';
export { APPLICATION_ID, SCHEMA_VERSION } from './migrations';
