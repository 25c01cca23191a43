import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import t, { type Test } from 'tap';
import { APPLICATION_ID, JOURNAL_SIZE_LIMIT, SCHEMA_VERSION, SEQ_RESERVATION, SqliteOutbox, SqliteStorage, openDatabase, type SqliteStorageOptions } from '../../adapters/sqlite';
import { silentLogger, type OutboxInput, type OutboxLimits } from '../../gateway/broker';
import { startProcess, waitForOutput } from '../helpers/processes';
import { recordingLogger, smallFileSystem, tempDir } from '../helpers/sqlite';
import { sizedEntry } from '../helpers/outbox-contract';

const LIMITS = { maxMessages: 1_000_000, maxBytes: 1024 ** 3, whenFull: 'drop-oldest' } as const;
const FIXED_NOW = () => new Date('2024-05-20T10:15:00.123Z');

function outboxAt(path: string, options: Partial<SqliteStorageOptions> & { limits?: OutboxLimits } = {}): SqliteOutbox {
  const { limits = LIMITS, ...storage } = options;
  return new SqliteOutbox(new SqliteStorage({ path, sync: 'normal', flushInterval: 20, now: FIXED_NOW, ...storage }), limits);
}

const isRoot = process.getuid?.() === 0;

/**
 * Makes a file or folder unwritable for this process: chmod for a normal user; root ignores
 * permissions, so `chattr +i` (immutable) there. Returns the undo, or undefined if impossible.
 */
function makeReadOnly(path: string): (() => void) | undefined {
  if (isRoot) {
    if (spawnSync('chattr', ['+i', path]).status !== 0) return undefined;
    return () => void spawnSync('chattr', ['-i', path]);
  }
  const mode = statSync(path).mode & 0o777;
  chmodSync(path, statSync(path).isDirectory() ? 0o555 : 0o444);
  return () => chmodSync(path, mode);
}

t.test('constructor has no side effects; open creates the folder; pragmas set on every open', async (t) => {
  const path = join(tempDir(t), 'a', 'b', 'edgeway.db');
  const outbox = outboxAt(path);
  t.notOk(existsSync(join(path, '..')), 'nothing created by the constructor');
  await outbox.open();
  t.ok(existsSync(path), 'folder and file created by open()');
  await outbox.close();
  for (const sync of ['normal', 'full'] as const) {
    const { db } = openDatabase({ path, sync, logger: silentLogger });
    t.equal(db.pragma('journal_mode', { simple: true }), 'wal', 'WAL mode');
    t.equal(db.pragma('synchronous', { simple: true }), sync === 'full' ? 2 : 1, `synchronous ${sync}`);
    t.equal(db.pragma('journal_size_limit', { simple: true }), JOURNAL_SIZE_LIMIT, 'journal_size_limit');
    t.equal(db.pragma('user_version', { simple: true }), SCHEMA_VERSION, 'schema version');
    t.equal(db.pragma('application_id', { simple: true }), APPLICATION_ID, 'application id');
    db.close();
  }
});

t.test('group commit: many appends in one window are one transaction; idle means no write', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const outbox = outboxAt(path, { flushInterval: 30 });
  t.teardown(() => outbox.close());
  await outbox.open();
  const watcher = new Database(path, { readonly: true });
  t.teardown(() => watcher.close());
  const version = () => watcher.pragma('data_version', { simple: true }) as number;
  const v0 = version();
  const calls = Array.from({ length: 1000 }, (_, i) => outbox.append([sizedEntry(i)]));
  t.equal(outbox.stats().pending, 1000, 'buffered, not written yet');
  t.equal(version(), v0, 'nothing committed before the window ends');
  await Promise.all(calls);
  t.equal(outbox.stats().commits, 1, '1000 appends → 1 commit');
  t.not(version(), v0, 'another connection sees the commit');
  t.equal(watcher.prepare('SELECT sum(last_seq - first_seq + 1) FROM outbox_blocks').pluck().get(), 1000, 'all 1000 entries visible after the promise resolved');

  const walSize = statSync(`${path}-wal`).size;
  const v1 = version();
  const { commits } = outbox.stats();
  await new Promise((r) => setTimeout(r, 150));
  t.equal(outbox.stats().commits, commits, 'no commit while idle');
  t.equal(statSync(`${path}-wal`).size, walSize, 'WAL unchanged while idle');
  t.equal(version(), v1, 'no other commit while idle');
  t.equal(outbox.read(0, 10).length, 10, 'reading does not write either');
  await new Promise((r) => setTimeout(r, 60));
  t.equal(version(), v1, 'still no commit after reading');
});

