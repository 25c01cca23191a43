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

function settingsFor(server: RedisServer): RedisSettings {
  const config = validateConfig({ redis: { url: server.url, gatewayId: 'gw', reconnect: { initialDelay: 20, maxDelay: 200 } } }, 'test');
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
async function drain(t: Test, server: RedisServer, outbox: MemoryOutbox, store = new MemoryStateStore()) {
  const settings = settingsFor(server);
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
