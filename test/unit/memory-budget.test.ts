/**
 * The bookkeeping of the global budgets (memory-budget.ts): sessions adding and removing their
 * queued bytes (limits.maxQueuedBytesTotal), connections their outgoing bytes
 * (limits.maxOutgoingBytesTotal). Exact sums, no drift, whichever path a message takes.
 */
import { EventEmitter } from 'node:events';
import t from 'tap';
import { Connection, type ConnectionHost } from '../../gateway/broker/connection';
import { ByteBudget, QUEUED_ENTRY_BYTES } from '../../gateway/broker/memory-budget';
import type { SessionStore, StoredSessionMessage, StoredSession } from '../../gateway/broker/persistence';
import { Session } from '../../gateway/broker/session';
import type { Transport } from '../../gateway/broker/transport';
import type { Message } from '../../gateway/broker/types';
import { Prng } from '../fuzz/prng';

const message = (payloadBytes: number, topic = 't'): Message => ({ topic, payload: Buffer.alloc(payloadBytes), qos: 1, retain: false });
const cost = (payloadBytes: number): number => payloadBytes + QUEUED_ENTRY_BYTES;
/** What the budget must count for `sessions`: each queued message's payload plus its entry. */
const expected = (sessions: readonly Session[]): number => sessions.reduce((sum, s) => sum + s.queuedBytes + s.queue.length * QUEUED_ENTRY_BYTES, 0);
const session = (id: string, budget: ByteBudget, maxQueued = 1000, maxQueuedBytes = 1 << 20, store: SessionStore | null = null): Session =>
  new Session(id, 0xffffffff, maxQueued, maxQueuedBytes, budget, store);

t.test('sessions share the queue budget: payload plus an entry each, refused beyond it, freed when taken out', async (t) => {
  const budget = new ByteBudget(3 * cost(100));
  const a = session('a', budget);
  const b = session('b', budget);
  t.equal(a.enqueue(message(100), 1, false), null, 'a: first message queued');
  t.equal(b.enqueue(message(100), 1, false), null, 'b: first message queued');
  t.equal(a.enqueue(message(100), 1, false), null, 'a: second message queued (the budget is now full)');
  t.equal(budget.used, 3 * cost(100), '3 × (100 + 64) counted');
  t.equal(b.enqueue(message(100), 1, false), 'maxQueuedBytesTotal', 'b: refused by the global budget');
  t.equal(b.enqueue(message(0), 1, false), 'maxQueuedBytesTotal', 'an empty payload still costs its entry');
  t.equal(b.queue.length, 1, 'b kept its one message');

  const first = a.dequeue();
  t.equal(first?.message.payload.length, 100, 'a: the oldest message taken out for sending');
  t.equal(budget.used, 2 * cost(100), 'taking it out frees its bytes');
  t.equal(b.enqueue(message(100), 1, false), null, 'b: now it fits');

  a.clear();
  t.equal(budget.used, 2 * cost(100), 'a session that ends gives back what it held');
  b.clear();
  b.clear();
  t.equal(budget.used, 0, 'clearing twice does not count twice');
});

t.test("a session's own limits are reported before the global budget", async (t) => {
  const budget = new ByteBudget(cost(10));
  const byCount = session('count', budget, 1);
  t.equal(byCount.enqueue(message(10), 1, false), null);
  t.equal(byCount.enqueue(message(10), 1, false), 'maxQueued', 'maxQueued: full by count (and the budget is full too)');
  const byBytes = session('bytes', new ByteBudget(1 << 20), 1000, 50);
  t.equal(byBytes.enqueue(message(51), 1, false), 'maxQueued', 'maxQueuedBytes');
  t.equal(budget.used, cost(10), 'refused messages are not counted');
});