t.test('flushInterval 0: one transaction per append', async (t) => {
  const outbox = outboxAt(join(tempDir(t), 'edgeway.db'), { flushInterval: 0 });
  t.teardown(() => outbox.close());
  await outbox.open();
  await Promise.all(Array.from({ length: 50 }, (_, i) => outbox.append([sizedEntry(i)])));
  t.equal(outbox.stats().commits, 50);
});

t.test('close() commits what is pending; a later open sees it', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const outbox = outboxAt(path, { flushInterval: 60_000 });
  await outbox.open();
  const appended = outbox.append([sizedEntry(1), sizedEntry(2)]);
  const acked = outbox.ack(0);
  t.equal(outbox.stats().pending, 2);
  await outbox.close();
  t.same(await appended, [1, 2], 'the pending append resolved with its seqs');
  await acked;
  const again = outboxAt(path);
  t.teardown(() => again.close());
  await again.open();
  t.equal(again.read(0, 10).length, 2, 'both entries are on disk');
});

t.test('a corrupt file (random bytes) is moved aside, never deleted, and a fresh one started', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'edgeway.db');
  const junk = Buffer.alloc(8192, 0x5a);
  writeFileSync(path, junk);
  writeFileSync(`${path}-wal`, 'stale wal');
  const logger = recordingLogger();
  const outbox = outboxAt(path, { logger });
  t.teardown(() => outbox.close());
  await outbox.open();
  const aside = `${path}.corrupt-20240520T101500Z`;
  t.ok(existsSync(aside), 'renamed with a timestamp suffix');
  t.same(readFileSync(aside), junk, 'its bytes untouched');
  t.equal(readFileSync(`${aside}-wal`, 'utf8'), 'stale wal', 'its WAL moved along');
  const line = logger.lines.find((l) => l.level === 'error');
  t.match(line, { msg: /moved aside/, fields: { kind: 'corrupt', movedTo: aside, reason: /not a database/ } }, 'one clear error line');
  t.same(await outbox.append([sizedEntry(1)]), [1], 'the fresh database works');
});

t.test('a foreign SQLite file is moved aside', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const other = new Database(path);
  other.exec("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL); INSERT INTO invoices VALUES (1, 9.5)");
  other.close();
  const logger = recordingLogger();
  const outbox = outboxAt(path, { logger });
  t.teardown(() => outbox.close());
  await outbox.open();
  const aside = `${path}.foreign-20240520T101500Z`;
  const check = new Database(aside, { readonly: true });
  t.equal(check.prepare('SELECT total FROM invoices').pluck().get(), 9.5, 'the foreign data is intact');
  check.close();
  t.match(logger.lines.find((l) => l.level === 'error'), { fields: { kind: 'foreign', reason: /invoices/ } });
  t.equal(outbox.stats().size, 0, 'started fresh');
});

t.test('a database from a newer edgeway (higher user_version) is moved aside', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const first = outboxAt(path);
  await first.open();
  await first.append([sizedEntry(1)]);
  await first.close();
  const db = new Database(path);
  db.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
  db.close();
  const logger = recordingLogger();
  const second = outboxAt(path, { logger });
  t.teardown(() => second.close());
  await second.open();
  t.ok(existsSync(`${path}.newer-20240520T101500Z`), 'moved aside');
  t.match(logger.lines.find((l) => l.level === 'error'), { fields: { kind: 'newer', reason: /newer edgeway/ } });
  // A second bad file at the same second does not overwrite the first one moved aside.
  await second.close();
  const db2 = new Database(path);
  db2.pragma(`user_version = ${SCHEMA_VERSION + 5}`);
  db2.close();
  const third = outboxAt(path);
  t.teardown(() => third.close());
  await third.open();
  t.ok(existsSync(`${path}.newer-20240520T101500Z-1`), 'a numbered suffix when the name is taken');
});

