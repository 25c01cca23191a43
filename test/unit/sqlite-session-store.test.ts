import { join } from 'node:path';
import Database from 'better-sqlite3';
import t, { type Test } from 'tap';
import { SqliteSessionStore, SqliteStorage, type SqliteStorageOptions } from '../../adapters/sqlite';
import type { Message, StoredSession, StoredSessionMessage } from '../../gateway/broker';
import { recordingLogger, tempDir } from '../helpers/sqlite';

type Options = StoredSession['subscriptions'][number][1];

/** A window longer than any test: commits happen only where a test calls flush() (or close()). */
const MANUAL = 60_000;

function openStore(t: Test, path: string, options: Partial<SqliteStorageOptions> = {}) {
  const logger = recordingLogger();
  const storage = new SqliteStorage({ path, sync: 'normal', flushInterval: MANUAL, logger, ...options });
  const store = new SqliteSessionStore(storage);
  storage.open();
  t.teardown(() => storage.close());
  return { storage, store, logger };
}

/** What a restarted gateway finds: a new storage on the same file. */
function loadAfterRestart(path: string): StoredSession[] {
  const storage = new SqliteStorage({ path, sync: 'normal', flushInterval: MANUAL });
  const store = new SqliteSessionStore(storage);
  storage.open();
  try {
    return store.load();
  } finally {
    storage.close();
  }
}

const TABLES = ['sessions', 'session_subscriptions', 'session_messages', 'session_incoming_qos2'] as const;

/** Rows per table for one client, read through another connection (what is committed). */
function rowsOf(path: string, clientId: string): Record<(typeof TABLES)[number], number> {
  const db = new Database(path, { readonly: true });
  try {
    const count = (table: string) => db.prepare(`SELECT count(*) FROM ${table} WHERE client_id = ?`).pluck().get(clientId) as number;
    return { sessions: count(TABLES[0]), session_subscriptions: count(TABLES[1]), session_messages: count(TABLES[2]), session_incoming_qos2: count(TABLES[3]) };
  } finally {
    db.close();
  }
}

function msg(ord: number, overrides: Partial<StoredSessionMessage> = {}, message: Partial<Message> = {}): StoredSessionMessage {
  return {
    ord,
    state: 'queued',
    packetId: 0,
    qos: 1,
    retain: false,
    message: { topic: `t/${ord}`, payload: Buffer.from(`m${ord}`), qos: 1, retain: false, ...message },
    ...overrides,
  };
}

const SUB: Options = { qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0 };

t.test('round trip of every field across a restart', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const { storage, store } = openStore(t, path);
  const binary = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const properties = {
    payloadFormatIndicator: true,
    messageExpiryInterval: 120,
    responseTopic: 'reply/here',
    correlationData: Buffer.from([0, 1, 2, 0xfe, 0xff]),
    // Names that spell Buffer's own JSON shape must stay strings.
    userProperties: { a: '1', list: ['x', 'y'], type: 'Buffer', data: 'z' },
    contentType: 'application/octet-stream',
  };
  const messages: StoredSessionMessage[] = [
    msg(1, {}, { payload: binary }),
    msg(2, { state: 'publish', packetId: 17, qos: 2 }, { qos: 2, properties, expiresAt: 1_700_000_123_456 }),
    msg(3, { state: 'pubrel', packetId: 18, qos: 2, retain: true }, { qos: 2, retain: true, payload: Buffer.alloc(0) }),
    msg(4, { state: 'publish', packetId: 65_535, qos: 1 }, { qos: 2, retain: true }),
  ];
  const subscriptions: [string, Options][] = [
    ['a/+/c', { qos: 2, noLocal: true, retainAsPublished: true, retainHandling: 2, subscriptionId: 268_435_455 }],
    ['plain/#', { qos: 0, noLocal: false, retainAsPublished: false, retainHandling: 1 }],
  ];
  store.sessionSaved('connected', 0xffffffff, null);
  store.sessionSaved('away', 3600, 1_700_000_000_000);
  for (const [filter, options] of subscriptions) store.subscriptionSaved('away', filter, options);
  for (const m of messages) store.messageAdded('away', m);
  store.incomingQos2Saved('away', 9, true);
  store.incomingQos2Saved('away', 3, true);
  storage.flush();
  t.equal(storage.counters.commits, 1, 'everything in one commit');
  storage.close();

  const loaded = loadAfterRestart(path).sort((a, b) => a.clientId.localeCompare(b.clientId));
  t.strictSame(loaded, [
    { clientId: 'away', expiryInterval: 3600, disconnectedAt: 1_700_000_000_000, subscriptions, messages, incomingQos2: [3, 9] },
    { clientId: 'connected', expiryInterval: 0xffffffff, disconnectedAt: null, subscriptions: [], messages: [], incomingQos2: [] },
  ]);
  const cd = loaded[0]?.messages[1]?.message.properties?.correlationData;
  t.ok(Buffer.isBuffer(cd), 'correlationData comes back as a Buffer');
  t.ok(Buffer.isBuffer(loaded[0]?.messages[0]?.message.payload), 'payload is a Buffer');
  t.notOk('properties' in (loaded[0]?.messages[0]?.message ?? {}), 'no properties key when there were none');
  t.notOk('expiresAt' in (loaded[0]?.messages[0]?.message ?? {}), 'no expiresAt key when it never expires');
  t.notOk('subscriptionId' in (loaded[0]?.subscriptions[1]?.[1] ?? {}), 'no subscriptionId key when there was none');
});

