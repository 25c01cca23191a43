/**
 * Public API of the SQLite storage adapter (adapters/sqlite). It implements ports of the broker
 * core and imports from gateway/broker's public index only; gateway/main.ts will wire it.
 */
export { SqliteOutbox, type SqliteOutboxOptions } from './outbox-store';
export { SqliteRetainedStore, type SqliteRetainedStoreOptions } from './retained-store';
export { JOURNAL_SIZE_LIMIT, describeStorageError, openDatabase, type OpenDatabaseOptions, type OpenedDatabase, type SyncMode } from './database';
export { APPLICATION_ID, SCHEMA_VERSION } from './migrations';
