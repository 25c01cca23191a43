import type { Message } from './types';

/** setTimeout's longest delay (≈ 24.8 days); a later will is reached by re-arming. */
const MAX_TIMER_MS = 2 ** 31 - 1;

interface Pending {
  readonly will: Message;
  readonly at: number;
  timer: NodeJS.Timeout;
}

/**
 * Will messages waiting out their Will Delay Interval (MQTT 5.0 section 3.1.3.2.2): published
 * when it has passed or the session ends, whichever comes first [MQTT-3.1.2-8], and not at all
 * when the session is resumed before [MQTT-3.1.3-9]. One per client id, so at most one per
 * session (limits.maxSessions bounds them); each waits on its own unref'd timer.
 */
export class DelayedWills {
  private readonly pending = new Map<string, Pending>();

  constructor(private readonly publish: (clientId: string, will: Message) => void) {}

  get size(): number {
    return this.pending.size;
  }

  /** Publishes `will` of `clientId` after `delaySeconds`, unless cancelled or published earlier. */
  schedule(clientId: string, will: Message, delaySeconds: number): void {
    this.publishNow(clientId); // a will still waiting for the same id goes first
    const at = Date.now() + delaySeconds * 1000;
    this.pending.set(clientId, { will, at, timer: this.arm(clientId, at) });
  }

  /** The session was resumed in time: the will is not published. */
  cancel(clientId: string): void {
    const entry = this.pending.get(clientId);
    if (entry === undefined) return;
    clearTimeout(entry.timer);
    this.pending.delete(clientId);
  }

  /** The session ended (expired, discarded by Clean Start, evicted): its will goes out now. */
  publishNow(clientId: string): void {
    const entry = this.pending.get(clientId);
    if (entry === undefined) return;
    this.cancel(clientId);
    this.publish(clientId, entry.will);
  }

  /** The server stops: every waiting will is published, as the wills of connected clients are. */
  flush(): void {
    for (const clientId of [...this.pending.keys()]) this.publishNow(clientId);
  }

  private arm(clientId: string, at: number): NodeJS.Timeout {
    const timer = setTimeout(() => this.due(clientId), Math.min(MAX_TIMER_MS, Math.max(0, at - Date.now())));
    timer.unref();
    return timer;
  }

  private due(clientId: string): void {
    const entry = this.pending.get(clientId);
    if (entry === undefined) return;
    if (Date.now() < entry.at) entry.timer = this.arm(clientId, entry.at);
    else this.publishNow(clientId);
  }
}
