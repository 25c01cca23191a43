/**
 * A fixed-capacity FIFO on a ring (DESIGN.md convention 7: no Array#shift on a queue). When full,
 * `push` drops the oldest entry and returns it, so the caller can count the drop.
 */
export class BoundedQueue<T> {
  private readonly items: (T | undefined)[];
  private head = 0;
  private count = 0;

  constructor(readonly capacity: number) {
    this.items = new Array<T | undefined>(capacity);
  }

  get length(): number {
    return this.count;
  }

  /** Adds `item`; returns the evicted oldest item when the queue was full (or `item` itself at capacity 0). */
  push(item: T): T | undefined {
    if (this.capacity === 0) return item;
    let evicted: T | undefined;
    if (this.count === this.capacity) evicted = this.shift();
    this.items[(this.head + this.count) % this.capacity] = item;
    this.count++;
    return evicted;
  }

  shift(): T | undefined {
    if (this.count === 0) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head = (this.head + 1) % this.capacity;
    this.count--;
    return item;
  }

  clear(): void {
    this.items.fill(undefined);
    this.head = 0;
    this.count = 0;
  }
}