t.test('a read-only folder: open rejects with a clear, logged error; nothing moved aside', async (t) => {
  const dir = tempDir(t);
  const undo = makeReadOnly(dir);
  if (undo === undefined) return t.plan(0, 'cannot make a folder read-only here');
  try {
    const logger = recordingLogger();
    const outbox = outboxAt(join(dir, 'edgeway.db'), { logger });
    await t.rejects(outbox.open(), { code: 'EDGEWAY_ERR_STORAGE_OPEN', message: /cannot open/ });
    t.match(logger.lines.find((l) => l.level === 'error'), { msg: /cannot open the database/ });
    await t.rejects(outbox.append([sizedEntry(1)]), { code: 'EDGEWAY_ERR_STORAGE_CLOSED' }, 'appends reject, nothing throws');
    await outbox.close();
  } finally {
    undo();
  }
  t.same(readdirSync(dir), [], 'nothing created or moved');
});

t.test('a read-only database file: open rejects, the file is not moved aside', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'edgeway.db');
  const first = outboxAt(path);
  await first.open();
  await first.append([sizedEntry(1)]);
  await first.close();
  const undo = makeReadOnly(path);
  if (undo === undefined) return t.plan(0, 'cannot make a file read-only here');
  try {
    const logger = recordingLogger();
    const outbox = outboxAt(path, { logger });
    await t.rejects(outbox.open(), { code: 'EDGEWAY_ERR_STORAGE_OPEN' });
    t.match(logger.lines.find((l) => l.level === 'error'), { fields: { error: /read-only|cannot open/ } });
    await outbox.close();
  } finally {
    undo();
  }
  t.notOk(
    readdirSync(dir).some((f) => f.includes('corrupt') || f.includes('foreign')),
    'a permission problem never moves the data aside',
  );
});

t.test('a commit that fails (database locked) is logged, counted and retried; the append waits for it', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const logger = recordingLogger();
  const outbox = outboxAt(path, { logger, busyTimeoutMs: 50, flushInterval: 5 });
  t.teardown(() => outbox.close());
  await outbox.open();
  const locker = new Database(path);
  t.teardown(() => locker.close());
  locker.exec('BEGIN EXCLUSIVE');
  let settled = false;
  const appended = outbox.append([sizedEntry(1), sizedEntry(2)]).finally(() => (settled = true));
  await new Promise((r) => setTimeout(r, 300));
  t.notOk(settled, 'the append neither resolves nor rejects while the commit fails');
  t.match(outbox.stats(), { size: 0, commits: 0, pending: 2 });
  t.ok(outbox.stats().failed >= 1, 'the failed commit is counted');
  t.match(logger.lines.find((l) => l.level === 'error'), { msg: /commit failed; changes kept in memory and retried/, fields: { failedCommits: 1, error: /locked/ } });
  const more = outbox.append([sizedEntry(3)]); // arrives while failing: queued behind
  locker.exec('ROLLBACK');
  const seqs = [...(await appended), ...(await more)];
  t.equal(seqs.length, 3, 'both appends resolve once a retry commits');
  t.same(outbox.read(0, 10).map((e) => e.seq), seqs, 'every entry stored once, in order');
});

