/**
 * Fixed-capacity FIFO on a circular array. Queues of waiting messages use this instead of
 * Array#shift, which is O(n) on large arrays (DESIGN.md convention 7). The capacity is the bound:
 * `push` refuses when full, so the caller decides what to drop and counts it.
 */
export class RingBuffer<T> {
  private items: (T | undefined)[];
  private head = 0;
  private count = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 0) throw new RangeError(`invalid capacity ${capacity}`);
    // Grow lazily: most queues stay empty, and a bound of 1000 per client × many clients
    // must not preallocate.
    this.items = [];
  }

  get length(): number {
    return this.count;
  }

  isFull(): boolean {
    return this.count >= this.capacity;
  }

  push(item: T): boolean {
    if (this.count >= this.capacity) return false;
    if (this.count === this.items.length) this.grow();
    this.items[(this.head + this.count) % this.items.length] = item;
    this.count++;
    return true;
  }

  shift(): T | undefined {
    if (this.count === 0) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head = (this.head + 1) % this.items.length;
    this.count--;
    return item;
  }

  peek(): T | undefined {
    return this.count === 0 ? undefined : this.items[this.head];
  }

  clear(): void {
    this.items = [];
    this.head = 0;
    this.count = 0;
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (let i = 0; i < this.count; i++) yield this.items[(this.head + i) % this.items.length] as T;
  }

  private grow(): void {
    const size = Math.min(this.capacity, Math.max(16, this.items.length * 2));
    const next = new Array<T | undefined>(size);
    for (let i = 0; i < this.count; i++) next[i] = this.items[(this.head + i) % this.items.length];
    this.items = next;
    this.head = 0;
  }
}
