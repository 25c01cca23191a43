/**
 * The outbox contract suite (DESIGN.md "Contract suites: one test suite per port, run against
 * every implementation"). Each implementation's test file calls `outboxContract` with a factory.
 */
import type { Test } from 'tap';
import { outboxEntryBytes, type Outbox, type OutboxFullPolicy, type OutboxInput, type OutboxLimits } from '../../gateway/broker';

export interface OutboxUnderTest {
  /** A new instance over fresh, empty storage; not opened. */
  readonly outbox: Outbox;
  /**
   * A new instance over the same storage (call after closing `outbox`): a restart. Absent for an
   * implementation that does not persist (the in-memory one), which skips the restart tests.
   */
  readonly reopen?: (limits?: OutboxLimits) => Outbox;
}

export type OutboxFactory = (t: Test, limits: OutboxLimits) => OutboxUnderTest;

const UNBOUNDED: OutboxLimits = { maxMessages: 1_000_000, maxBytes: 1024 ** 3, whenFull: 'drop-oldest' };

/** An entry whose `outboxEntryBytes` is exactly `size` (≥ 8), payload tagged with `i`. */
export function sizedEntry(i: number, size = 16): OutboxInput {
  const topic = 'o/t';
  const source = 'src';
  const tag = Buffer.from(`#${i}#`);
  const payload = Buffer.alloc(Math.max(0, size - topic.length - source.length));
  tag.copy(payload, 0, 0, Math.min(tag.length, payload.length));
  return { topic, payload, qos: 1, retain: false, arrivedAt: 1_700_000_000_000 + i, source };
}

/** Reference model of the bounds: which indices stay, and how many are dropped per kind. */
function model(limits: OutboxLimits, sizes: readonly number[]) {
  let kept: { i: number; size: number }[] = [];
  let droppedOldest = 0;
  let droppedNew = 0;
  const total = () => kept.reduce((s, e) => s + e.size, 0);
  sizes.forEach((size, i) => {
    const fits = () => kept.length < limits.maxMessages && total() + size <= limits.maxBytes;
    if (size > limits.maxBytes || (limits.whenFull === 'drop-new' && !fits())) {
      droppedNew++;
      return;
    }
    while (!fits()) {
      kept = kept.slice(1);
      droppedOldest++;
    }
    kept.push({ i, size });
  });
  return { kept: kept.map((e) => e.i), bytes: total(), droppedOldest, droppedNew };
}

function tagOf(payload: Buffer): number {
  const m = /^#(\d+)#/.exec(payload.toString('latin1'));
  return m === null ? -1 : Number(m[1]);
}