t.test('disk full on a real (tmpfs) file system: logged, retried, no crash, nothing lost once space is free', async (t) => {
  const small = smallFileSystem(t, '1m');
  if (typeof small === 'string') return t.plan(0, small);
  const dir = small.dir;
  const logger = recordingLogger();
  const outbox = outboxAt(join(dir, 'edgeway.db'), { logger, flushInterval: 1 });
  try {
    await outbox.open();
    writeFileSync(join(dir, 'filler'), Buffer.alloc(600 * 1024));
    // Append until a commit fails; the append that hit it keeps waiting.
    let waiting: Promise<(number | null)[]> | undefined;
    let appended = 0;
    for (let i = 0; i < 2000 && waiting === undefined; i++) {
      const batch = outbox.append(Array.from({ length: 20 }, (_, k) => sizedEntry(i * 20 + k, 1024)));
      appended += 20;
      const done = await Promise.race([batch.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 200))]);
      if (!done) waiting = batch;
    }
    t.ok(waiting !== undefined, 'the disk filled up');
    t.ok(outbox.stats().failed >= 1, 'the failed commit is counted');
    t.match(logger.lines.find((l) => l.level === 'error'), { msg: /commit failed/, fields: { error: /disk full/ } });
    rmSync(join(dir, 'filler'));
    const seqs = await (waiting as Promise<(number | null)[]>);
    t.ok(seqs.every((s) => typeof s === 'number'), 'the waiting append resolves once space is free');
    t.equal(outbox.stats().size, appended, 'every entry appended is stored: nothing was given up');
    t.equal(outbox.read(0, 100_000).length, appended);
  } finally {
    await outbox.close();
  }
});

t.test('kill -9 of a real child process: every acknowledged append is there, once, in order', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const child = startProcess(t, process.execPath, [join(__dirname, '..', 'helpers', 'outbox-writer-child.js'), path, '5'], 20_000);
  await waitForOutput(() => child.stdout, /^ready$/m, 10_000, 'the writer to open the outbox');
  // Thousands of acknowledged entries, then the kill lands in the middle of further commits.
  const acknowledgedCount = () => child.stdout.split('\n').filter((l) => l.startsWith('ok ')).length;
  const deadline = Date.now() + 10_000;
  while (acknowledgedCount() < 400 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  child.child.kill('SIGKILL');
  const exit = await child.exited;
  t.equal(exit.signal, 'SIGKILL', 'killed mid-write');

  // Only complete lines: a line cut by the kill was not acknowledged.
  const expected = new Map<number, string>();
  for (const line of child.stdout.split('\n').filter((l) => /^ok \d+ \d+ \d+$/.test(l))) {
    const [first, last, index] = line.split(' ').slice(1).map(Number) as [number, number, number];
    for (let s = first; s <= last; s++) expected.set(s, `p${index + s - first}`);
  }
  t.ok(expected.size >= 2000, `${expected.size} acknowledged entries before the kill`);

  const outbox = outboxAt(path);
  t.teardown(() => outbox.close());
  await outbox.open();
  const rows = outbox.read(0, 10_000_000);
  const seqs = rows.map((r) => r.seq);
  t.ok(seqs.every((s, i) => i === 0 || s > (seqs[i - 1] as number)), 'strictly increasing seqs: in order, none twice');
  const payloads = rows.map((r) => r.payload.toString());
  t.equal(new Set(payloads).size, payloads.length, 'no payload stored twice');
  const bySeq = new Map(rows.map((r) => [r.seq, r.payload.toString()]));
  const missing = [...expected].filter(([seq, payload]) => bySeq.get(seq) !== payload);
  t.same(missing, [], 'every acknowledged entry is present with its payload');
  t.ok(rows.length >= expected.size, 'possibly more (committed, ack not printed yet), never fewer');
  const [next] = await outbox.append([sizedEntry(0)]);
  t.ok((next as number) > (seqs[seqs.length - 1] ?? 0), 'seqs continue after the crash');
});

