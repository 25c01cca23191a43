import { accessSync, constants, existsSync, mkdirSync, renameSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { errorMessage, StorageError, type Logger } from '../../gateway/broker';
import { APPLICATION_ID, SCHEMA_VERSION, migrate } from './migrations';

export type SyncMode = 'normal' | 'full';
export type SqliteDatabase = Database.Database;

/**
 * WAL file kept at most this large after a checkpoint (DESIGN.md convention 10): without it the
 * WAL stays at its high-water mark forever, and a long outage could leave hundreds of MB behind.
 */
export const JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024;
const BUSY_TIMEOUT_MS = 2000;

export interface OpenDatabaseOptions {
  readonly path: string;
  readonly sync: SyncMode;
  readonly logger: Logger;
  /**
   * Runs after the schema is in place, inside the quarantine guard: a store reads what it needs at
   * open (counts, last seq) here, so corruption found by those reads also moves the file aside.
   */
  readonly verify?: (db: SqliteDatabase) => void;
  /** For the suffix of a file moved aside; tests pin it. */
  readonly now?: () => Date;
  /** How long a statement waits for a lock held by another process; default 2000 ms. */
  readonly busyTimeoutMs?: number;
}

export interface OpenedDatabase {
  readonly db: SqliteDatabase;
  /** Where an unusable file was moved, when that happened during this open. */
  readonly movedAside?: string;
}

type Unusable = 'corrupt' | 'foreign' | 'newer';

/** A file that is not (or no longer) an edgeway database this version can use. */
class UnusableDatabase extends Error {
  constructor(
    readonly kind: Unusable,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Opens (creating the folder and file if missing) and migrates the database. A corrupt file, a
 * file that is not an edgeway database, or one written by a newer edgeway (higher user_version)
 * is moved aside — renamed with a timestamp, never deleted, so nothing is lost to a downgrade or a
 * bad guess — and a fresh database is started. Anything else (permissions, read-only file system,
 * I/O errors) is a `StorageError` with code EDGEWAY_ERR_STORAGE_OPEN: moving a file aside would not
 * help, and the caller keeps live routing running without storage.
 */
export function openDatabase(options: OpenDatabaseOptions): OpenedDatabase {
  const { path } = options;
  try {
    mkdirSync(dirname(path), { recursive: true });
    // SQLite silently falls back to read-only for a write-protected file (even for root with
    // `chattr +i`), and every commit would fail later: refuse it here, with the reason.
    if (existsSync(path)) accessSync(path, constants.W_OK);
  } catch (err) {
    throw openError(path, err);
  }
  let problem: UnusableDatabase | undefined;
  try {
    problem = inspect(path);
  } catch (err) {
    throw openError(path, err);
  }
  let movedAside: string | undefined;
  if (problem !== undefined) movedAside = quarantine(options, problem);
  try {
    return { db: openAndMigrate(options), movedAside };
  } catch (err) {
    // Corruption deeper in the file than the schema (found by `verify`): same treatment, once.
    if (movedAside !== undefined || !isCorruption(err)) throw openError(path, err);
    movedAside = quarantine(options, new UnusableDatabase('corrupt', describeStorageError(err)));
    try {
      return { db: openAndMigrate(options), movedAside };
    } catch (again) {
      throw openError(path, again);
    }
  }
}

/**
 * Looks at an existing file through a read-only connection, which neither checkpoints nor deletes
 * its WAL on close: a file we will move aside is moved exactly as it was found.
 */
function inspect(path: string): UnusableDatabase | undefined {
  if (!existsSync(path) || statSync(path).size === 0) return undefined;
  let db: SqliteDatabase | undefined;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true });
    const appId = db.pragma('application_id', { simple: true }) as number;
    const version = db.pragma('user_version', { simple: true }) as number;
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").pluck().all() as string[];
    if (appId !== APPLICATION_ID && (appId !== 0 || version !== 0 || tables.length > 0)) {
      return new UnusableDatabase('foreign', `not an edgeway database (application_id ${appId}, user_version ${version}, tables: ${tables.join(', ') || 'none'})`);
    }
    if (version > SCHEMA_VERSION) {
      return new UnusableDatabase('newer', `schema version ${version} was written by a newer edgeway (this one knows up to ${SCHEMA_VERSION})`);
    }
    return undefined;
  } catch (err) {
    if (isCorruption(err)) return new UnusableDatabase('corrupt', describeStorageError(err));
    throw err;
  } finally {
    db?.close();
  }
}

