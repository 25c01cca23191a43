import { AddressTable, isLoopbackAddress, sourceAddress } from './address-table';
import type { BrokerLimits } from './types';

type PerAddressLimits = BrokerLimits['perAddress'];

interface AddressUse {
  /** Connections from the address open now. */
  open: number;
  /** Token bucket of new connections: refilled at connectionsPerSecond up to connectionBurst. */
  tokens: number;
  refilledAt: number;
}

/** What the accept path is told: admitted (with the address to release on close, or null if untracked) or refused. */
export type Admission =
  | { readonly admitted: true; readonly address: string | null }
  | { readonly admitted: false; readonly address: string; readonly limit: 'perAddressConnections' | 'perAddressRate' };

const EXEMPT: Admission = { admitted: true, address: null };

/**
 * Caps per source address (issue 8, README "Limits"): connections open at once, and new
 * connections per second as a token bucket. Consulted right after accept, before anything is
 * read, so a refused socket costs one lookup and a destroy. Loopback addresses skip all of it
 * when `exemptLoopback` is set (the default): a local process can exhaust the machine by other
 * means anyway, and local bridges and services often open many connections at once.
 */
export class AddressLimits {
  private readonly table: AddressTable<AddressUse>;
  private readonly ratePerMs: number;

  constructor(
    private readonly limits: PerAddressLimits,
    private readonly now: () => number = Date.now,
  ) {
    // An address with open connections is never forgotten: its count must stay right for the
    // cap and for the decrement at close (address-table.ts).
    this.table = new AddressTable<AddressUse>(limits.maxTracked, (use) => use.open > 0);
    this.ratePerMs = limits.connectionsPerSecond / 1000;
  }

  /** Addresses remembered now (at most maxTracked plus those with open connections). */
  get tracked(): number {
    return this.table.size;
  }

  /**
   * Decides on a connection just accepted from `remoteAddress` and counts it when admitted; an
   * admitted connection with a non-null address must be given back with `release` when it closes.
   */
  admit(remoteAddress: string | undefined): Admission {
    // Gone already (reset before accept completed) or exempt: nothing to count.
    if (remoteAddress === undefined) return EXEMPT;
    if (this.limits.exemptLoopback && isLoopbackAddress(remoteAddress)) return EXEMPT;
    const address = sourceAddress(remoteAddress);
    const now = this.now();
    const use = this.table.obtain(address, () => ({ open: 0, tokens: this.limits.connectionBurst, refilledAt: now }));
    if (use.open >= this.limits.maxConnections) return { admitted: false, address, limit: 'perAddressConnections' };
    use.tokens = Math.min(this.limits.connectionBurst, use.tokens + (now - use.refilledAt) * this.ratePerMs);
    use.refilledAt = now;
    // A refused connection takes no token: the bucket measures connections actually served.
    if (use.tokens < 1) return { admitted: false, address, limit: 'perAddressRate' };
    use.tokens -= 1;
    use.open++;
    return { admitted: true, address };
  }

  /** A connection admitted with `address` closed. */
  release(address: string): void {
    const use = this.table.peek(address);
    if (use !== undefined && use.open > 0) use.open--;
  }

  /** Connections open from `remoteAddress` as counted here (tests, diagnostics). */
  openFrom(remoteAddress: string): number {
    return this.table.peek(sourceAddress(remoteAddress))?.open ?? 0;
  }
}
