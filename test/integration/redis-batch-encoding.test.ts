/**
 * The uplink's batch encoding (adapters/redis/batch-encoding.ts) as the real redis-server's
 * `cmsgpack` reads it: every field back byte for byte, at the boundaries of each string type; and
 * the raw path the uplink takes (Outbox.scanRaw) gives the same bytes as decoded entries.
 */
import t from 'tap';
import { join } from 'node:path';
import { BatchEncoder, FIELDS_PER_ENTRY, encodeBatch } from '../../adapters/redis/batch-encoding';
import { SqliteOutbox, SqliteStorage } from '../../adapters/sqlite';
import { MemoryOutbox, type OutboxEntry, type OutboxInput, type QoS } from '../../gateway/broker';
import { RedisServer } from '../helpers/redis';
import { tempDir } from '../helpers/sqlite';

function bytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

t.test('Redis unpacks every field of every entry exactly', async (t) => {
  const server = await RedisServer.start(t);
  const redis = server.client();
  const payloadSizes = [0, 1, 31, 32, 255, 256, 65_535, 65_536, 200_000];
  const entries: OutboxEntry[] = payloadSizes.map((size, i) => ({
    seq: [1, 9, 10, 99_999, 2 ** 53 - 1, 1_000_000_000_000, 42, 7, 8][i] as number,
    topic: ['a', 'x'.repeat(31), 'y'.repeat(32), 'sensors/ünïcode/✓', 't/𝄞', 'z'.repeat(70_000), 'b', 'c', 'd'][i] as string,
    payload: bytes(size, i),
    qos: (i % 3) as QoS,
    retain: i % 2 === 1,
    arrivedAt: [0, 1_716_200_000_123, 5, 10, 100, 999, 1000, 1, 2 ** 41][i] as number,
    source: i === 3 ? 's'.repeat(40) : `serial:tty${i}`,
    ...(i % 4 === 1 ? { properties: { contentType: 'text/plain', userProperties: { a: '1', b: ['x', 'y'] }, correlationData: Buffer.from([0, 255, 1]) } } : {}),
  }));
  // Returns the unpacked flat array as a Redis array of bulk strings (binary-safe).
  const unpacked = (await redis.callBuffer('EVAL', 'return cmsgpack.unpack(ARGV[1])', '0', encodeBatch(entries))) as Buffer[];
  t.equal(unpacked.length, entries.length * FIELDS_PER_ENTRY, 'eight strings per entry');
  entries.forEach((e, i) => {
    const f = unpacked.slice(i * FIELDS_PER_ENTRY, (i + 1) * FIELDS_PER_ENTRY).map((b) => Buffer.from(b));
    t.same(
      [f[0]?.toString(), f[1]?.toString('utf8'), f[3]?.toString(), f[4]?.toString(), f[5]?.toString(), f[6]?.toString('utf8'), f[7]?.toString('utf8')],
      [String(e.seq), e.topic, String(e.qos), e.retain ? '1' : '0', String(e.arrivedAt), e.source, i % 4 === 1 ? '{"contentType":"text/plain","correlationData":"AP8B","userProperties":{"a":"1","b":["x","y"]}}' : ''],
      `entry ${i}: seq, topic, qos, retain, ts, source, properties (JSON, or empty)`,
    );
    t.ok(f[2]?.equals(e.payload), `entry ${i}: payload of ${e.payload.length} bytes, byte for byte`);
  });
});

t.test('entries scanned raw (Outbox.scanRaw → BatchEncoder.add) encode to the same bytes as decoded ones, stored or pending', async (t) => {
  const dir = tempDir(t);
  const limits = { maxMessages: 1000, maxBytes: 64 * 1024 ** 2, whenFull: 'drop-new' } as const;
  const storage = new SqliteStorage({ path: join(dir, 'edgeway.db'), sync: 'normal', flushInterval: 60_000 });
  const sqlite = new SqliteOutbox(storage, limits);
  t.teardown(() => sqlite.close());
  await sqlite.open();
  const memory = new MemoryOutbox(limits);
  await memory.open();
  const input = (i: number): OutboxInput => ({
    topic: ['a', 'x'.repeat(40), 'sensors/ünïcode/✓', 't/𝄞'][i % 4] as string,
    payload: bytes([0, 5, 32, 33, 300, 70_000][i % 6] as number, i),
    qos: (i % 3) as QoS,
    retain: i % 2 === 0,
    arrivedAt: 1_716_200_000_000 + ((i * 7919) % 5000) - 2500,
    source: i % 5 === 0 ? 's'.repeat(33) : `serial:tty${i % 3}`,
    ...(i % 7 === 0 ? { properties: { payloadFormatIndicator: true, messageExpiryInterval: i, responseTopic: 'r/✓', userProperties: { k: `v${i}` } } } : {}),
  });
  const stored = Array.from({ length: 1100 }, (_, i) => input(i)).slice(0, 700);
  // Committed: more than one block; then more entries left pending (a reader asked for them
  // before the commit, so the commit reserved seqs for them).
  const committed = sqlite.append(stored);
  sqlite.read(0, 1, { pending: true });
  storage.flush();
  await committed;
  for (let i = 700; i < 900; i++) sqlite.add(input(i));
  await memory.append(Array.from({ length: 900 }, (_, i) => input(i)));
  for (const [name, outbox] of [['sqlite', sqlite], ['memory', memory]] as const) {
    for (const after of [0, 650, 699, 700, 850]) {
      const expected = encodeBatch(outbox.read(after, 500, { pending: true }));
      const encoder = new BatchEncoder();
      const visited = outbox.scanRaw(after, 500, (e) => {
        encoder.add(e);
        return true;
      }, { pending: true });
      t.equal(visited, Math.min(500, 900 - after), `${name}, after ${after}: entries visited`);
      t.ok(encoder.finish().equals(expected), `${name}, after ${after}: same bytes`);
    }
  }
  t.equal(sqlite.stats().pending, 200, 'the last 200 were read while pending');
});
