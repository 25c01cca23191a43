import { RingBuffer } from '../../gateway/broker';

/**
 * A fixed-capacity FIFO that makes room by dropping its oldest entry: the broker's ring buffer
 * (no Array#shift on a queue, DESIGN.md convention 7) with the drop-oldest policy of the serial
 * write queue. `push` returns what it evicted, so the caller can count the drop.
 */
export class BoundedQueue<T> {
  private readonly ring: RingBuffer<T>;

  constructor(readonly capacity: number) {
    this.ring = new RingBuffer(capacity);
  }

  get length(): number {
    return this.ring.length;
  }

  /** Adds `item`; returns the evicted oldest item when the queue was full (or `item` itself at capacity 0). */
  push(item: T): T | undefined {
    if (this.capacity === 0) return item;
    const evicted = this.ring.isFull() ? this.ring.shift() : undefined;
    this.ring.push(item);
    return evicted;
  }

  shift(): T | undefined {
    return this.ring.shift();
  }

  clear(): void {
    this.ring.clear();
  }
}
