import { isUtf8 } from 'node:buffer';
import type Redis from 'ioredis';
import { checkedOutboxProperties, RateLimitedLog, type GatewayContext, type Message, type PublishProperties, type QoS } from '../../gateway/broker';
import { backoff, describeRedisError } from './connection';
import type { RedisClock } from './redis-clock';
import type { RedisSettings } from './settings';
import { DOWNLINK_SOURCE } from './sources';
import { lastGeneratedId, parseStreamId } from './stream-id';
import type { StateStore } from './uplink';

const MAX_ENTRIES_PER_READ = 100;

/**
 * Entry ids whose ms part is below this (10^12 ms: September 2001) are not times. Streams came with
 * Redis 5 (2018), so no server with its clock set generated one; they are explicit ids (`1-1`, or
 * `<epoch>-<seq>` as the uplink writes its own).
 */
export const EARLIEST_TIME_ID_MS = 1_000_000_000_000n;

export interface DownlinkStats {
  readonly delivered: number;
  readonly invalid: number;
  /** Their Message Expiry Interval, counted from when they were added, ran out before they were read. */
  readonly expired: number;
  /** Refused by the authorisation hooks (an ACL without the right `user redis` rules). */
  readonly denied: number;
  readonly failures: number;
  readonly lastId: string;
}

/**
 * What is left of a downlink entry's Message Expiry Interval (`intervalSeconds`) when it is read at
 * `redisNow` (Redis' clock, ms), in ms; 0 or less: expired. The interval counts from when the entry
 * was added: the ms part of an id Redis generated (`*`) is its clock at XADD. Never more than the
 * interval (the estimate of Redis' clock is off by half a round trip; a cluster message once arrived
 * with 61 of 60 s left). An id whose ms part is not such a time counts from now, the full interval:
 * an explicit small one (EARLIEST_TIME_ID_MS), or one ahead of Redis' clock — explicit, or generated
 * before that clock was stepped back (Redis keeps ids increasing, not its clock). Just ahead, by the
 * estimate's error, is the same answer, so there is no tolerance to choose.
 */
export function expiryLeftMs(id: string, intervalSeconds: number, redisNow: number): number {
  const interval = intervalSeconds * 1000;
  const added = parseStreamId(id)?.ms;
  if (added === undefined || added < EARLIEST_TIME_ID_MS || added > BigInt(Math.floor(redisNow))) return interval;
  return interval - (redisNow - Number(added));
}

/**
 * Commands from the central side (issue 5, item 4): entries of the downlink stream (fields
 * `topic`, `payload`, optional `qos` 0–2 and `retain` 0/1) are published into the local broker,
 * e.g. to a serial port's command topic. The id of the last entry consumed is kept in the state
 * store and written in the same group commit as what the publish stored (a persistent session's
 * queue), so an entry is consumed once across restarts: commands sent while the gateway was
 * offline arrive when it reconnects. Reads block on a connection of their own.
 *
 * An entry may carry MQTT 5 properties (field `properties`, JSON as the uplink writes it); a
 * Message Expiry Interval among them counts from when the central side added the entry, on Redis'
 * clock (expiryLeftMs): a command valid for 60 s that waited out a two-hour outage is not executed.
 */
export class Downlink {
  private running = false;
  private loop: Promise<void> | undefined;
  private readonly key: string;
  private readonly counters = { delivered: 0, invalid: 0, expired: 0, denied: 0, failures: 0 };
  /** Ends the back-off wait early (stop). */
  private cancelWait: (() => void) | undefined;
  /** Whether the first read waited for Redis' clock (awaitClock). */
  private clockAwaited = false;
  private readonly invalidLog: RateLimitedLog;
  private readonly expiredLog: RateLimitedLog;
  private readonly errorLog: RateLimitedLog;

