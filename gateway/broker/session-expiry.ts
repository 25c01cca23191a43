import { NEVER_EXPIRES, type Session } from './session';

/** Expired sessions are looked for at most this often (ms), however many expire at different times. */
const MIN_SWEEP_GAP_MS = 250;
/** setTimeout's longest delay (≈ 24.8 days); a later expiry is reached by re-arming. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** When a session whose client left at `disconnectedAt` expires (ms since epoch); Infinity if it never does. */
export function expiryTime(disconnectedAt: number, expiryInterval: number): number {
  return expiryInterval === NEVER_EXPIRES ? Infinity : disconnectedAt + expiryInterval * 1000;
}

/** When `session` expires (ms since epoch): Infinity while its client is connected or if it never expires. */
export function sessionExpiresAt(session: Session): number {
  return session.owner !== null ? Infinity : expiryTime(session.disconnectedAt, session.expiryInterval);
}

/**
 * Ends sessions whose Session Expiry Interval has passed since their client left (MQTT 5.0
 * section 3.1.2.11.2; a 3.1.1 session with clean session 0 never expires). One timer for all
 * sessions, armed for the earliest expiry, so an offline session costs no timer of its own.
 * The CONNECT handler also checks a session it is about to resume, so a session is never
 * resumed after its expiry even if this timer has not fired yet.
 */
export class SessionExpiry {
  private timer: NodeJS.Timeout | null = null;
  private armedFor = Infinity;
  private stopped = false;

  constructor(
    private readonly sessions: ReadonlyMap<string, Session>,
    private readonly expire: (session: Session) => void,
  ) {}

  /** A session went offline (or was restored offline): the timer fires by its expiry at the latest. */
  watch(session: Session): void {
    const at = sessionExpiresAt(session);
    if (at < this.armedFor) this.arm(at);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.armedFor = Infinity;
  }

  private arm(at: number): void {
    if (this.stopped) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.armedFor = at;
    this.timer = setTimeout(this.sweep, Math.min(MAX_TIMER_MS, Math.max(0, at - Date.now())));
    this.timer.unref();
  }

  private readonly sweep = (): void => {
    this.timer = null;
    this.armedFor = Infinity;
    const now = Date.now();
    let next = Infinity;
    // Deleting the visited entry while iterating a Map is safe.
    for (const session of this.sessions.values()) {
      const at = sessionExpiresAt(session);
      if (at <= now) this.expire(session);
      else if (at < next) next = at;
    }
    if (next !== Infinity) this.arm(Math.max(next, now + MIN_SWEEP_GAP_MS));
  };
}
