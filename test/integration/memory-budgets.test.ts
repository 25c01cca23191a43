/**
 * The global memory budgets (limits.maxQueuedBytesTotal, limits.maxOutgoingBytesTotal) on the real
 * gateway: many offline sessions and many slow readers, which the per-client limits alone would let
 * add up beyond a Raspberry Pi's memory. Read from outside through /metrics and $SYS; the in-process
 * test checks the bookkeeping stays exact through takeover, Clean Start, expiry and shared
 * subscriptions.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectAsync, type MqttClient } from 'mqtt';
import t from 'tap';
import { QUEUED_ENTRY_BYTES } from '../../gateway/broker/memory-budget';
import { startBroker, waitFor, type TestBroker } from '../helpers/broker';
import { eventually, mb, startMeteredGateway, type MeteredGateway } from '../helpers/metered-gateway';
import { within } from '../helpers/mqtt-client';
import { RawClient } from '../helpers/raw-client';

const dir = mkdtempSync(join(tmpdir(), 'edgeway-budgets-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const KiB = 1024;
const PAYLOAD = 1000;
/** What one queued message of PAYLOAD bytes counts in the queue budget. */
const ENTRY = PAYLOAD + QUEUED_ENTRY_BYTES;

/**
 * `count` persistent 3.1.1 sessions subscribed to `filter` at QoS 1, whose clients then leave one
 * after the other (distinct disconnection times: the last one is the most recently used).
 */
async function sessionsAway(gw: MeteredGateway, prefix: string, count: number, filter: string): Promise<string[]> {
  const ids = Array.from({ length: count }, (_, i) => `${prefix}-${i}`);
  for (const clientId of ids) {
    const c = await RawClient.connect(gw.port, { clientId, clean: false });
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: filter, qos: 1 }] });
    await c.next('suback');
    c.disconnect();
    await c.waitClosed();
    await new Promise((r) => setTimeout(r, 2));
  }
  await eventually(async () => (await gw.metric('edgeway_clients_connected')) === 0, 5000, 'every client to leave');
  return ids;
}

/** Publishes `count` QoS 1 messages numbered from `first` (the number in the payload's first 4 bytes), each acknowledged before the next. */
async function publishNumbered(publisher: MqttClient, topic: string, first: number, count: number, afterEach?: (n: number) => Promise<void>): Promise<void> {
  for (let i = first; i < first + count; i++) {
    const payload = Buffer.alloc(PAYLOAD, 0x61);
    payload.writeUInt32BE(i, 0);
    await within(publisher.publishAsync(topic, payload, { qos: 1 }), `PUBACK of message ${i}`);
    await afterEach?.(i);
  }
}

/**
 * Reconnects the sessions `ids` (without acknowledging anything: their queues fit in the inflight
 * window) and collects the numbers of the messages each receives, until `total` have arrived.
 */
async function collectQueued(gw: MeteredGateway, ids: readonly string[], total: number): Promise<Map<string, number[]>> {
  const clients = await Promise.all(ids.map((clientId) => RawClient.connect(gw.port, { clientId, clean: false })));
  const count = (): number => clients.reduce((sum, c) => sum + c.received.filter((p) => p.cmd === 'publish').length, 0);
  await eventually(() => count() >= total, 10_000, `${total} queued messages to arrive`);
  // The queues are empty (every message moved to inflight): nothing more is on its way.
  await eventually(async () => (await gw.metric('edgeway_queued_bytes')) === 0, 5000, 'the queues to empty');
  const received = new Map<string, number[]>();
  clients.forEach((c, i) => {
    received.set(ids[i] as string, c.received.flatMap((p) => (p.cmd === 'publish' ? [(p.payload as Buffer).readUInt32BE(0)] : [])));
    c.destroy();
  });
  return received;
}

/** Whether `numbers` is 0, 1, …, n−1: the oldest messages, in order, none missing. */
const isPrefix = (numbers: readonly number[]): boolean => numbers.every((n, i) => n === i);

