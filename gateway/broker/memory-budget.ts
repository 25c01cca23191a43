/**
 * A byte budget shared by every session or every connection of the broker: the global bounds
 * limits.maxQueuedBytesTotal and limits.maxOutgoingBytesTotal. The per-client limits alone
 * multiply out of a Raspberry Pi's reach (10,000 sessions × 16 MiB of queue is 160 GB), so the
 * owners add and remove their bytes here and check it before they take more.
 *
 * A plain counter on purpose: the outgoing one is updated on every write of the QoS 0 hot path.
 */
export class ByteBudget {
  /** Bytes counted now (the gauge on /metrics and in $SYS). */
  used = 0;

  constructor(readonly limit: number) {}

  /** Whether `bytes` more stay within the budget. */
  fits(bytes: number): boolean {
    return this.used + bytes <= this.limit;
  }

  /** Whether more than the budget is counted (checked before dropping for a slow reader). */
  get exceeded(): boolean {
    return this.used > this.limit;
  }
}

/**
 * What one queued message costs besides its payload, in limits.maxQueuedBytesTotal: its queue
 * entry (an object of four fields and a ring-buffer slot; measured 64 bytes on 64-bit Node, which
 * has no pointer compression). Without it, 10,000 sessions × maxQueued 1000 messages with empty
 * payloads would count as 0 bytes while holding about 640 MB of entries.
 */
export const QUEUED_ENTRY_BYTES = 64;
