import { performance } from 'node:perf_hooks';
import type Redis from 'ioredis';

/** How often the Redis server's clock is read again (its own clock may be stepped by NTP). */
const REFRESH_MS = 60_000;

/**
 * The Redis server's clock as this gateway sees it: the clock the gateways of a cluster share for
 * message expiry, because their own may disagree by minutes or years (a Raspberry Pi has no
 * real-time clock and may run before NTP set it), and the clock that stamped the id of a downlink
 * entry. One per adapter, on its main connection (never the downlink's, which waits in XREAD BLOCK:
 * a TIME queued behind it would be answered late). Read with TIME when the connection becomes ready
 * and every minute; the reply is taken to be made halfway through the round trip, so the estimate
 * is off by half a round trip at most. Between readings it advances with the monotonic clock: a
 * step of this machine's wall clock does not move it.
 */
export class RedisClock {
  /** The last reading: Redis' time (ms since 1970) at a moment of performance.now(). */
  private reading: { readonly redisMs: number; readonly at: number } | null = null;
  private timer: NodeJS.Timeout | undefined;
  /** Resolves the first-reading promise (measured()); calling it again does nothing. */
  private resolveFirstReading: () => void = () => undefined;
  private readonly firstReading = new Promise<void>((resolve) => {
    this.resolveFirstReading = resolve;
  });

  constructor(
    private readonly redis: Redis,
    private readonly onError: (err: unknown) => void,
  ) {}

  start(): void {
    if (this.timer !== undefined) return;
    this.redis.on('ready', this.read);
    this.timer = setInterval(this.read, REFRESH_MS).unref();
    this.read();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.redis.off('ready', this.read);
  }

  /** Redis' time now, ms since 1970; this machine's own clock until Redis was first read. */
  now(): number {
    return this.reading === null ? Date.now() : this.reading.redisMs + (performance.now() - this.reading.at);
  }

  /** Whether Redis' clock has been read yet: until then now() is this machine's own clock. */
  get known(): boolean {
    return this.reading !== null;
  }

  /** Resolves once Redis' clock has been read (at once when it has been). */
  measured(): Promise<void> {
    return this.firstReading;
  }

  private readonly read = (): void => {
    if (this.redis.status !== 'ready') return; // read again on `ready`
    const sentAt = performance.now();
    this.redis.time().then(
      (reply) => {
        // ioredis declares numbers; the protocol's reply is two strings (seconds, microseconds).
        const [seconds, micros] = reply.map(Number);
        if (!Number.isFinite(seconds) || !Number.isFinite(micros)) return;
        this.reading = { redisMs: (seconds as number) * 1000 + (micros as number) / 1000, at: (sentAt + performance.now()) / 2 };
        this.resolveFirstReading();
      },
      (err: unknown) => this.onError(err), // the previous reading stays
    );
  };
}