/** A database as edgeway's schema 4 left it: one row per entry in the table `outbox`. */
function schema4Database(path: string, rows: { seq: number; payload: string }[], sequence: number): void {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.exec(`CREATE TABLE outbox (
      seq INTEGER PRIMARY KEY AUTOINCREMENT, bytes INTEGER NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,
      arrived_at INTEGER NOT NULL, source TEXT NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL) STRICT`);
  const insert = db.prepare('INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
  db.transaction(() => {
    for (const r of rows) insert.run(r.seq, 7 + r.payload.length, r.seq % 3, r.seq % 2, 1_700_000_000_000 + r.seq, `src${r.seq % 4}`, 'a/b', Buffer.from(r.payload));
    db.prepare("UPDATE sqlite_sequence SET seq = ? WHERE name = 'outbox'").run(sequence);
  })();
  db.pragma('user_version = 4');
  db.pragma(`application_id = ${APPLICATION_ID}`);
  db.close();
}

t.test('migration from one row per entry (schema 4) to blocks keeps every entry, the gaps and the sequence', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  // 1500 consecutive seqs (more than one block), then a gap, then a few more.
  const seqs = [...Array.from({ length: 1500 }, (_, i) => 101 + i), 1700, 1701, 1750];
  schema4Database(path, seqs.map((seq) => ({ seq, payload: `p${seq}` })), 1750);
  const outbox = outboxAt(path);
  t.teardown(() => outbox.close());
  await outbox.open();
  const entries = outbox.read(0, 10_000);
  t.same(entries.map((e) => e.seq), seqs, 'every seq, in order, gaps kept');
  t.same(entries[3], { seq: 104, topic: 'a/b', payload: Buffer.from('p104'), qos: 104 % 3, retain: false, arrivedAt: 1_700_000_000_104, source: 'src0' }, 'every field');
  t.match(outbox.stats(), { size: seqs.length, bytes: seqs.reduce((s, q) => s + 'a/b'.length + 'src0'.length + `p${q}`.length, 0), lastSeq: 1750 });
  const check = new Database(path, { readonly: true });
  t.teardown(() => check.close());
  t.equal(check.prepare("SELECT count(*) FROM sqlite_master WHERE name = 'outbox'").pluck().get(), 0, 'the old table is gone');
  t.ok((check.prepare('SELECT count(*) FROM outbox_blocks').pluck().get() as number) >= 3, 'blocks split at the gaps and at the block size');
  t.same(await outbox.append([sizedEntry(1)]), [1751], 'seqs continue after the highest');
  await outbox.ack(1600);
  t.same(outbox.read(0, 3).map((e) => e.seq), [1700, 1701, 1750], 'an ack across migrated blocks');
});

t.test('migration keeps the sequence above the newest row when the newest rows were gone', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  schema4Database(path, [{ seq: 10, payload: 'a' }, { seq: 11, payload: 'b' }], 50);
  const outbox = outboxAt(path);
  t.teardown(() => outbox.close());
  await outbox.open();
  t.match(outbox.stats(), { size: 2, lastSeq: 50 });
  t.same(await outbox.append([sizedEntry(1)]), [51], 'never a seq the old table handed out');
  t.same(outbox.read(0, 10).map((e) => e.seq), [10, 11, 51]);
});

t.test('migration of an emptied outbox keeps the sequence: the next seq is above every one used', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  schema4Database(path, [{ seq: 42, payload: 'x' }], 42);
  const db = new Database(path);
  db.exec('DELETE FROM outbox');
  db.close();
  const outbox = outboxAt(path);
  t.teardown(() => outbox.close());
  await outbox.open();
  t.match(outbox.stats(), { size: 0, bytes: 0, lastSeq: 42 });
  t.same(await outbox.append([sizedEntry(1)]), [43]);
});