t.test('messages load in ascending ord, per client, whatever the write order', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const { storage, store } = openStore(t, path);
  for (const id of ['b', 'a']) store.sessionSaved(id, 60, null);
  for (const ord of [10, 2]) store.messageAdded('a', msg(ord));
  store.messageAdded('b', msg(5));
  storage.flush();
  for (const ord of [7, 1, 12]) store.messageAdded('a', msg(ord));
  store.messageAdded('b', msg(3));
  storage.flush();
  storage.close();
  const byClient = new Map(loadAfterRestart(path).map((s) => [s.clientId, s.messages.map((m) => m.ord)]));
  t.strictSame(byClient.get('a'), [1, 2, 7, 10, 12]);
  t.strictSame(byClient.get('b'), [3, 5]);
});

t.test('sessionDeleted removes every row; a recreate in the same window keeps only the new state', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const { storage, store } = openStore(t, path);
  for (const id of ['gone', 'reborn']) {
    store.sessionSaved(id, 60, 1000);
    store.subscriptionSaved(id, 'old/#', SUB);
    store.messageAdded(id, msg(1, { state: 'publish', packetId: 1 }));
    store.messageAdded(id, msg(2));
    store.incomingQos2Saved(id, 5, true);
  }
  storage.flush();
  t.strictSame(rowsOf(path, 'gone'), { sessions: 1, session_subscriptions: 1, session_messages: 2, session_incoming_qos2: 1 }, 'stored');

  store.sessionDeleted('gone');
  store.subscriptionSaved('reborn', 'dropped/before/delete', SUB); // voided by the delete below
  store.sessionDeleted('reborn');
  store.sessionSaved('reborn', 7200, null);
  store.subscriptionSaved('reborn', 'new/+', { ...SUB, qos: 2 });
  store.messageAdded('reborn', msg(1, {}, { topic: 'new/1' })); // the same ord as an old row
  store.incomingQos2Saved('reborn', 6, true);
  storage.flush();

  t.strictSame(rowsOf(path, 'gone'), { sessions: 0, session_subscriptions: 0, session_messages: 0, session_incoming_qos2: 0 }, 'deleted session: no row left');
  storage.close();
  const loaded = loadAfterRestart(path);
  t.strictSame(loaded, [
    { clientId: 'reborn', expiryInterval: 7200, disconnectedAt: null, subscriptions: [['new/+', { ...SUB, qos: 2 }]], messages: [msg(1, {}, { topic: 'new/1' })], incomingQos2: [6] },
  ]);
});

