import { AddressTable, sourceAddress } from './address-table';
import { backoffDelay } from './backoff';
import type { BrokerLimits } from './types';

type LoginBackoffLimits = BrokerLimits['loginBackoff'];

/** How a login attempt ended: refused by an authentication gate, accepted, or neither (closed, refused for another reason). */
export type LoginOutcome = 'failure' | 'success' | 'neutral';

/** What the back-off reports, for counting and (rate-limited) logging by the broker. */
export interface LoginBackoffEvents {
  /** An authentication gate refused an attempt from `address`; the next one waits `delayMs`. */
  failed(address: string, failures: number, delayMs: number): void;
  /** An attempt from `address` waits `delayMs` (before authenticating, or before its refusal is sent). */
  delayed(address: string, failures: number, delayMs: number): void;
  /** `address` already has `maxWaiting` attempts waiting: this one is refused without being checked. */
  queueFull(address: string, maxWaiting: number): void;
}

interface AddressLogins {
  readonly address: string;
  failures: number;
  lastFailureAt: number;
  /** No attempt from the address is authenticated before this time (ms since epoch). */
  notBefore: number;
  /** Attempts authenticating now, or failed and holding their refusal until notBefore. */
  active: number;
  /** Attempts waiting for their turn, in arrival order (a Set: a closed one leaves from anywhere). */
  readonly waiting: Set<LoginAttempt>;
  timer: NodeJS.Timeout | null;
}

/** One CONNECT's way through the back-off; kept on its connection until it is done. */
export class LoginAttempt {
  state: 'waiting' | 'active' | 'holding' | 'done' = 'waiting';
  /** Counted once in loginDelayed, however many times it waits. */
  delayed = false;
  holdTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly entry: AddressLogins,
    readonly proceed: () => void,
  ) {}

  get address(): string {
    return this.entry.address;
  }
}

/**
 * Failed-login back-off per source address (issue 8, README "Abuse resistance"). After
 * `freeAttempts` failures, the refusal of each further failed attempt is sent only after
 * initialDelay × 2^(failures − freeAttempts − 1) ms (at most maxDelay), and no attempt from the
 * address is authenticated before that time either. Attempts in back-off run one at a time, in
 * arrival order, so parallel connections cannot guess faster than sequential ones; below the free
 * attempts they run in parallel, but attempts in progress count against the free ones, so a burst
 * of parallel guesses from a fresh address gets no more than `freeAttempts` for free. A success
 * resets the address; failures are forgotten `forgetAfter` ms after the last one.
 *
 * Applies to every address, loopback included. What an attacker can make it hold: one waiting
 * attempt per open connection (at most `maxWaiting` per address, and the per-address connection
 * cap bounds those further), and one table entry per address (AddressTable: at most maxTracked
 * plus those with attempts in progress).
 */
export class LoginBackoff {
  private readonly table: AddressTable<AddressLogins>;

  constructor(
    private readonly limits: LoginBackoffLimits,
    maxTracked: number,
    private readonly maxWaiting: number,
    private readonly events: LoginBackoffEvents,
    private readonly now: () => number = Date.now,
  ) {
    // Forgetting an address with attempts in progress would lose them (and their serialisation).
    this.table = new AddressTable<AddressLogins>(maxTracked, (e) => e.active > 0 || e.waiting.size > 0);
  }

  /** Addresses remembered now. */
  get tracked(): number {
    return this.table.size;
  }

  /** The failures counted for `remoteAddress` (forgotten ones are not). */
  failuresOf(remoteAddress: string): number {
    const entry = this.table.peek(sourceAddress(remoteAddress));
    return entry === undefined || this.forgotten(entry) ? 0 : entry.failures;
  }

  /**
   * A login attempt from `remoteAddress`: `proceed` is called when it may authenticate — at once
   * (then the attempt's state is 'active' on return) or after its wait ('waiting'). Null when the
   * address already has maxWaiting attempts waiting: the caller refuses it unchecked.
   */
  begin(remoteAddress: string, proceed: () => void): LoginAttempt | null {
    const address = sourceAddress(remoteAddress);
    const now = this.now();
    const entry = this.table.obtain(address, () => ({ address, failures: 0, lastFailureAt: 0, notBefore: 0, active: 0, waiting: new Set(), timer: null }));
    if (entry.failures > 0 && this.forgotten(entry, now)) {
      entry.failures = 0;
      entry.notBefore = 0;
    }
    const attempt = new LoginAttempt(entry, proceed);
    if (entry.waiting.size === 0 && this.mayStart(entry, now)) {
      attempt.state = 'active';
      entry.active++;
      return attempt;
    }
    if (entry.waiting.size >= this.maxWaiting) {
      this.events.queueFull(address, this.maxWaiting);
      attempt.state = 'done';
      this.tidy(entry);
      return null;
    }
    entry.waiting.add(attempt);
    // Waiting only for a parallel slot (below the free attempts) is not a back-off.
    if (entry.failures >= this.limits.freeAttempts) {
      attempt.delayed = true;
      this.events.delayed(address, entry.failures, Math.max(0, entry.notBefore - now));
    }
    this.schedule(entry, now);
    return attempt;
  }

