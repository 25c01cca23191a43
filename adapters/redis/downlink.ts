import type Redis from 'ioredis';
import { RateLimitedLog, type GatewayContext, type QoS } from '../../gateway/broker';
import { backoff, describeRedisError } from './connection';
import type { RedisSettings } from './settings';
import { DOWNLINK_SOURCE } from './sources';
import { lastGeneratedId } from './stream-id';
import type { StateStore } from './uplink';

const MAX_ENTRIES_PER_READ = 100;

export interface DownlinkStats {
  readonly delivered: number;
  readonly invalid: number;
  readonly failures: number;
  readonly lastId: string;
}

/**
 * Commands from the central side (issue 5, item 4): entries of the downlink stream (fields
 * `topic`, `payload`, optional `qos` 0–2 and `retain` 0/1) are published into the local broker,
 * e.g. to a serial port's command topic. The id of the last entry consumed is kept in the state
 * store and written in the same group commit as what the publish stored (a persistent session's
 * queue), so an entry is consumed once across restarts: commands sent while the gateway was
 * offline arrive when it reconnects. Reads block on a connection of their own.
 */
export class Downlink {
  private running = false;
  private loop: Promise<void> | undefined;
  private readonly key: string;
  private readonly counters = { delivered: 0, invalid: 0, failures: 0 };
  /** Ends the back-off wait early (stop). */
  private cancelWait: (() => void) | undefined;
  private readonly invalidLog: RateLimitedLog;
  private readonly errorLog: RateLimitedLog;

  constructor(
    /** A dedicated connection: XREAD BLOCK holds it. */
    private readonly redis: Redis,
    private readonly ctx: GatewayContext,
    private readonly store: StateStore,
    private readonly settings: RedisSettings,
  ) {
    this.key = `downlink.lastId:${settings.downlink.stream}`;
    this.invalidLog = new RateLimitedLog((msg, fields) => ctx.logger.warn(msg, fields));
    this.errorLog = new RateLimitedLog((msg, fields) => ctx.logger.warn(msg, fields));
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.cancelWait?.();
    // A blocked XREAD ends with the connection, which the adapter closes after this.
    this.redis.disconnect();
    await this.loop;
  }

  stats(): DownlinkStats {
    return { ...this.counters, lastId: this.lastId };
  }

  private get lastId(): string {
    return this.store.get(this.key) ?? '0-0';
  }

  /**
   * With no position stored (a first start, a replaced database, or no database at all) reading
   * starts after the stream's current last entry: replaying every command still in the stream
   * (open the valve, close it, open it…) would be worse than missing one sent before this gateway
   * ever read the stream. The position is stored at once, so nothing added from now on is missed.
   */
  private async ensurePosition(): Promise<void> {
    if (this.store.get(this.key) !== undefined) return;
    const top = await lastGeneratedId(this.redis, this.settings.downlink.stream);
    const start = top === null ? '0-0' : `${top.ms}-${top.seq}`;
    this.store.set(this.key, start);
    this.ctx.logger.info('redis downlink: no position stored; reading entries added from now on', { stream: this.settings.downlink.stream, after: start });
  }

  private async run(): Promise<void> {
    let attempt = 0;
    // Blocks well within the command timeout (≥ 1000 ms by the schema), so a healthy but idle link
    // is never a timeout.
    const blockMs = Math.floor(this.settings.commandTimeout / 2);
    while (this.running) {
      if (this.redis.status !== 'ready') {
        // Not connected yet (or closed): connect; while ioredis reconnects by itself, look again
        // shortly. Errors are logged by the connection.
        if (this.redis.status === 'wait' || this.redis.status === 'end') await this.redis.connect().catch(() => this.wait(200));
        else await this.wait(200);
        continue;
      }
      try {
        await this.ensurePosition();
        const reply = await this.redis.xreadBuffer('COUNT', MAX_ENTRIES_PER_READ, 'BLOCK', blockMs, 'STREAMS', this.settings.downlink.stream, this.lastId);
        attempt = 0;
        if (reply === null) continue;
        for (const [, entries] of reply) for (const [id, fields] of entries) this.deliver(id.toString(), fields);
      } catch (err) {
        if (!this.running) break;
        attempt++;
        this.counters.failures++;
        this.errorLog.emit('redis downlink: read failed; retrying', { stream: this.settings.downlink.stream, error: describeRedisError(err) });
        const { initialDelay, maxDelay } = this.settings.reconnect;
        await this.wait(backoff(attempt, initialDelay, maxDelay));
      }
    }
  }

  /** A back-off that stop() ends at once. */
  private wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.cancelWait = done;
    });
  }

  private deliver(id: string, fields: Buffer[]): void {
    const values = new Map<string, Buffer>();
    for (let i = 0; i + 1 < fields.length; i += 2) values.set((fields[i] as Buffer).toString(), fields[i + 1] as Buffer);
    const problem = this.publish(values);
    if (problem !== null) {
      this.counters.invalid++;
      this.invalidLog.emit('redis downlink: entry skipped', { stream: this.settings.downlink.stream, id, reason: problem, invalid: this.counters.invalid });
    } else {
      this.counters.delivered++;
    }
    // Consumed either way: a bad entry must not block the ones behind it.
    this.store.set(this.key, id);
  }

  /** Publishes the entry; returns why it cannot be published, or null. */
  private publish(values: Map<string, Buffer>): string | null {
    const topic = values.get('topic')?.toString();
    const payload = values.get('payload') ?? Buffer.alloc(0);
    if (topic === undefined || topic === '') return 'no topic field';
    const qosText = values.get('qos')?.toString() ?? '0';
    if (qosText !== '0' && qosText !== '1' && qosText !== '2') return `qos must be 0, 1 or 2, not ${JSON.stringify(qosText)}`;
    const retainText = values.get('retain')?.toString() ?? '0';
    if (retainText !== '0' && retainText !== '1' && retainText !== 'true' && retainText !== 'false') return `retain must be 0 or 1, not ${JSON.stringify(retainText)}`;
    const topicProblem = this.ctx.topicError(topic);
    if (topicProblem !== null) return `topic ${JSON.stringify(topic)}: ${topicProblem}`;
    this.ctx.publish({ topic, payload, qos: Number(qosText) as QoS, retain: retainText === '1' || retainText === 'true' }, DOWNLINK_SOURCE);
    return null;
  }
}