t.test('offline sessions fill the queue budget: the total stays at it, drops are counted, each keeps its oldest messages', async (t) => {
  const budget = 256 * KiB;
  const [sessions, messages] = [20, 100];
  const gw = await startMeteredGateway(t, dir, `{ maxQueuedBytesTotal: ${budget} }`, { sysInterval: 1 });
  const ids = await sessionsAway(gw, 'away', sessions, 'q/#');
  const publisher = await connectAsync(`mqtt://127.0.0.1:${gw.port}`, { clientId: 'publisher', reconnectPeriod: 0, connectTimeout: 3000 }, false);
  t.teardown(() => within(publisher.endAsync(true), 'end').catch(() => undefined));

  let highest = 0;
  await publishNumbered(publisher, 'q/data', 0, messages, async () => {
    highest = Math.max(highest, await gw.metric('edgeway_queued_bytes'));
  });
  // Every message costs the same: the budget holds this many, whichever sessions they are for.
  const kept = Math.floor(budget / ENTRY);
  t.comment(`${sessions} sessions × ${messages} messages of ${PAYLOAD} B against ${budget} B: ${kept} kept; highest gauge ${highest}`);
  t.ok(highest <= budget, `edgeway_queued_bytes never above the budget (highest ${highest})`);
  t.equal(await gw.metric('edgeway_queued_bytes'), kept * ENTRY, 'at the end it counts exactly the messages kept');
  const hits = await gw.limitHits();
  t.equal(hits.maxQueuedBytesTotal, sessions * messages - kept, 'every message not queued is counted as maxQueuedBytesTotal');
  t.equal(hits.maxQueued, 0, "no session's own limit was reached");
  t.equal(await gw.metric('edgeway_messages_dropped_total'), sessions * messages - kept, 'and as dropped');

  const sys = await RawClient.connect(gw.port, { clientId: 'sys' });
  sys.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '$SYS/broker/bytes/queued', qos: 0 }] });
  let sysValue = '';
  while (sysValue !== String(kept * ENTRY)) sysValue = (await sys.next('publish', 3000)).payload.toString();
  t.pass(`$SYS/broker/bytes/queued is ${sysValue}`);
  sys.destroy();

  // A connected subscriber with a free inflight window is not affected: its messages go straight out.
  const live = await connectAsync(`mqtt://127.0.0.1:${gw.port}`, { clientId: 'live', reconnectPeriod: 0, connectTimeout: 3000 }, false);
  t.teardown(() => within(live.endAsync(true), 'end').catch(() => undefined));
  await within(live.subscribeAsync('q/#', { qos: 1 }), 'subscribe');
  const liveReceived: number[] = [];
  live.on('message', (_topic, payload) => liveReceived.push(payload.readUInt32BE(0)));
  await publishNumbered(publisher, 'q/data', messages, 10, (n) => eventually(() => liveReceived.includes(n), 3000, `the live subscriber to receive message ${n}`));
  t.same(
    liveReceived,
    Array.from({ length: 10 }, (_, i) => messages + i),
    'the live subscriber received all 10 messages, with the budget full',
  );
  t.equal((await gw.limitHits()).maxQueuedBytesTotal, sessions * (messages + 10) - kept, 'only the offline sessions had theirs dropped');

  const received = await collectQueued(gw, ids, kept);
  const counts = [...received.values()].map((numbers) => numbers.length);
  t.equal(
    counts.reduce((a, b) => a + b, 0),
    kept,
    'the sessions received exactly the messages kept',
  );
  t.ok(
    [...received.values()].every(isPrefix),
    'each received its oldest messages, in order, none missing',
  );
  t.ok(
    counts.every((n) => n >= Math.floor(kept / sessions)),
    `the budget was shared by arrival: ${counts.join(' ')}`,
  );
  t.equal(await gw.metric('edgeway_queued_bytes'), 0, 'nothing counted once the queues went out');
});

t.test('after a restart with a smaller budget, the most recent sessions get their stored messages back; the rest are dropped and counted', async (t) => {
  const [sessions, messages] = [20, 20];
  const storagePath = join(dir, 'restart', 'edgeway.db');
  const first = await startMeteredGateway(t, dir, '{}', { storagePath });
  const ids = await sessionsAway(first, 'stored', sessions, 'r/#');
  const publisher = await connectAsync(`mqtt://127.0.0.1:${first.port}`, { clientId: 'publisher', reconnectPeriod: 0, connectTimeout: 3000 }, false);
  await publishNumbered(publisher, 'r/data', 0, messages);
  await within(publisher.endAsync(), 'end');
  t.equal(await first.metric('edgeway_queued_bytes'), sessions * messages * ENTRY, 'the default budget held them all');
  await first.stop();

  const budget = 128 * KiB;
  const second = await startMeteredGateway(t, dir, `{ maxQueuedBytesTotal: ${budget} }`, { storagePath });
  const kept = Math.floor(budget / ENTRY);
  t.equal(await second.metric('edgeway_queued_bytes'), kept * ENTRY, `restored up to the budget: ${kept} of ${sessions * messages} messages`);
  const whole = Math.floor(kept / messages);
  t.equal((await second.limitHits()).maxQueuedBytesTotal, sessions - whole, 'counted once per session that lost messages');
  t.equal(await second.metric('edgeway_messages_dropped_total'), sessions * messages - kept, 'every message not restored counted as dropped');

  const received = await collectQueued(second, ids, kept);
  // The sessions left in the order of `ids`: the last ones are the most recently used.
  const expected = ids.map((_, i) => (i >= sessions - whole ? messages : i === sessions - whole - 1 ? kept - whole * messages : 0));
  t.same(
    ids.map((id) => received.get(id)?.length),
    expected,
    `the ${whole} most recent sessions got all ${messages}, the one before ${kept - whole * messages}, the others none`,
  );
  t.ok(
    [...received.values()].every(isPrefix),
    'each the oldest ones, in order',
  );
});