t.test('while commits fail, drop-oldest keeps pending entries within the bounds (plus one block) and counts exactly', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const limits = { maxMessages: 1500, maxBytes: 1024 ** 3, whenFull: 'drop-oldest' } as const;
  const outbox = outboxAt(path, { limits, busyTimeoutMs: 20, flushInterval: 5 });
  t.teardown(() => outbox.close());
  await outbox.open();
  await outbox.append(Array.from({ length: 300 }, (_, i) => sizedEntry(i)));
  const locker = new Database(path);
  t.teardown(() => locker.close());
  locker.exec('BEGIN EXCLUSIVE');
  const appends: Promise<(number | null)[]>[] = [];
  for (let batch = 0; batch < 6; batch++) {
    appends.push(outbox.append(Array.from({ length: 1000 }, (_, i) => sizedEntry(300 + batch * 1000 + i))));
    await new Promise((r) => setTimeout(r, 30));
  }
  const { pending, droppedOldest } = outbox.stats();
  t.ok(pending <= 1500 + 1024, `pending ${pending}: the bound plus at most one block`);
  t.ok(droppedOldest > 0, 'whole blocks that could not be kept were dropped while failing');
  locker.exec('ROLLBACK');
  await Promise.all(appends);
  const stats = outbox.stats();
  const kept = outbox.read(0, 10_000).map((e) => Number(/^#(\d+)#/.exec(e.payload.toString('latin1'))?.[1]));
  t.same(kept, Array.from({ length: 1500 }, (_, i) => 6300 - 1500 + i), 'exactly the newest 1500, in order');
  t.equal(stats.size, 1500);
  t.equal(stats.droppedOldest, 6300 - 1500, 'every dropped entry counted once');
  t.equal(stats.appended, 6300);
});

t.test('a damaged block is logged and skipped; the entries after it still flow and acks pass it', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const logger = recordingLogger();
  const outbox = outboxAt(path, { logger, flushInterval: 5 });
  t.teardown(() => outbox.close());
  await outbox.open();
  const first = (await outbox.append([sizedEntry(1), sizedEntry(2)])) as number[];
  const second = (await outbox.append([sizedEntry(3), sizedEntry(4)])) as number[];
  const third = (await outbox.append([sizedEntry(5)])) as number[];
  const db = new Database(path);
  db.prepare('UPDATE outbox_blocks SET data = ? WHERE last_seq = ?').run(Buffer.from([1, 0x09, 0, 99]), second[1]);
  db.close();
  t.same(outbox.read(0, 10).map((e) => e.seq), [...first, ...third], 'the damaged block is skipped');
  t.match(logger.lines.find((l) => l.level === 'error'), { msg: /outbox block cannot be read/, fields: { firstSeq: second[0] } });
  await outbox.ack(second[0] as number); // inside the damaged block: sizes are estimated, the commit succeeds
  await outbox.ack(third[0] as number);
  t.match(outbox.stats(), { size: 0, bytes: 0 }, 'emptied: nothing stuck behind it');
});

/** An outbox whose commits the test makes (flush), on a storage it can reach. */
async function manualOutbox(t: Test, path: string): Promise<{ outbox: SqliteOutbox; storage: SqliteStorage }> {
  const storage = new SqliteStorage({ path, sync: 'normal', flushInterval: 60_000, now: FIXED_NOW });
  const outbox = new SqliteOutbox(storage, LIMITS);
  t.teardown(() => outbox.close());
  await outbox.open();
  return { outbox, storage };
}

const qos0 = (i: number): OutboxInput => ({ ...sizedEntry(i), qos: 0 });

/** Entries the database holds (blocks' spans minus what lies behind the head). */
function storedSpan(path: string): { rows: number; entries: number; head: number; used: number } {
  const db = new Database(path, { readonly: true });
  try {
    const head = db.prepare('SELECT seq, used FROM outbox_head').get() as { seq: number; used: number };
    const rows = db.prepare('SELECT first_seq, last_seq FROM outbox_blocks').all() as { first_seq: number; last_seq: number }[];
    const entries = rows.reduce((n, r) => n + Math.max(0, r.last_seq - Math.max(r.first_seq, head.seq + 1) + 1), 0);
    return { rows: rows.length, entries, head: head.seq, used: head.used };
  } finally {
    db.close();
  }
}