t.test('shared-subscription messages taken from a leaving member: the rest stays counted, the taken ones leave', async (t) => {
  const budget = new ByteBudget(1 << 20);
  const member = session('member', budget);
  const origin = (group: string, payloadBytes: number) => ({ group, message: message(payloadBytes) });
  member.enqueue(message(10), 1, false);
  member.enqueue(message(20), 1, false, origin('$share/g/t', 20));
  member.enqueue(message(30), 1, false, origin('$share/other/t', 30));
  member.enqueue(message(40), 1, false, origin('$share/g/t', 40));
  const taken = member.takeShared((group) => group === '$share/g/t');
  t.same(
    taken.map((q) => q.message.payload.length),
    [20, 40],
    'the two messages of the group, in order',
  );
  t.same(
    [...member.queue].map((q) => q.message.payload.length),
    [10, 30],
    'the others stay queued, in order',
  );
  t.equal(budget.used, cost(10) + cost(30), 'only what stays is counted');
  t.equal(budget.used, expected([member]));
});

t.test('restore from storage: queued messages beyond the budget are dropped (and deleted), inflight ones are not counted', async (t) => {
  const removed: number[] = [];
  const store = { messageRemoved: (_clientId: string, ord: number) => removed.push(ord) } as unknown as SessionStore;
  const stored = (clientId: string, messages: StoredSessionMessage[]): StoredSession => ({ clientId, expiryInterval: 0xffffffff, disconnectedAt: Date.now(), subscriptions: [], messages, incomingQos2: [] });
  const queued = (ord: number, payloadBytes: number): StoredSessionMessage => ({ ord, message: message(payloadBytes), qos: 1, retain: false, state: 'queued', packetId: 0 });
  const budget = new ByteBudget(3 * cost(100));
  const first = session('first', budget, 1000, 1 << 20, store);
  const inflight: StoredSessionMessage = { ord: 1, message: message(500), qos: 1, retain: false, state: 'publish', packetId: 7 };
  t.same(first.restore(stored('first', [inflight, queued(2, 100), queued(3, 100)])), { maxQueued: 0, maxQueuedBytesTotal: 0 }, 'the first session fits');
  t.equal(budget.used, 2 * cost(100), 'its inflight message is not in the queue budget');
  const second = session('second', budget, 2, 1 << 20, store);
  t.same(second.restore(stored('second', [queued(1, 100), queued(2, 100), queued(3, 10)])), { maxQueued: 0, maxQueuedBytesTotal: 2 }, 'the second gets what is left');
  t.same(
    [...second.queue].map((q) => q.ord),
    [1],
    'its oldest message',
  );
  t.same(removed, [2, 3], 'the dropped ones are deleted from the store');
  const third = session('third', new ByteBudget(1 << 20), 1, 1 << 20, store);
  t.same(third.restore(stored('third', [queued(1, 1), queued(2, 1)])), { maxQueued: 1, maxQueuedBytesTotal: 0 }, 'its own limits are reported as maxQueued');
  t.equal(budget.used, expected([first, second]));
});

t.test('random operations on many sessions: the budget is always the exact sum, never above its limit, and 0 at the end', async (t) => {
  const rng = new Prng(0x5eed);
  // Six sessions of up to 4000 payload bytes each (and their entries) would need about 30 KB.
  const budget = new ByteBudget(8000);
  const sessions = Array.from({ length: 6 }, (_, i) => session(`s${i}`, budget, 40, 4000));
  let refusedByBudget = 0;
  let mismatches = 0;
  let overLimit = 0;
  for (let step = 0; step < 20_000; step++) {
    const s = rng.pick(sessions);
    const op = rng.int(0, 99);
    if (op < 55) {
      const size = rng.int(0, 400);
      const shared = rng.chance(0.3) ? { group: rng.pick(['$share/a/t', '$share/b/t']), message: message(size) } : undefined;
      if (s.enqueue(message(size), rng.chance(0.5) ? 1 : 2, false, shared) === 'maxQueuedBytesTotal') refusedByBudget++;
    } else if (op < 90) {
      s.dequeue();
    } else if (op < 99) {
      const group = rng.pick(['$share/a/t', '$share/b/t']);
      s.takeShared((g) => g === group);
    } else {
      s.clear();
    }
    if (budget.used !== expected(sessions)) mismatches++;
    if (budget.used > budget.limit) overLimit++;
  }
  t.ok(refusedByBudget > 0, `the budget refused messages (${refusedByBudget})`);
  t.equal(mismatches, 0, 'after every step the budget equals the sum over the sessions');
  t.equal(overLimit, 0, 'and never exceeds its limit');
  for (const s of sessions) s.clear();
  t.equal(budget.used, 0, 'nothing left once every session ended');
});

