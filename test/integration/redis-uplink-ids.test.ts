/**
 * The uplink's ids when seqs are handed out twice (review findings): a power cut with
 * `sync: normal` losing the acknowledgement of entries Redis already has, a database that starts
 * again at seq 1, two gateways sharing one id. The Uplink runs against a real redis-server; the
 * outbox and state are in memory so each case can be set up exactly.
 */
import t, { type Test } from 'tap';
import type Redis from 'ioredis';
import { MemoryStateStore, resolveRedisSettings, type RedisSettings } from '../../adapters/redis';
import { createRedisConnection } from '../../adapters/redis/connection';
import { Uplink } from '../../adapters/redis/uplink';
import { MemoryOutbox, silentLogger, type OutboxInput } from '../../gateway/broker';
import { validateConfig } from '../../config/load';
import { RedisServer } from '../helpers/redis';

const STREAM = 'edgeway:uplink:gw';

function settingsFor(server: RedisServer, batchSize = 500): RedisSettings {
  const config = validateConfig({ redis: { url: server.url, gatewayId: 'gw', reconnect: { initialDelay: 20, maxDelay: 200 }, uplink: { batchSize } } }, 'test');
  return resolveRedisSettings(config.redis as NonNullable<typeof config.redis>, 'host');
}

function entry(i: number, source: string, ts: number): OutboxInput {
  return { topic: `sensors/${i}`, payload: Buffer.from(`${source}:${i}`), qos: 1, retain: false, arrivedAt: ts, source };
}

async function outboxWith(entries: OutboxInput[]): Promise<MemoryOutbox> {
  const outbox = new MemoryOutbox({ maxMessages: 10_000, maxBytes: 1024 ** 2, whenFull: 'drop-new' });
  await outbox.open();
  if (entries.length > 0) await outbox.append(entries);
  return outbox;
}

