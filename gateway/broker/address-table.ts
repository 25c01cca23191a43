/**
 * Source addresses (issue 8, abuse resistance): how they are compared, which are loopback, and a
 * bounded table of per-address state shared by the per-address limits and the login back-off.
 */

/**
 * The address a limit counts: an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`, what a dual-stack
 * listener reports for IPv4 clients) is the IPv4 address, so one client cannot count twice by
 * reaching a `::` and a `0.0.0.0` listener.
 */
export function sourceAddress(remoteAddress: string): string {
  return remoteAddress.length > 7 && remoteAddress.charCodeAt(0) === 58 /* : */ && /^::ffff:\d/i.test(remoteAddress) ? remoteAddress.slice(7) : remoteAddress;
}

/** 127.0.0.0/8 and ::1, IPv4-mapped forms included: clients on this machine. */
export function isLoopbackAddress(remoteAddress: string): boolean {
  const address = sourceAddress(remoteAddress);
  return address.startsWith('127.') || address === '::1';
}

/** How many pinned entries one insertion looks past before letting the table grow instead. */
const EVICTION_SCAN = 32;

/**
 * Per-address state, bounded: at most `maxTracked` entries, the least recently seen forgotten
 * first — except entries `pinned` says are still in use (an address with open connections or a
 * login in progress). Forgetting those would undo what they count: the open connections would
 * no longer count against the address's cap, and decrementing on close would find no entry.
 * Pinned entries are bounded by the open sockets themselves, so the table holds at most
 * `maxTracked` plus the number of addresses with a connection open. Eviction looks at a few
 * entries only (moving pinned ones to the recent end), so an insertion costs O(1) even when the
 * oldest entries are all pinned.
 */
export class AddressTable<E> {
  /** Insertion order is recency order: a touched entry is deleted and set again. */
  private readonly entries = new Map<string, E>();

  constructor(
    private readonly maxTracked: number,
    private readonly pinned: (entry: E) => boolean,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** The entry of `address`, marked as recently seen; undefined if none. */
  get(address: string): E | undefined {
    const entry = this.entries.get(address);
    if (entry !== undefined) this.touch(address, entry);
    return entry;
  }

  /** Looks without marking as seen (for tests and closing paths). */
  peek(address: string): E | undefined {
    return this.entries.get(address);
  }

  /** The entry of `address`, created with `create` (and the table trimmed) if it had none. */
  obtain(address: string, create: () => E): E {
    const existing = this.get(address);
    if (existing !== undefined) return existing;
    if (this.entries.size >= this.maxTracked) this.evict();
    const entry = create();
    this.entries.set(address, entry);
    return entry;
  }

  delete(address: string): void {
    this.entries.delete(address);
  }

  private touch(address: string, entry: E): void {
    this.entries.delete(address);
    this.entries.set(address, entry);
  }

  /** Forgets the least recently seen entry that is not pinned, if one is found within EVICTION_SCAN. */
  private evict(): void {
    for (let scanned = 0; scanned < EVICTION_SCAN; scanned++) {
      const oldest = this.oldest();
      if (oldest === undefined) return;
      const [address, entry] = oldest;
      if (!this.pinned(entry)) {
        this.entries.delete(address);
        return;
      }
      // In use, so recently relevant: moved to the recent end so the next eviction looks further.
      this.touch(address, entry);
    }
  }

  /**
   * The oldest entry, through an iterator kept between calls: a Map keeps the slots of deleted
   * entries until it is rehashed, and a new iterator would walk every one of them each time
   * (tens of microseconds per insertion under churn, measured).
   */
  private cursor: MapIterator<[string, E]> | null = null;

  private oldest(): [string, E] | undefined {
    for (let attempt = 0; attempt < 2; attempt++) {
      const next = (this.cursor ??= this.entries.entries()).next();
      if (!next.done) return next.value;
      this.cursor = null; // past the end: start again from the (new) oldest
    }
    return undefined;
  }
}