  /**
   * The attempt's authentication ended. After a failure that puts the address in back-off, the
   * attempt keeps its turn for the delay and `then` is called once it has passed (the caller
   * sends the refusal then); otherwise `then` is called at once. Returns the delay in ms.
   */
  finish(attempt: LoginAttempt, outcome: LoginOutcome, then: () => void): number {
    if (attempt.state !== 'active') {
      then();
      return 0;
    }
    const entry = attempt.entry;
    const now = this.now();
    if (outcome === 'success') {
      entry.failures = 0;
      entry.notBefore = 0;
    } else if (outcome === 'failure') {
      entry.failures++;
      entry.lastFailureAt = now;
      const delay = this.delayAfter(entry.failures);
      entry.notBefore = Math.max(entry.notBefore, now + delay);
      this.events.failed(attempt.address, entry.failures, delay);
      if (delay > 0) {
        if (!attempt.delayed) {
          attempt.delayed = true;
          this.events.delayed(attempt.address, entry.failures, delay);
        }
        attempt.state = 'holding';
        attempt.holdTimer = setTimeout(() => {
          attempt.holdTimer = null;
          this.release(attempt);
          then();
        }, delay);
        return delay;
      }
    }
    this.release(attempt);
    then();
    return 0;
  }

  /** The attempt's connection closed: it gives up its place or its turn. Idempotent. */
  abandon(attempt: LoginAttempt): void {
    if (attempt.state === 'waiting') {
      attempt.entry.waiting.delete(attempt);
      attempt.state = 'done';
      this.pump(attempt.entry);
    } else if (attempt.state === 'active' || attempt.state === 'holding') {
      if (attempt.holdTimer !== null) clearTimeout(attempt.holdTimer);
      attempt.holdTimer = null;
      this.release(attempt);
    }
  }

  /** The delay that the `failures`-th failure imposes on the address (0 within the free attempts). */
  delayAfter(failures: number): number {
    const { freeAttempts, initialDelay, maxDelay } = this.limits;
    return failures <= freeAttempts ? 0 : backoffDelay(failures - freeAttempts - 1, initialDelay, maxDelay, 0);
  }

  private forgotten(entry: AddressLogins, now = this.now()): boolean {
    return now - entry.lastFailureAt >= this.limits.forgetAfter;
  }

  /**
   * Below the free attempts (counting those in progress as possible failures) attempts run in
   * parallel; beyond them, one at a time and not before notBefore.
   */
  private mayStart(entry: AddressLogins, now: number): boolean {
    return entry.failures + entry.active < this.limits.freeAttempts || (entry.active === 0 && now >= entry.notBefore);
  }

  private release(attempt: LoginAttempt): void {
    attempt.state = 'done';
    attempt.entry.active--;
    this.pump(attempt.entry);
  }

  /** Starts waiting attempts whose turn has come, in order; arms the timer for the next turn. */
  private pump(entry: AddressLogins): void {
    if (entry.timer !== null) {
      clearTimeout(entry.timer);
      entry.timer = null;
    }
    const now = this.now();
    for (const next of entry.waiting) {
      if (!this.mayStart(entry, now)) break;
      entry.waiting.delete(next);
      next.state = 'active';
      entry.active++;
      next.proceed();
    }
    this.schedule(entry, now);
    this.tidy(entry);
  }

  private schedule(entry: AddressLogins, now: number): void {
    // Only a wait for notBefore needs a timer; a wait for an active attempt ends in release().
    if (entry.timer !== null || entry.waiting.size === 0 || entry.active > 0 || entry.notBefore <= now) return;
    entry.timer = setTimeout(() => {
      entry.timer = null;
      this.pump(entry);
    }, entry.notBefore - now);
  }

  /** An address with nothing counted and nothing in progress needs no entry. */
  private tidy(entry: AddressLogins): void {
    if (entry.failures > 0 || entry.active > 0 || entry.waiting.size > 0) return;
    if (this.table.peek(entry.address) === entry) this.table.delete(entry.address);
  }
}