  constructor(
    /** A dedicated connection: XREAD BLOCK holds it. */
    private readonly redis: Redis,
    private readonly ctx: GatewayContext,
    private readonly store: StateStore,
    private readonly settings: RedisSettings,
    /** The adapter's, read over its main connection; started and stopped by the adapter. */
    private readonly clock: RedisClock,
  ) {
    this.key = `downlink.lastId:${settings.downlink.stream}`;
    this.invalidLog = new RateLimitedLog((msg, fields) => ctx.logger.warn(msg, fields));
    this.expiredLog = new RateLimitedLog((msg, fields) => ctx.logger.warn(msg, fields));
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

  /**
   * Before the first read, Redis' clock (read over the main connection, which connects at the same
   * time as this one): with this machine's clock instead, a Pi that booted without NTP would take
   * the commands that waited for it as decades old, or as not old at all. Waited for once, at most
   * commandTimeout: a Redis that does not answer TIME must not keep commands back for good.
   */
  private async awaitClock(): Promise<void> {
    if (this.clockAwaited) return;
    this.clockAwaited = true;
    if (this.clock.known) return;
    await Promise.race([this.clock.measured(), this.wait(this.settings.commandTimeout)]);
    this.cancelWait?.(); // the wait's timer, when the clock came first
    if (!this.clock.known && this.running) {
      this.ctx.logger.warn("redis downlink: Redis' clock not read yet; the expiry of entries is measured by this machine's clock until it is", { stream: this.settings.downlink.stream });
    }
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
        await this.awaitClock();
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
    const read = this.messageOf(values);
    if (typeof read === 'string') {
      this.counters.invalid++;
      this.invalidLog.emit('redis downlink: entry skipped', { stream: this.settings.downlink.stream, id, reason: read, invalid: this.counters.invalid });
    } else {
      this.publish(id, read);
    }
    // Consumed either way: a bad entry must not block the ones behind it.
    this.store.set(this.key, id);
  }

  /**
   * Publishes the entry's message, its expiry counted from when the entry was added. An expired one
   * is handed over too: the broker delivers it to no one, but a retained one still replaces the
   * topic's retained message, as it would have, had the gateway been there when it was sent. What
   * became of it is the broker's answer (its ACL check comes before its expiry check).
   */
  private publish(id: string, plain: Message): void {
    const interval = plain.properties?.messageExpiryInterval;
    const message = interval === undefined ? plain : { ...plain, expiresAt: Date.now() + expiryLeftMs(id, interval, this.clock.now()) };
    const outcome = this.ctx.publish(message, DOWNLINK_SOURCE);
    if (outcome === 'routed') {
      this.counters.delivered++;
    } else if (outcome === 'denied') {
      // Refused by the ACL (user `redis`): the broker logged and counted it in publish/denied.
      this.counters.denied++;
    } else {
      this.counters.expired++;
      this.expiredLog.emit('redis downlink: entry expired before it was read; not delivered', {
        stream: this.settings.downlink.stream,
        id,
        topic: plain.topic,
        messageExpiryInterval: interval,
        expired: this.counters.expired,
      });
    }
  }

  /** The entry's message (expiry not applied yet), or why it cannot be published. */
  private messageOf(values: Map<string, Buffer>): Message | string {
    const topic = values.get('topic')?.toString();
    const payload = values.get('payload') ?? Buffer.alloc(0);
    if (topic === undefined || topic === '') return 'no topic field';
    const qosText = values.get('qos')?.toString() ?? '0';
    if (qosText !== '0' && qosText !== '1' && qosText !== '2') return `qos must be 0, 1 or 2, not ${JSON.stringify(qosText)}`;
    const retainText = values.get('retain')?.toString() ?? '0';
    if (retainText !== '0' && retainText !== '1' && retainText !== 'true' && retainText !== 'false') return `retain must be 0 or 1, not ${JSON.stringify(retainText)}`;
    const topicProblem = this.ctx.topicError(topic);
    if (topicProblem !== null) return `topic ${JSON.stringify(topic)}: ${topicProblem}`;
    const properties = propertiesOf(values.get('properties'), payload);
    if (typeof properties === 'string') return `invalid properties (${properties})`;
    const message: Message = { topic, payload, qos: Number(qosText) as QoS, retain: retainText === '1' || retainText === 'true' };
    return properties === undefined ? message : { ...message, properties };
  }
}

/**
 * The `properties` field read with the checks of properties from outside the process
 * (checkedOutboxProperties), or why not. Invalid ones skip the entry rather than publish it
 * without them: a subscriber may rely on them to read the payload or to answer.
 */
function propertiesOf(field: Buffer | undefined, payload: Buffer): PublishProperties | undefined | string {
  if (field === undefined) return undefined;
  // toString() would turn bad bytes into U+FFFD and pass them on in a string property.
  if (!isUtf8(field)) return 'not UTF-8';
  let value: unknown;
  try {
    value = JSON.parse(field.toString());
  } catch {
    return 'not JSON';
  }
  const read = checkedOutboxProperties(value, payload);
  return 'problem' in read ? read.problem : read.properties;
}
