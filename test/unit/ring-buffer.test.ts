import t from 'tap';
import { RingBuffer } from '../../gateway/broker/ring-buffer';

/** Items in FIFO order through the iterator (does not consume). */
const items = <T>(rb: RingBuffer<T>): T[] => [...rb];

t.test('empty buffer', async (t) => {
  const rb = new RingBuffer<number>(5);
  t.equal(rb.length, 0);
  t.equal(rb.capacity, 5);
  t.equal(rb.isFull(), false);
  t.equal(rb.shift(), undefined, 'shift on empty returns undefined');
  t.equal(rb.peek(), undefined, 'peek on empty returns undefined');
  t.same(items(rb), []);
});

t.test('FIFO order and peek', async (t) => {
  const rb = new RingBuffer<string>(10);
  t.equal(rb.push('a'), true);
  t.equal(rb.push('b'), true);
  t.equal(rb.push('c'), true);
  t.equal(rb.peek(), 'a', 'peek returns the oldest');
  t.equal(rb.length, 3, 'peek does not remove');
  t.same(items(rb), ['a', 'b', 'c'], 'iterator in FIFO order');
  t.equal(rb.shift(), 'a');
  t.equal(rb.shift(), 'b');
  t.equal(rb.shift(), 'c');
  t.equal(rb.shift(), undefined);
  t.equal(rb.length, 0);
});

t.test('capacity bound: push refuses when full, nothing is overwritten', async (t) => {
  const rb = new RingBuffer<number>(3);
  t.ok(rb.push(1));
  t.ok(rb.push(2));
  t.ok(rb.push(3));
  t.equal(rb.isFull(), true);
  t.equal(rb.push(4), false, 'push on a full buffer returns false');
  t.equal(rb.length, 3);
  t.same(items(rb), [1, 2, 3], 'the refused item was not stored and nothing was dropped');
  t.equal(rb.shift(), 1);
  t.equal(rb.isFull(), false);
  t.ok(rb.push(5), 'room again after a shift');
  t.same(items(rb), [2, 3, 5]);
});

t.test('capacity 0 accepts nothing', async (t) => {
  const rb = new RingBuffer<number>(0);
  t.equal(rb.isFull(), true);
  t.equal(rb.push(1), false);
  t.equal(rb.length, 0);
  t.equal(rb.shift(), undefined);
});

t.test('invalid capacity', async (t) => {
  t.throws(() => new RingBuffer(-1), RangeError);
  t.throws(() => new RingBuffer(1.5), RangeError);
  t.throws(() => new RingBuffer(Number.NaN), RangeError);
});

t.test('FIFO across growth beyond the initial allocation', async (t) => {
  const rb = new RingBuffer<number>(1000);
  const accepted = Array.from({ length: 1000 }, (_, i) => rb.push(i));
  t.equal(accepted.filter(Boolean).length, 1000, 'all 1000 pushes accepted');
  t.equal(rb.length, 1000);
  t.equal(rb.isFull(), true);
  t.equal(rb.push(1000), false, 'bound reached exactly at capacity');
  const out: number[] = [];
  for (let v = rb.shift(); v !== undefined; v = rb.shift()) out.push(v);
  t.same(out, Array.from({ length: 1000 }, (_, i) => i), 'all items in order');
});

t.test('FIFO across wrap-around and growth while wrapped', async (t) => {
  // Capacity not a power of two so growth ends at a partial size (16 → 32 → 40).
  const rb = new RingBuffer<number>(40);
  const model: number[] = [];
  let next = 0;
  const push = (n: number): void => {
    for (let i = 0; i < n; i++) {
      const ok = rb.push(next);
      if (model.length < 40) {
        t.equal(ok, true, `push ${next}`, { diagnostic: false });
        model.push(next);
      } else {
        t.equal(ok, false, `push ${next} refused when full`);
      }
      next++;
    }
  };
  const shift = (n: number): void => {
    for (let i = 0; i < n; i++) t.equal(rb.shift(), model.shift(), 'shift in order', { diagnostic: false });
  };
  push(10);
  shift(7); // head moves to 7 of 16
  push(12); // 15 items: wraps around the 16-slot array
  t.same(items(rb), model, 'wrapped contents in order');
  push(5); // 20 items: grows while wrapped
  t.same(items(rb), model, 'contents in order after growing while wrapped');
  shift(15);
  push(30); // 35 items: wraps in the 32-slot array, then grows to 40
  t.same(items(rb), model, 'contents in order after second growth');
  push(7); // 5 fit, 2 refused
  t.equal(rb.length, 40);
  t.same(items(rb), model);
  // Many cycles at full capacity: pure wrap-around.
  for (let round = 0; round < 100; round++) {
    shift(3);
    push(3);
  }
  t.same(items(rb), model, 'contents in order after 100 wrap cycles');
  shift(40);
  t.equal(rb.length, 0);
  t.equal(rb.shift(), undefined);
});

t.test('clear', async (t) => {
  const rb = new RingBuffer<{ n: number }>(50);
  for (let i = 0; i < 30; i++) rb.push({ n: i });
  for (let i = 0; i < 5; i++) rb.shift();
  rb.clear();
  t.equal(rb.length, 0, 'empty after clear');
  t.equal(rb.peek(), undefined);
  t.equal(rb.shift(), undefined);
  t.same(items(rb), []);
  t.equal(rb.isFull(), false);
  const accepted = Array.from({ length: 50 }, (_, i) => rb.push({ n: 100 + i }));
  t.equal(accepted.filter(Boolean).length, 50, 'full capacity available again');
  t.equal(rb.push({ n: -1 }), false, 'bound still enforced after clear');
  t.same(
    items(rb).map((x) => x.n),
    Array.from({ length: 50 }, (_, i) => 100 + i),
    'only items pushed after clear, in order',
  );
});

t.test('shift releases references (no retention of consumed items)', async (t) => {
  const rb = new RingBuffer<object>(4);
  rb.push({});
  rb.shift();
  const slots = (rb as unknown as { items: unknown[] }).items;
  t.ok(
    slots.every((x) => x === undefined),
    'consumed slot is cleared so the message can be garbage-collected',
  );
});