t.test('after a delete in the window, removals of rows that cannot exist cost no statement', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const { storage, store } = openStore(t, path);
  store.sessionSaved('c', 60, null);
  store.messageAdded('c', msg(1));
  storage.flush();
  const before = store.counters.statements;
  store.sessionDeleted('c');
  store.subscriptionSaved('c', 'x', null);
  store.messageUpdated('c', 1, 'publish', 3);
  store.messageRemoved('c', 1);
  store.incomingQos2Saved('c', 4, false);
  storage.flush();
  t.equal(store.counters.statements - before, 4, 'only the four range deletes');
  t.strictSame(rowsOf(path, 'c'), { sessions: 0, session_subscriptions: 0, session_messages: 0, session_incoming_qos2: 0 });
});

t.test('coalescing: added and removed in one window writes nothing; added and updated writes once', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const { storage, store } = openStore(t, path);
  store.sessionSaved('c', 60, null);
  storage.flush();
  const commits = storage.counters.commits;
  const { rowsWritten, statements } = store.counters;

  // Queued, sent and acknowledged within one window: never reaches the disk.
  store.messageAdded('c', msg(1));
  store.messageUpdated('c', 1, 'publish', 1);
  store.messageRemoved('c', 1);
  t.notOk(store.hasPending(), 'the changes cancelled out');
  storage.flush();
  t.equal(storage.counters.commits, commits, 'no commit at all');
  t.equal(store.counters.statements, statements, 'no statement');
  t.equal(store.counters.rowsWritten, rowsWritten, 'no row');
  t.equal(rowsOf(path, 'c').session_messages, 0);

  // Sent at once, then PUBREC'd: one insert in the final state.
  store.messageAdded('c', msg(2, { state: 'publish', packetId: 4, qos: 2 }, { qos: 2 }));
  store.messageUpdated('c', 2, 'pubrel', 4);
  storage.flush();
  t.equal(store.counters.statements - statements, 1, 'one statement');
  t.equal(store.counters.rowsWritten - rowsWritten, 1, 'one row');
  t.strictSame(loadAfterRestart(path)[0]?.messages, [msg(2, { state: 'pubrel', packetId: 4, qos: 2 }, { qos: 2 })], 'final state stored');

  // Updates of a stored row: the last one wins.
  const s2 = store.counters.statements;
  store.messageAdded('c', msg(3));
  storage.flush();
  store.messageUpdated('c', 3, 'publish', 9);
  store.messageUpdated('c', 3, 'pubrel', 9);
  store.messageUpdated('c', 2, 'pubrel', 4);
  store.messageRemoved('c', 2);
  storage.flush();
  t.equal(store.counters.statements - s2, 3, 'insert, then one update and one delete');
  t.strictSame(
    loadAfterRestart(path)[0]?.messages.map((m) => [m.ord, m.state, m.packetId]),
    [[3, 'pubrel', 9]],
  );
});

t.test('an incoming QoS 2 id stored earlier and held again is still released', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const { storage, store } = openStore(t, path);
  store.sessionSaved('c', 60, null);
  store.incomingQos2Saved('c', 5, true);
  storage.flush();
  store.incomingQos2Saved('c', 5, true); // duplicate PUBLISH
  store.incomingQos2Saved('c', 5, false); // PUBREL
  storage.flush();
  t.equal(rowsOf(path, 'c').session_incoming_qos2, 0, 'the stored id is gone');
});