/** What the queue budget must count: every session's queued payload plus one entry per message. */
function exactQueued(tb: TestBroker): number {
  let sum = 0;
  for (const s of tb.broker.sessions.values()) sum += s.queuedBytes + s.queue.length * QUEUED_ENTRY_BYTES;
  return sum;
}

t.test('no drift: takeover and resume, Clean Start, expiry, shared-subscription hand-over; 0 once every session is gone', async (t) => {
  const tb = await startBroker({ limits: { maxQueuedBytesTotal: '1MiB' } });
  t.teardown(() => tb.stop());
  const { broker } = tb;
  const publish = (topic: string, count: number): void => {
    for (let i = 0; i < count; i++) broker.publishInProcess({ topic, payload: Buffer.alloc(100), qos: 1, retain: false });
  };
  const cost = 100 + QUEUED_ENTRY_BYTES;
  const check = (queued: number, what: string): void => {
    t.equal(broker.queueBudget.used, queued * cost, `${what}: ${queued} queued`);
    t.equal(broker.queueBudget.used, exactQueued(tb), `${what}: the exact sum over the sessions`);
  };
  const subscribe = async (c: RawClient, topic: string): Promise<void> => {
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] });
    await c.next('suback');
  };
  const gone = (clientId: string) => waitFor(() => !broker.clients.has(clientId), 3000, `${clientId} to leave`);

  // Takeover and resume with redelivery: 20 inflight (maxInflight), 10 queued.
  const first = await RawClient.connect(tb.port, { clientId: 'tk', clean: false });
  await subscribe(first, 'd/tk');
  publish('d/tk', 30);
  check(10, 'a connected session with a full inflight window');
  const second = await RawClient.connect(tb.port, { clientId: 'tk', clean: false });
  await first.waitClosed();
  const resent = [];
  for (let i = 0; i < 20; i++) resent.push(await second.next('publish'));
  t.ok(
    resent.every((p) => p.dup),
    'the takeover re-sent the 20 unacknowledged messages with DUP',
  );
  check(10, 'after the takeover');
  for (const p of resent) second.send({ cmd: 'puback', messageId: p.messageId as number });
  for (let i = 0; i < 10; i++) await second.next('publish');
  check(0, 'acknowledged: the queue moved to inflight');

  // Clean Start discards a session with queued messages.
  const cs = await RawClient.connect(tb.port, { clientId: 'cs', clean: false });
  await subscribe(cs, 'd/cs');
  cs.disconnect();
  await gone('cs');
  publish('d/cs', 5);
  check(5, 'an offline session');
  const clean = await RawClient.connect(tb.port, { clientId: 'cs', clean: true });
  check(0, 'after Clean Start');
  clean.disconnect();

  // Expiry (MQTT 5 Session Expiry Interval of 1 s).
  const ex = await RawClient.connect(tb.port, { clientId: 'ex', protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 1 } });
  await subscribe(ex, 'd/ex');
  ex.disconnect();
  await gone('ex');
  publish('d/ex', 5);
  check(5, 'an offline session that will expire');
  await waitFor(() => !broker.sessions.has('ex'), 5000, 'the session to expire');
  check(0, 'after expiry');

  // Shared subscription: a leaving member's queued and unacknowledged QoS 1 messages move to the other.
  const members = [await RawClient.connect(tb.port, { clientId: 'sa' }), await RawClient.connect(tb.port, { clientId: 'sb' })];
  for (const m of members) await subscribe(m, '$share/g/d/sh');
  publish('d/sh', 50);
  check(10, 'two members, 20 inflight and 5 queued each');
  (members[0] as RawClient).destroy();
  await gone('sa');
  check(30, "the other member took the leaving one's 5 queued and 20 unacknowledged");
  (members[1] as RawClient).destroy();
  await gone('sb');
  check(0, 'the last member left (its session ended)');

  second.destroy();
  await gone('tk');
  const end = await RawClient.connect(tb.port, { clientId: 'tk', clean: true });
  end.disconnect();
  await waitFor(() => broker.sessions.size === 0, 3000, 'every session to end');
  t.equal(broker.queueBudget.used, 0, 'nothing counted once every session is gone');
});

