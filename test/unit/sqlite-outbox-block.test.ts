import t from 'tap';
import { MAX_BLOCK_BYTES, MAX_BLOCK_ENTRIES, MalformedBlockError, OutboxBlockBuilder, blockEntrySizes, decodeBlock } from '../../adapters/sqlite/outbox-block';
import { outboxEntryBytes, type OutboxEntry, type OutboxInput, type QoS } from '../../gateway/broker';

/** Deterministic pseudo-random numbers (a failure must be reproducible). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function decodeAll(data: Buffer, firstSeq: number, from = 0): OutboxEntry[] {
  const out: OutboxEntry[] = [];
  decodeBlock(data, firstSeq, from, (e) => out.push(e) > 0);
  return out;
}

function plain(e: OutboxInput): object {
  return { ...e, payload: e.payload.toString('hex') };
}

t.test('round trip: every field, shared names, clocks going backwards, odd sizes', async (t) => {
  const random = lcg(7);
  const topics = ['sensors/a/temp', 'sensors/b', 'x/ünïcode/✓', 'π', `long/${'z'.repeat(300)}`];
  const sources = ['serial:ttyUSB0', 'client-1', 'sensors/a/temp', '𝄞-emoji-client'];
  let clock = 1_716_200_000_000;
  const inputs: OutboxInput[] = Array.from({ length: 700 }, (_, i) => {
    clock += Math.floor(random() * 2000) - 600; // NTP steps back too
    const size = i === 5 ? 0 : i === 6 ? 70_000 : Math.floor(random() * 200);
    const payload = Buffer.alloc(size);
    for (let k = 0; k < size; k++) payload[k] = Math.floor(random() * 256);
    return {
      topic: topics[Math.floor(random() * topics.length)] as string,
      payload,
      qos: Math.floor(random() * 3) as QoS,
      retain: random() < 0.3,
      arrivedAt: i === 7 ? 0 : clock,
      source: sources[Math.floor(random() * sources.length)] as string,
    };
  });
  const builder = new OutboxBlockBuilder();
  const sizes = inputs.map((e) => builder.add(e));
  t.same(sizes, inputs.map(outboxEntryBytes), 'add returns the logical size of each entry');
  t.equal(builder.bytes, sizes.reduce((a, b) => a + b, 0), 'and the builder sums them');
  t.equal(builder.count, 700);
  const data = builder.finish();
  const decoded = decodeAll(data, 1000);
  t.same(decoded.map(plain), inputs.map((e, i) => plain({ ...e, seq: 1000 + i } as OutboxEntry)), 'every entry back, in order, with consecutive seqs');
  t.same(blockEntrySizes(data), sizes, 'entry sizes without decoding');
  const distinct = [...new Set([...topics, ...sources])].reduce((s, n) => s + Buffer.byteLength(n), 0);
  const payloads = inputs.reduce((s, e) => s + e.payload.length, 0);
  t.ok(data.length < payloads + distinct + 700 * 12, `repeated names are written once (${data.length} bytes for ${payloads} of payload)`);
});

t.test('decoding from the middle and stopping early', async (t) => {
  const builder = new OutboxBlockBuilder();
  for (let i = 0; i < 10; i++) builder.add({ topic: `t/${i % 3}`, payload: Buffer.from(`p${i}`), qos: 1, retain: false, arrivedAt: 1000 + i, source: 's' });
  const data = builder.finish();
  t.same(decodeAll(data, 50, 4).map((e) => [e.seq, e.topic, e.payload.toString()]), [4, 5, 6, 7, 8, 9].map((i) => [50 + i, `t/${i % 3}`, `p${i}`]), 'names defined by skipped entries still resolve');
  const seen: number[] = [];
  decodeBlock(data, 50, 0, (e) => seen.push(e.seq) < 3);
  t.same(seen, [50, 51, 52], 'visit returning false stops');
});

t.test('a block is full at MAX_BLOCK_ENTRIES entries or MAX_BLOCK_BYTES encoded bytes', async (t) => {
  const small = new OutboxBlockBuilder();
  for (let i = 0; i < MAX_BLOCK_ENTRIES - 1; i++) small.add({ topic: 't', payload: Buffer.alloc(1), qos: 0, retain: false, arrivedAt: 0, source: 's' });
  t.notOk(small.full);
  small.add({ topic: 't', payload: Buffer.alloc(1), qos: 0, retain: false, arrivedAt: 0, source: 's' });
  t.ok(small.full, 'by count');
  const big = new OutboxBlockBuilder();
  big.add({ topic: 't', payload: Buffer.alloc(MAX_BLOCK_BYTES - 100), qos: 0, retain: false, arrivedAt: 0, source: 's' });
  t.notOk(big.full);
  big.add({ topic: 't', payload: Buffer.alloc(200), qos: 0, retain: false, arrivedAt: 0, source: 's' });
  t.ok(big.full, 'by bytes');
});

t.test('malformed blocks throw MalformedBlockError, never read out of bounds', async (t) => {
  const builder = new OutboxBlockBuilder();
  builder.add({ topic: 'a/b', payload: Buffer.from('hello'), qos: 1, retain: true, arrivedAt: 123, source: 'c' });
  builder.add({ topic: 'a/b', payload: Buffer.from('world'), qos: 1, retain: true, arrivedAt: 124, source: 'c' });
  const good = Buffer.from(builder.finish());
  for (let cut = 1; cut < good.length; cut++) {
    const truncated = good.subarray(0, cut);
    try {
      // A cut at an entry boundary is a valid shorter block; anywhere else it must throw.
      const n = decodeAll(truncated, 1).length;
      t.ok(n < 2, `cut at ${cut}: fewer entries`);
    } catch (err) {
      t.type(err, MalformedBlockError, `cut at ${cut}: MalformedBlockError`);
    }
  }
  t.throws(() => decodeAll(Buffer.from([9, 0]), 1), MalformedBlockError, 'unknown format byte');
  t.throws(() => decodeAll(Buffer.alloc(0), 1), MalformedBlockError, 'empty');
  // Flags without "new name", referring to name 5 of an empty table.
  t.throws(() => blockEntrySizes(Buffer.from([1, 0x01, 0, 5, 5, 0])), /referred to before/, 'a name used before it is defined');
});

t.test('MQTT 5 properties: kept in the block (what outboxPropertiesJson keeps), counted in the size, back as they were', async (t) => {
  const properties = {
    payloadFormatIndicator: true,
    messageExpiryInterval: 60,
    contentType: 'text/plain',
    responseTopic: 'r/✓',
    correlationData: Buffer.from([0, 1, 255]),
    userProperties: { a: '1', b: ['x', 'y'] },
    topicAlias: 7, // one connection's business: not kept
  };
  const inputs: OutboxInput[] = Array.from({ length: 6 }, (_, i) => ({
    topic: 'p/t',
    payload: Buffer.from(`payload ${i}`),
    qos: (i % 3) as QoS,
    retain: false,
    arrivedAt: 1_716_200_000_000 + i,
    source: 'c5',
    ...(i % 2 === 0 ? { properties } : {}),
  }));
  const builder = new OutboxBlockBuilder();
  const sizes = inputs.map((e) => builder.add(e));
  const data = builder.finish();
  t.same(sizes, inputs.map((e) => outboxEntryBytes(e)), 'the builder counts the properties bytes like outboxEntryBytes');
  t.same(blockEntrySizes(data), sizes, 'blockEntrySizes too');
  const decoded = decodeAll(data, 1);
  const { topicAlias: _dropped, ...kept } = properties;
  decoded.forEach((e, i) => t.same(e.properties, i % 2 === 0 ? kept : undefined, `entry ${i}: properties ${i % 2 === 0 ? 'as published (topic alias dropped)' : 'absent'}`));
  t.same(decodeAll(data, 1, 3).map((e) => e.payload.toString()), ['payload 3', 'payload 4', 'payload 5'], 'entries after ones with properties are stepped over correctly');
});