t.test('pending entries: readable up to the seq reservation; those acknowledged before their commit are never written', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const { outbox, storage } = await manualOutbox(t, path);
  const first = outbox.append(Array.from({ length: 10 }, (_, i) => qos0(i)));
  t.same(outbox.read(0, 100), [], 'without `pending`: nothing before the commit');
  t.same(outbox.read(0, 100, { pending: true }), [], 'nothing reserved yet: no pending entry is readable');
  let notified = 0;
  outbox.watch(() => notified++);
  storage.flush();
  await first;
  t.equal(notified, 1, 'the commit that reserved seqs told the reader');
  t.ok(storedSpan(path).used >= 10 + SEQ_RESERVATION - 1, 'the reservation is stored with the commit');

  const seqs = (await Promise.all([outbox.append(Array.from({ length: 2500 }, (_, i) => qos0(10 + i))), (storage.flush(), Promise.resolve())]))[0];
  t.equal(seqs[0], 11, 'seqs continue');
  const later = outbox.append(Array.from({ length: 3000 }, (_, i) => qos0(2510 + i)));
  t.ok(notified >= 2, 'appending reserved entries tells the reader');
  const read = outbox.read(0, 10_000, { pending: true });
  t.equal(read.length, 5510, 'stored entries, then every pending one');
  t.same(read.map((e) => e.seq), Array.from({ length: 5510 }, (_, i) => i + 1), 'in seq order, none twice');
  t.equal(read[5509]?.payload.subarray(0, 7).toString(), '#5509#\0', 'payloads of pending entries as appended');
  t.same(outbox.read(2510, 10_000).length, 0, 'without `pending` still only stored ones');

  // The reader confirms everything but the last 100 pending entries before the commit.
  void outbox.ack(5410);
  storage.flush();
  await later;
  const span = storedSpan(path);
  t.equal(span.entries, 100, 'only the unconfirmed entries are on disk');
  t.equal(span.rows, 1, 'in the one block holding them (the confirmed blocks were never inserted)');
  t.equal(span.head, 5410, 'the head is past every confirmed entry');
  const s = outbox.stats();
  t.equal(s.size, 100, 'size counts what is stored');
  t.equal(s.appended, 5510, 'every entry counted as appended');
  t.equal(s.acknowledged, 5410, 'and as acknowledged');
  t.ok(s.neverWritten >= 2000 && s.neverWritten <= 3000, `${s.neverWritten} of the 3000 confirmed before their commit were never written (whole blocks)`);
  t.same(outbox.read(0, 1000).map((e) => e.seq), Array.from({ length: 100 }, (_, i) => 5411 + i), 'the rest reads back in order');
});

t.test('seq reservation: after a crash new seqs are above every seq a reader saw; after a clean close there is no gap', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'edgeway.db');
  const { outbox, storage } = await manualOutbox(t, path);
  const committed = outbox.append(Array.from({ length: 5 }, (_, i) => qos0(i)));
  outbox.read(0, 10, { pending: true }); // asks for a reservation
  storage.flush();
  await committed;
  void outbox.append(Array.from({ length: 50 }, (_, i) => qos0(5 + i)));
  const seen = outbox.read(5, 100, { pending: true }).map((e) => e.seq);
  t.equal(seen.length, 50, 'pending entries read before their commit');
  // A crash now: the files as they are on disk (the WAL holds the committed reservation).
  const crashed = join(dir, 'crashed.db');
  copyFileSync(path, crashed);
  copyFileSync(`${path}-wal`, `${crashed}-wal`);
  const after = await manualOutbox(t, crashed);
  t.same(after.outbox.read(0, 100).map((e) => e.seq), [1, 2, 3, 4, 5], 'the committed entries survived; the pending ones did not');
  const [next] = await Promise.all([after.outbox.append([qos0(99)]), (after.storage.flush(), Promise.resolve())]).then(([s]) => s);
  t.ok((next as number) > Math.max(...seen), `the next seq (${next}) is above every seq handed to the reader (${Math.max(...seen)})`);

  storage.flush();
  await outbox.close();
  const reopened = await manualOutbox(t, path);
  const [again] = await Promise.all([reopened.outbox.append([qos0(100)]), (reopened.storage.flush(), Promise.resolve())]).then(([s]) => s);
  t.equal(again, 56, 'a clean close gives the unused reservation back: no gap');
});