/**
 * `subscribers` QoS 0 subscribers to flood/# that never read, `messages` QoS 0 messages of
 * `payload` bytes published to them, then a QoS 1 one (its PUBACK: everything before it was routed).
 * Returns the highest outgoing gauge seen meanwhile (sampled) and the gateway's RSS growth.
 */
async function floodSlowReaders(gw: MeteredGateway, subscribers: number, messages: number, payload: number): Promise<{ outgoing: number; growth: number }> {
  const slow = await Promise.all(Array.from({ length: subscribers }, (_, i) => RawClient.connect(gw.port, { clientId: `slow-${i}` })));
  for (const c of slow) {
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'flood/#', qos: 0 }] });
    await c.next('suback');
    c.socket.pause();
  }
  const publisher = await connectAsync(`mqtt://127.0.0.1:${gw.port}`, { clientId: 'flooder', reconnectPeriod: 0, connectTimeout: 3000 }, false);
  const before = gw.rss();
  let outgoing = 0;
  let flooding = true;
  const sampling = (async () => {
    while (flooding) {
      outgoing = Math.max(outgoing, await gw.metric('edgeway_outgoing_bytes'));
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  const body = Buffer.alloc(payload, 0x66);
  for (let i = 0; i < messages; i++) await within(publisher.publishAsync('flood/data', body, { qos: 0 }), 'a QoS 0 publish to be written');
  await within(publisher.publishAsync('flood/end', 'end', { qos: 1 }), 'the PUBACK after the flood', 30_000);
  flooding = false;
  await sampling;
  outgoing = Math.max(outgoing, await gw.metric('edgeway_outgoing_bytes'));
  const growth = gw.rss() - before;
  await within(publisher.endAsync(true), 'end');
  for (const c of slow) c.destroy();
  await eventually(async () => (await gw.metric('edgeway_clients_connected')) === 0, 5000, 'the slow subscribers to be gone');
  return { outgoing, growth };
}

t.test('slow QoS 0 readers cannot add up beyond the outgoing budget; the total returns to 0 when they go', async (t) => {
  const [subscribers, messages, payload] = [20, 600, 16 * KiB];
  const highWater = 16 * KiB;
  const budget = 2 * 1024 * KiB;
  // Per socket up to 4 MiB: without the global budget 20 slow readers would hold up to 80 MiB.
  const limits = (total: string): string => `{ maxOutgoingBytes: 4MiB, outgoingHighWater: ${highWater}, maxOutgoingBytesTotal: ${total} }`;
  const gw = await startMeteredGateway(t, dir, limits(String(budget)));
  const bounded = await floodSlowReaders(gw, subscribers, messages, payload);
  // Beyond the budget, each slow reader may still get what brings it to outgoingHighWater, plus
  // the one message that crosses it (and one more for the write that crossed the budget).
  const bound = budget + (subscribers + 1) * (highWater + payload + 64);
  const hits = await gw.limitHits();
  t.comment(`with the budget: edgeway_outgoing_bytes at most ${mb(bounded.outgoing)} (bound ${mb(bound)}), RSS +${mb(bounded.growth)}, maxOutgoingBytesTotal hits ${hits.maxOutgoingBytesTotal}`);
  t.ok((hits.maxOutgoingBytesTotal ?? 0) > 0, 'QoS 0 messages to slow readers were dropped at the global budget');
  t.ok(bounded.outgoing > 0, `the gauge showed what waited for the slow readers during the flood (highest ${bounded.outgoing} B)`);
  t.ok(bounded.outgoing <= bound, `the total (highest sampled) stayed within the budget plus, per reader, its high-water mark and one message (${mb(bounded.outgoing)})`);
  t.equal(await gw.metric('edgeway_outgoing_bytes'), 0, 'the total is 0 once they are gone');

  // Control: the same flood without a global budget, so that the checks above can fail.
  const control = await startMeteredGateway(t, dir, limits('1GiB'));
  const unbounded = await floodSlowReaders(control, subscribers, messages, payload);
  t.comment(`without it: edgeway_outgoing_bytes at most ${mb(unbounded.outgoing)}, RSS +${mb(unbounded.growth)}`);
  t.ok(unbounded.outgoing > 3 * bound, `control: the slow readers hold far more (${mb(unbounded.outgoing)})`);
  t.ok(bounded.growth < unbounded.growth, `the RSS grew less with the budget (${mb(bounded.growth)} against ${mb(unbounded.growth)})`);
  t.equal((await control.limitHits()).maxOutgoingBytesTotal ?? 0, 0, 'control: the global budget was never reached');
});