/**
 * A socket that holds what it is given until `drain()`, except in `takesAll` mode (the kernel
 * takes everything at once); `write` returns false at `highWaterMark`, as a net.Socket does.
 */
class FakeSocket extends EventEmitter implements Transport {
  writableLength = 0;
  destroyed = false;
  takesAll = true;
  constructor(readonly highWaterMark = 16 * 1024) {
    super();
  }
  write(data: Buffer): boolean {
    if (this.takesAll) return true;
    this.writableLength += data.length;
    return this.writableLength < this.highWaterMark;
  }
  /** The kernel took everything: 'drain' (as Node emits it only after a write returned false). */
  drain(): void {
    const needed = this.writableLength >= this.highWaterMark;
    this.writableLength = 0;
    if (needed) this.emit('drain');
  }
  end(): void {}
  destroy(): void {
    this.destroyed = true;
  }
  pause(): void {}
  resume(): void {}
  setNoDelay(): this {
    return this;
  }
}

function connection(budget: ByteBudget, socket = new FakeSocket()): { conn: Connection; socket: FakeSocket } {
  const host = {
    outgoingBudget: budget,
    scheduleFlush: () => undefined,
    countBytesSent: () => undefined,
    countBytesReceived: () => undefined,
    onClose: () => undefined,
    maxPacketSize: 1 << 20,
    backpressureTimeout: 1000,
  } as unknown as ConnectionHost;
  const conn = new Connection(socket, host);
  conn.start(60_000);
  return { conn, socket };
}

t.test('connections add their outgoing bytes: at write, brought up to date at flush and drain, removed at close', async (t) => {
  const budget = new ByteBudget(1 << 20);
  const { conn, socket } = connection(budget);
  conn.write(Buffer.alloc(100));
  conn.write(Buffer.alloc(50));
  t.equal(budget.used, 150, "this tick's packets count at once");
  conn.flushOutput();
  t.equal(budget.used, 0, 'a socket that took it all holds nothing');

  socket.takesAll = false;
  for (let i = 0; i < 3; i++) conn.write(Buffer.alloc(10 * 1024));
  conn.flushOutput();
  t.equal(budget.used, 30 * 1024, "a write that returned false: what the socket holds counts until 'drain'");
  conn.write(Buffer.alloc(5 * 1024));
  t.equal(budget.used, 35 * 1024, 'plus the next packets');
  socket.drain();
  t.equal(budget.used, 5 * 1024, "'drain': the socket is empty, this tick's packets still count");
  conn.flushOutput();
  t.equal(socket.writableLength, 5 * 1024, 'the socket holds them, below its high-water mark');
  t.equal(budget.used, 0, 'a write that returned true is not counted past the flush (no drain would say when it left)');

  const other = connection(budget);
  other.socket.takesAll = false;
  other.conn.write(Buffer.alloc(20 * 1024));
  other.conn.flushOutput();
  conn.write(Buffer.alloc(1000));
  t.equal(budget.used, 20 * 1024 + 1000, 'the connections add up');
  conn.close('client-disconnect', 'test');
  t.equal(budget.used, 20 * 1024, 'a closed connection counts nothing (its unflushed packets included)');
  other.conn.close('server-shutdown', 'test', true);
  t.equal(budget.used, 0, 'nor one closed after a last flush');
  other.conn.write(Buffer.alloc(10));
  t.equal(budget.used, 0, 'writes after close are not counted');
});

t.test('a destroyed socket counts nothing at flush', async (t) => {
  const budget = new ByteBudget(1 << 20);
  const { conn, socket } = connection(budget);
  conn.write(Buffer.alloc(100));
  socket.destroyed = true;
  conn.flushOutput();
  t.equal(budget.used, 0);
  conn.close('socket-closed', 'test');
  t.equal(budget.used, 0, 'and closing it after does not go below 0');
});