function quarantine(options: OpenDatabaseOptions, problem: UnusableDatabase): string {
  let movedAside: string;
  try {
    movedAside = moveAside(options.path, problem.kind, (options.now ?? (() => new Date()))());
  } catch (renameErr) {
    throw openError(options.path, renameErr, `the database is unusable (${problem.message}) and could not be moved aside`);
  }
  options.logger.error('storage: database unusable, moved aside and starting a fresh one', {
    path: options.path,
    kind: problem.kind,
    reason: problem.message,
    movedTo: movedAside,
  });
  return movedAside;
}

function openAndMigrate(options: OpenDatabaseOptions): SqliteDatabase {
  const db = new Database(options.path, { timeout: options.busyTimeoutMs ?? BUSY_TIMEOUT_MS });
  try {
    // Set on every open (convention 10): `synchronous` is per connection, not stored in the file.
    const mode = db.pragma('journal_mode = WAL', { simple: true }) as string;
    if (mode !== 'wal') throw new Error(`cannot switch to WAL mode (journal_mode is ${mode})`);
    db.pragma(`synchronous = ${options.sync === 'full' ? 'FULL' : 'NORMAL'}`);
    db.pragma(`journal_size_limit = ${JOURNAL_SIZE_LIMIT}`);
    db.pragma('temp_store = MEMORY');
    migrate(db, db.pragma('user_version', { simple: true }) as number);
    options.verify?.(db);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

function isCorruption(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && (code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT'));
}

/** `edgeway.db` → `edgeway.db.corrupt-20240520T101500Z` (with its -wal and -shm files). */
function moveAside(path: string, kind: Unusable, now: Date): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  let target = `${path}.${kind}-${stamp}`;
  for (let n = 1; existsSync(target); n++) target = `${path}.${kind}-${stamp}-${n}`;
  renameSync(path, target);
  // The WAL belongs to that file: left in place it would be replayed into (or confuse) the new one.
  for (const suffix of ['-wal', '-shm']) {
    if (existsSync(path + suffix)) renameSync(path + suffix, target + suffix);
  }
  return target;
}

/** A clear reason for the log: the errno / SQLite code in words, then the raw message. */
export function describeStorageError(err: unknown): string {
  const code = String((err as { code?: unknown } | null)?.code ?? '');
  const message = errorMessage(err);
  const words =
    code === 'SQLITE_FULL' || code === 'ENOSPC'
      ? 'disk full'
      : code.startsWith('SQLITE_READONLY') || code === 'EROFS'
        ? 'read-only file or file system'
        : code.startsWith('SQLITE_CANTOPEN') || code === 'EACCES' || code === 'EPERM'
          ? 'cannot open or create the file (permissions or read-only folder)'
          : code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')
            ? 'database locked by another process'
            : code.startsWith('SQLITE_IOERR') || code === 'EIO'
              ? 'I/O error'
              : undefined;
  return words === undefined ? `${message}${code ? ` (${code})` : ''}` : `${words}: ${message} (${code})`;
}

function openError(path: string, err: unknown, prefix?: string): StorageError {
  const reason = describeStorageError(err);
  return new StorageError('EDGEWAY_ERR_STORAGE_OPEN', `cannot open the database ${path}: ${prefix ? `${prefix}: ` : ''}${reason}`, { cause: err });
}