t.test('a failed commit keeps every change pending; a later commit writes the final state', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const { storage, store, logger } = openStore(t, path, { busyTimeoutMs: 50 });
  store.sessionSaved('c', 60, null);
  store.messageAdded('c', msg(1, { state: 'publish', packetId: 2, qos: 2 }, { qos: 2 }));
  store.subscriptionSaved('c', 'f', SUB);

  const other = new Database(path);
  t.teardown(() => other.close());
  other.exec('BEGIN IMMEDIATE'); // holds the write lock
  let durableSettled = false;
  const durable = storage.durable().finally(() => (durableSettled = true));
  t.equal(storage.counters.failedCommits, 0);
  storage.flush();
  await new Promise((r) => setImmediate(r));
  t.notOk(durableSettled, 'durable() keeps waiting: the commit will be retried');
  t.equal(storage.counters.failedCommits, 1, 'the commit failed');
  t.ok(store.hasPending(), 'changes kept');
  t.equal(store.counters.rowsWritten, 0, 'nothing counted as written');
  t.ok(logger.lines.some((l) => l.level === 'error' && /commit failed/.test(l.msg)), 'failure logged');

  store.messageUpdated('c', 1, 'pubrel', 2); // still the pending insert
  other.exec('COMMIT');
  storage.flush();
  await durable;
  t.pass('durable() resolved with the retry');
  t.equal(storage.counters.commits, 1, 'retried and committed');
  t.notOk(store.hasPending());
  t.equal(store.counters.statements, 3, 'session, subscription, one message insert');
  storage.close();
  t.strictSame(loadAfterRestart(path), [
    { clientId: 'c', expiryInterval: 60, disconnectedAt: null, subscriptions: [['f', SUB]], messages: [msg(1, { state: 'pubrel', packetId: 2, qos: 2 }, { qos: 2 })], incomingQos2: [] },
  ]);
});

t.test('close writes what is pending', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const { storage, store, logger } = openStore(t, path);
  store.sessionSaved('c', 60, 5);
  store.messageAdded('c', msg(1));
  t.equal(storage.counters.commits, 0, 'not written yet');
  storage.close();
  t.equal(storage.counters.commits, 1, 'written by close');
  t.strictSame(logger.lines.filter((l) => l.level === 'error'), [], 'nothing lost, nothing logged');
  t.strictSame(loadAfterRestart(path).map((s) => [s.clientId, s.messages.length]), [['c', 1]]);
});

t.test('the group-commit timer writes a window in one commit; nothing is written while nothing changes', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const { storage, store } = openStore(t, path, { flushInterval: 10 });
  store.sessionSaved('c', 60, null);
  for (let ord = 1; ord <= 50; ord++) store.messageAdded('c', msg(ord));
  await storage.durable();
  t.equal(storage.counters.commits, 1, 'one commit for the window');
  t.equal(rowsOf(path, 'c').session_messages, 50);

  const { commits } = storage.counters;
  const counters = { ...store.counters };
  t.equal(store.load().length, 1, 'load reads…');
  storage.flush();
  await new Promise((r) => setTimeout(r, 30));
  t.equal(storage.counters.commits, commits, '…and no commit follows');
  t.strictSame(store.counters, counters, 'no statement');
});

t.test('change methods do nothing while the storage is not open', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const storage = new SqliteStorage({ path, sync: 'normal', flushInterval: 0 });
  const store = new SqliteSessionStore(storage);
  store.sessionSaved('c', 60, null);
  store.messageAdded('c', msg(1));
  t.notOk(store.hasPending(), 'before open');
  t.strictSame(store.load(), []);
  storage.open();
  storage.close();
  store.sessionSaved('c', 60, null);
  t.notOk(store.hasPending(), 'after close');
  t.strictSame(loadAfterRestart(path), [], 'nothing stored');
});

t.test('a value SQLite would refuse is refused at once, not on every commit retry', async (t) => {
  const path = join(tempDir(t), 'edgeway.db');
  const { storage, store, logger } = openStore(t, path);
  store.sessionSaved('c', 60, 1.5); // a fractional timestamp: STRICT INTEGER rejects it
  store.messageAdded('c', msg(1, {}, { properties: { userProperties: { n: 1n as unknown as string } } })); // not JSON
  t.equal(store.counters.invalid, 2, 'both counted');
  t.ok(logger.lines.some((l) => l.level === 'error' && l.fields?.what === 'session'), 'logged');
  t.notOk(store.hasPending(), 'nothing pending');
  store.sessionSaved('c', 60, 2);
  storage.flush();
  t.equal(storage.counters.failedCommits, 0, 'the storage keeps committing');
  t.equal(rowsOf(path, 'c').sessions, 1);
});