export function outboxContract(t: Test, name: string, factory: OutboxFactory): void {
  t.test(`${name}: outbox contract`, async (t) => {
    const make = async (t: Test, limits: OutboxLimits = UNBOUNDED) => {
      const under = factory(t, limits);
      await under.outbox.open();
      await under.outbox.open(); // idempotent
      t.teardown(() => under.outbox.close());
      return under;
    };

    t.test('empty, then append and read back every field in order', async (t) => {
      const { outbox } = await make(t);
      t.same(outbox.read(0, 10), [], 'nothing to read');
      t.match(outbox.stats(), { size: 0, bytes: 0, lastSeq: 0, appended: 0, droppedOldest: 0, droppedNew: 0 });
      const inputs: OutboxInput[] = [
        { topic: 'sensors/a/temp', payload: Buffer.from('21.5'), qos: 0, retain: false, arrivedAt: 1716200000000, source: 'serial:a' },
        { topic: 'sensors/b', payload: Buffer.from([0, 1, 2, 255]), qos: 1, retain: true, arrivedAt: 1716200000001, source: 'client-1' },
        { topic: 'x/ünïcode', payload: Buffer.alloc(0), qos: 2, retain: false, arrivedAt: 1716200000002, source: 'c' },
      ];
      const seqs = await outbox.append(inputs);
      t.equal(seqs.length, 3);
      t.ok(seqs.every((s) => typeof s === 'number' && Number.isSafeInteger(s) && s >= 1), 'seqs are positive integers');
      t.ok((seqs[0] as number) < (seqs[1] as number) && (seqs[1] as number) < (seqs[2] as number), 'strictly increasing');
      const read = outbox.read(0, 10);
      t.same(
        read.map((e) => ({ ...e, payload: e.payload.toString('hex') })),
        inputs.map((e, i) => ({ ...e, seq: seqs[i], payload: e.payload.toString('hex') })),
        'every field as appended, in order',
      );
      t.ok(read.every((e) => Buffer.isBuffer(e.payload)), 'payloads are Buffers');
      const bytes = inputs.reduce((s, e) => s + outboxEntryBytes(e), 0);
      t.match(outbox.stats(), { size: 3, bytes, lastSeq: seqs[2], appended: 3 });
    });

    t.test('cursor and limit', async (t) => {
      const { outbox } = await make(t);
      const seqs = (await outbox.append(Array.from({ length: 10 }, (_, i) => sizedEntry(i)))) as number[];
      t.same(outbox.read(0, 3).map((e) => e.seq), seqs.slice(0, 3), 'the first 3');
      t.same(outbox.read(seqs[2] as number, 3).map((e) => e.seq), seqs.slice(3, 6), 'entries after the cursor');
      t.same(outbox.read(seqs[9] as number, 3), [], 'nothing after the last');
      t.same(outbox.read(0, 0), [], 'limit 0');
      t.same(outbox.read((seqs[4] as number) - 0.5, 100).map((e) => e.seq), seqs.slice(4), 'seq > cursor, not >=');
      t.same(outbox.read(0, 1000).map((e) => tagOf(e.payload)), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'payloads in order');
    });

    t.test('concurrent appends keep call order', async (t) => {
      const { outbox } = await make(t);
      const calls = Array.from({ length: 50 }, (_, i) => outbox.append([sizedEntry(2 * i), sizedEntry(2 * i + 1)]));
      const results = (await Promise.all(calls)).flat() as number[];
      t.ok(results.every((s, i) => i === 0 || s > (results[i - 1] as number)), 'seqs increase across calls');
      t.same(outbox.read(0, 1000).map((e) => tagOf(e.payload)), Array.from({ length: 100 }, (_, i) => i), 'stored in call order');
    });

    t.test('ack deletes up to a seq; seqs keep increasing after the queue emptied', async (t) => {
      const { outbox } = await make(t);
      const seqs = (await outbox.append(Array.from({ length: 5 }, (_, i) => sizedEntry(i, 20)))) as number[];
      await outbox.ack(seqs[1] as number);
      t.same(outbox.read(0, 10).map((e) => e.seq), seqs.slice(2), 'the first two are gone');
      t.match(outbox.stats(), { size: 3, bytes: 60, acknowledged: 2 });
      await outbox.ack(seqs[0] as number);
      t.match(outbox.stats(), { size: 3, acknowledged: 2 }, 'acknowledging seqs already gone is a no-op');
      await outbox.ack((seqs[4] as number) + 1000);
      t.match(outbox.stats(), { size: 0, bytes: 0, acknowledged: 5 }, 'ack beyond the last empties it');
      const [next] = await outbox.append([sizedEntry(9)]);
      t.ok((next as number) > (seqs[4] as number), 'a new seq after emptying is larger than every earlier one');
      t.same(outbox.read(0, 10).map((e) => e.seq), [next]);
    });

    const boundCases: { name: string; limits: OutboxLimits; sizes: number[]; batched: boolean }[] = [];
    for (const whenFull of ['drop-oldest', 'drop-new'] as OutboxFullPolicy[]) {
      boundCases.push(
        { name: `${whenFull}, by count, one at a time`, limits: { maxMessages: 5, maxBytes: 1e9, whenFull }, sizes: Array(12).fill(16), batched: false },
        { name: `${whenFull}, by count, one batch`, limits: { maxMessages: 5, maxBytes: 1e9, whenFull }, sizes: Array(12).fill(16), batched: true },
        { name: `${whenFull}, by bytes, equal sizes`, limits: { maxMessages: 1000, maxBytes: 1000, whenFull }, sizes: Array(15).fill(100), batched: false },
        {
          name: `${whenFull}, by bytes, mixed sizes and one too large`,
          limits: { maxMessages: 1000, maxBytes: 1000, whenFull },
          sizes: [300, 300, 300, 200, 50, 1001, 20, 400, 10, 600, 30, 90],
          batched: false,
        },
        {
          name: `${whenFull}, both bounds, one batch`,
          limits: { maxMessages: 4, maxBytes: 500, whenFull },
          sizes: [100, 200, 50, 50, 50, 300, 20, 20, 600, 10],
          batched: true,
        },
      );
    }
    for (const c of boundCases) {
      t.test(`bounds: ${c.name}`, async (t) => {
        const { outbox } = await make(t, c.limits);
        const inputs = c.sizes.map((size, i) => sizedEntry(i, size));
        const results: (number | null)[] = [];
        if (c.batched) results.push(...(await outbox.append(inputs)));
        else for (const input of inputs) results.push(...(await outbox.append([input])));
        const expected = model(c.limits, c.sizes);
        const stats = outbox.stats();
        t.same(outbox.read(0, 10_000).map((e) => tagOf(e.payload)), expected.kept, 'the entries the policy keeps, in order');
        t.equal(stats.size, expected.kept.length, 'size');
        t.equal(stats.bytes, expected.bytes, 'bytes');
        t.ok(stats.size <= c.limits.maxMessages && stats.bytes <= c.limits.maxBytes, 'within both bounds');
        t.equal(stats.droppedOldest, expected.droppedOldest, 'droppedOldest counted exactly');
        t.equal(stats.droppedNew, expected.droppedNew, 'droppedNew counted exactly');
        t.equal(results.filter((r) => r === null).length, expected.droppedNew, 'one null result per refused entry');
        t.equal(stats.appended + stats.droppedNew, c.sizes.length, 'every input is appended or refused');
      });
    }

    t.test('watch: called once new entries are readable; not for refused ones; removable', async (t) => {
      const { outbox } = await make(t, { maxMessages: 2, maxBytes: 1024 ** 2, whenFull: 'drop-new' });
      const readable: number[] = [];
      const stop = outbox.watch(() => readable.push(outbox.read(0, 10).length));
      await outbox.append([sizedEntry(1)]);
      t.same(readable, [1], 'notified once, with the entry already readable');
      await outbox.append([sizedEntry(2), sizedEntry(3)]); // the third is refused
      t.same(readable, [1, 2], 'notified for the batch that stored something');
      await outbox.append([sizedEntry(4)]); // full: refused
      t.same(readable, [1, 2], 'not notified when nothing was stored');
      stop();
      await outbox.ack(outbox.stats().lastSeq);
      await outbox.append([sizedEntry(5)]);
      t.same(readable, [1, 2], 'not after the listener was removed');
    });

    t.test('closed: append and ack reject with a stable code; close is idempotent', async (t) => {
      const { outbox } = await make(t);
      await t.rejects(factory(t, UNBOUNDED).outbox.append([sizedEntry(0)]), { code: 'EDGEWAY_ERR_STORAGE_CLOSED' }, 'before open');
      await outbox.close();
      await outbox.close();
      await t.rejects(outbox.append([sizedEntry(1)]), { code: 'EDGEWAY_ERR_STORAGE_CLOSED' }, 'after close');
      await t.rejects(outbox.ack(1), { code: 'EDGEWAY_ERR_STORAGE_CLOSED' });
    });

    t.test('restart: entries, order, counters and seqs survive', async (t) => {
      const under = factory(t, UNBOUNDED);
      if (under.reopen === undefined) {
        t.pass('not persistent: nothing survives a restart by design (MemoryOutbox)');
        return;
      }
      const first = under.outbox;
      await first.open();
      const seqs = (await first.append(Array.from({ length: 6 }, (_, i) => sizedEntry(i, 30)))) as number[];
      await first.ack(seqs[1] as number);
      const before = first.read(0, 100);
      await first.close();

      const second = under.reopen();
      t.teardown(() => second.close());
      await second.open();
      t.same(second.read(0, 100), before, 'the same entries, byte for byte, in order');
      t.match(second.stats(), { size: 4, bytes: 120, lastSeq: seqs[5] });
      await second.ack(seqs[5] as number);
      t.equal(second.stats().size, 0, 'emptied');
      await second.close();

      const third = under.reopen();
      t.teardown(() => third.close());
      await third.open();
      t.equal(third.stats().lastSeq, seqs[5], 'lastSeq survives an empty queue');
      const [next] = await third.append([sizedEntry(99)]);
      t.ok((next as number) > (seqs[5] as number), 'seq after a restart with an empty queue is still larger');
    });
  });
}
