/**
 * The uplink's batch encoding (adapters/redis/batch-encoding.ts) as the real redis-server's
 * `cmsgpack` reads it: every field back byte for byte, at the boundaries of each string type.
 */
import t from 'tap';
import { FIELDS_PER_ENTRY, encodeBatch } from '../../adapters/redis/batch-encoding';
import type { OutboxEntry, QoS } from '../../gateway/broker';
import { RedisServer } from '../helpers/redis';

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
  }));
  // Returns the unpacked flat array as a Redis array of bulk strings (binary-safe).
  const unpacked = (await redis.callBuffer('EVAL', 'return cmsgpack.unpack(ARGV[1])', '0', encodeBatch(entries))) as Buffer[];
  t.equal(unpacked.length, entries.length * FIELDS_PER_ENTRY, 'seven strings per entry');
  entries.forEach((e, i) => {
    const f = unpacked.slice(i * FIELDS_PER_ENTRY, (i + 1) * FIELDS_PER_ENTRY).map((b) => Buffer.from(b));
    t.same(
      [f[0]?.toString(), f[1]?.toString('utf8'), f[3]?.toString(), f[4]?.toString(), f[5]?.toString(), f[6]?.toString('utf8')],
      [String(e.seq), e.topic, String(e.qos), e.retain ? '1' : '0', String(e.arrivedAt), e.source],
      `entry ${i}: seq, topic, qos, retain, ts, source`,
    );
    t.ok(f[2]?.equals(e.payload), `entry ${i}: payload of ${e.payload.length} bytes, byte for byte`);
  });
});