/** Runs an uplink until the outbox is empty (or 10 s), then stops it. */
async function drain(t: Test, server: RedisServer, outbox: MemoryOutbox, store = new MemoryStateStore(), batchSize = 500) {
  const settings = settingsFor(server, batchSize);
  const redis: Redis = createRedisConnection(settings, 'test', silentLogger);
  t.teardown(() => redis.disconnect());
  await redis.connect();
  const uplink = new Uplink(redis, outbox, store, settings, silentLogger, () => undefined);
  uplink.start();
  const deadline = Date.now() + 10_000;
  while (outbox.stats().size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const stats = uplink.stats();
  await uplink.stop();
  return stats;
}

async function streamPayloads(server: RedisServer): Promise<string[]> {
  const rows = await server.client().xrange(STREAM, '-', '+');
  return rows.map(([, fields]) => fields[fields.indexOf('payload') + 1] as string);
}

t.test('entries Redis has but the database forgot it sent (lost acknowledgement): recognised, not sent twice', async (t) => {
  const server = await RedisServer.start(t, { appendonly: false });
  const sent = [1, 2, 3, 4, 5].map((i) => entry(i, 'a', 1000 + i));
  // First run delivers all five.
  await drain(t, server, await outboxWith(sent));
  // The database lost the commit that deleted them: a restart finds them again, same seqs.
  const stats = await drain(t, server, await outboxWith(sent));
  t.same(await streamPayloads(server), ['a:1', 'a:2', 'a:3', 'a:4', 'a:5'], 'each once');
  t.equal(stats.alreadyPresent, 5, 'recognised as already there');
  t.equal(stats.epochChanges, 0, 'no new epoch needed');
});

t.test('seqs handed out again for new messages (power cut lost the last commits, or a new database): new epoch, nothing lost', async (t) => {
  const server = await RedisServer.start(t, { appendonly: false });
  await drain(t, server, await outboxWith([1, 2, 3, 4, 5].map((i) => entry(i, 'old', 1000 + i))));
  // The database came back with only seqs 1–2 (same content), then new messages got 3, 4, 5.
  const again = [entry(1, 'old', 1001), entry(2, 'old', 1002), entry(3, 'new', 2003), entry(4, 'new', 2004), entry(5, 'new', 2005)];
  const store = new MemoryStateStore();
  const stats = await drain(t, server, await outboxWith(again), store);
  t.same(await streamPayloads(server), ['old:1', 'old:2', 'old:3', 'old:4', 'old:5', 'new:3', 'new:4', 'new:5'], 'the new messages are there once, after the old ones');
  const ids = (await server.client().xrange(STREAM, '-', '+')).map(([id]) => id);
  t.same(ids.slice(5), ['1-3', '1-4', '1-5'], 'under the next epoch');
  t.equal(stats.epochChanges, 1);
  t.equal(store.get('uplink.epoch'), '1', 'the epoch is stored');
});

t.test('two gateways writing to one stream (same gateway id): every entry of both arrives, none counted as delivered without being there', async (t) => {
  const server = await RedisServer.start(t, { appendonly: false });
  const a = await outboxWith(Array.from({ length: 50 }, (_, i) => entry(i, 'A', 5000 + i)));
  const b = await outboxWith(Array.from({ length: 50 }, (_, i) => entry(i, 'B', 9000 + i)));
  await Promise.all([drain(t, server, a), drain(t, server, b)]);
  const payloads = await streamPayloads(server);
  for (const who of ['A', 'B']) {
    const mine = payloads.filter((p) => p.startsWith(`${who}:`)).map((p) => Number(p.split(':')[1]));
    t.same(mine, Array.from({ length: 50 }, (_, i) => i), `all 50 of ${who}, once, in order`);
  }
});

t.test('pipelined batches behind a re-send of entries Redis already has: no failure, each entry once', async (t) => {
  const server = await RedisServer.start(t, { appendonly: false });
  const all = Array.from({ length: 2000 }, (_, i) => entry(i, 'a', 10_000 + i));
  await drain(t, server, await outboxWith(all.slice(0, 1500)), undefined, 100);
  // A restart that forgot the acknowledgements: everything is sent again, in batches of 100, four
  // in flight; the ones behind a batch of already-present entries find the stream's top beyond
  // their predecessor and are re-sent rather than stored behind a hole.
  const stats = await drain(t, server, await outboxWith(all), undefined, 100);
  const payloads = await streamPayloads(server);
  t.same(payloads, all.map((e) => e.payload.toString()), 'all 2000 once, in order');
  // At least the first 1500; a batch sent behind a refused one may have stored its entries when the
  // stream already ended with its predecessor (no hole), and they then count as present too.
  t.ok(stats.alreadyPresent >= 1500, `the first 1500 recognised as there (${stats.alreadyPresent})`);
  t.equal(stats.failures, 0, 'a gap refusal is not a failure');
  t.equal(stats.epochChanges, 0);
  t.equal(stats.delivered, 2000);
});

t.test('a batch that fails stops the pipelined batches behind it: nothing stored behind the failure', async (t) => {
  const server = await RedisServer.start(t, { appendonly: false });
  const all = Array.from({ length: 600 }, (_, i) => entry(i + 1, 'a', 20_000 + i));
  await drain(t, server, await outboxWith(all.slice(0, 200)), undefined, 100);
  // Then another writer put id 0-250 with other content into the stream, and the gateway restarts
  // with its acknowledgements lost: seq 201 is refused and not there, so the batch 201–300 stops
  // with a conflict and the uplink moves to epoch 1; the batches sent behind it (301–400, …)
  // must not have stored anything under epoch 0 (they would then be there twice).
  await server.client().xadd(STREAM, '0-250', 'topic', 'x', 'payload', 'foreign', 'ts', '1', 'source', 'other');
  const stats = await drain(t, server, await outboxWith(all), undefined, 100);
  const rows = await server.client().xrange(STREAM, '-', '+');
  const epoch0 = rows.filter(([id]) => id.startsWith('0-')).map(([id]) => Number(id.slice(2)));
  t.same(epoch0, [...Array.from({ length: 200 }, (_, i) => i + 1), 250], 'under epoch 0 only seqs 1–200 and the foreign 250');
  const ours = rows.filter(([, f]) => f[f.indexOf('source') + 1] === 'a').map(([, f]) => Number(f[f.indexOf('seq') + 1]));
  t.same(ours.filter((seq) => seq > 200), Array.from({ length: 400 }, (_, i) => i + 201), 'seqs 201–600 once each, in order, under epoch 1');
  t.equal(stats.epochChanges, 1);
});
