import type Redis from 'ioredis';
import { checkedOutboxProperties, errorMessage, outboxProperties, RateLimitedLog, type GatewayContext, type Message, type QoS } from '../../gateway/broker';
import type { RedisClock } from './redis-clock';
import type { RedisSettings } from './settings';
import { cameThroughRedis, CLUSTER_SOURCE_PREFIX } from './sources';

/** PUBLISH commands waiting for Redis' reply at most; beyond it messages are dropped and counted. */
const MAX_IN_FLIGHT = 10_000;

/**
 * A message on the cluster channel and in the retained hash, as JSON. `m` and `e` came with MQTT 5
 * properties; a gateway of an older version ignores them (and delivers the message without its
 * properties), and a frame without them is read as before.
 */
interface Frame {
  /** Origin gateway id. */
  readonly o: string;
  readonly t: string;
  readonly q: QoS;
  readonly r: boolean;
  /** Payload, base64. */
  readonly p: string;
  /** MQTT 5 properties, as the uplink's `properties` field has them (outboxProperties). */
  readonly m?: unknown;
  /** When the message expires, ms since 1970 on the Redis server's clock (RedisClock). */
  readonly e?: number;
}

export interface ClusterStats {
  readonly sent: number;
  readonly received: number;
  /** Not sent: Redis away, or MAX_IN_FLIGHT publishes waiting. */
  readonly dropped: number;
  /** Not understood, or with properties no MQTT 5 PUBLISH could carry: not published here. */
  readonly invalid: number;
  /** Its Message Expiry Interval ran out before it got here (in transit, or in the retained hash). */
  readonly expired: number;
}

/**
 * Cluster mode (issue 5, item 5): gateways sharing one Redis see each other's messages. Every
 * message published on this gateway (by a client, serial, a will) goes to the Redis pub/sub
 * channel with this gateway's id as origin; every message on the channel from another gateway is
 * published here with the source `cluster:<origin>`, which is never sent back out — no loops, and
 * each subscriber gets a message once. Pub/sub is at most once: while Redis is away messages do
 * not cross (they are counted as dropped). Retained messages are also kept in a Redis hash, so a
 * gateway that starts later still gets them.
 *
 * MQTT 5 properties travel with the message, except what belongs to one connection (topic alias,
 * subscription identifiers). A Message Expiry goes as a time on Redis' clock, the one clock the
 * gateways share: time spent on the way and in the retained hash counts, and the gateways' own
 * clocks need not agree.
 */
export class ClusterLink {
  private running = false;
  private inFlight = 0;
  private retainedLoaded = false;
  private readonly counters = { sent: 0, received: 0, dropped: 0, invalid: 0, expired: 0 };
  private readonly retainedKey: string;
  private readonly dropLog: RateLimitedLog;
  private readonly invalidLog: RateLimitedLog;

  constructor(
    /** Shared with the uplink: PUBLISH and the retained hash. */
    private readonly pub: Redis,
    /** Dedicated: a subscribed connection can do nothing else. */
    private readonly sub: Redis,
    private readonly ctx: GatewayContext,
    private readonly settings: RedisSettings,
    /** The adapter's, read over `pub`; started and stopped by the adapter. */
    private readonly clock: RedisClock,
  ) {
    this.retainedKey = `${settings.cluster.channel}:retained`;
    this.dropLog = new RateLimitedLog((msg, fields) => ctx.logger.warn(msg, fields));
    this.invalidLog = new RateLimitedLog((msg, fields) => ctx.logger.warn(msg, fields));
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.ctx.hooks.published.push(this.onPublished);
    this.sub.on('messageBuffer', this.onMessage);
    // Subscribe on every connection (ioredis only re-subscribes channels whose first subscribe
    // was confirmed); take over the cluster's retained messages once (loadRetained).
    this.sub.on('ready', this.onReady);
    this.sub.connect().catch(() => undefined); // retried by the connection; errors logged there
  }

  async stop(): Promise<void> {
    this.running = false;
    const hooks = this.ctx.hooks.published;
    const at = hooks.indexOf(this.onPublished);
    if (at >= 0) hooks.splice(at, 1);
    this.sub.off('messageBuffer', this.onMessage);
    this.sub.off('ready', this.onReady);
    this.sub.disconnect();
  }

  stats(): ClusterStats {
    return { ...this.counters };
  }

  private readonly onReady = (): void => {
    // Subscribed first, then the snapshot: a retained value changed in between arrives on the
    // channel after the snapshot, never the other way round.
    this.sub.subscribe(this.settings.cluster.channel).then(
      () => this.loadRetained(),
      (err: unknown) => this.ctx.logger.warn('redis cluster: subscribe failed; retried on the next connection', { error: errorMessage(err) }),
    );
  };

  /**
   * Takes over the cluster's retained messages, once, over the publishing connection — when that
   * one is ready (it may connect after the subscriber); a failed read is tried again on its next
   * `ready`.
   */
  private loadRetained(): void {
    if (!this.running || this.retainedLoaded) return;
    if (this.pub.status !== 'ready') {
      this.pub.once('ready', () => this.loadRetained());
      return;
    }
    this.pub.hgetallBuffer(this.retainedKey).then(
      (all) => {
        if (this.retainedLoaded || !this.running) return;
        this.retainedLoaded = true;
        for (const value of Object.values(all)) {
          const frame = decode(value);
          if (frame !== null && frame.o !== this.settings.gatewayId) this.publishLocally(frame);
        }
      },
      (err: unknown) => {
        this.ctx.logger.warn('redis cluster: retained messages not loaded yet; retrying when connected', { error: errorMessage(err) });
        this.pub.once('ready', () => this.loadRetained());
      },
    );
  }

  private readonly onPublished = (msg: Message, _origin: unknown, source: string): void => {
    // Also not the adapter's own: another gateway would keep a dead one's status as "connected",
    // or pass on commands meant for devices here.
    if (!this.running || cameThroughRedis(source) || msg.topic.startsWith('$')) return;
    if (this.pub.status !== 'ready' || this.inFlight >= MAX_IN_FLIGHT) {
      this.drop();
      return;
    }
    const frame = encode(this.frameOf(msg));
    this.inFlight++;
    let sent: Promise<unknown>;
    if (msg.retain) {
      // One transaction, hash first: a gateway reading the hash while subscribed cannot end up
      // with an older value than the one on the channel.
      const multi = this.pub.multi();
      if (msg.payload.length === 0) multi.hdel(this.retainedKey, msg.topic);
      else multi.hset(this.retainedKey, msg.topic, frame);
      sent = multi.publish(this.settings.cluster.channel, frame).exec();
    } else {
      sent = this.pub.publish(this.settings.cluster.channel, frame);
    }
    sent.then(
      () => {
        this.inFlight--;
        this.counters.sent++;
      },
      () => {
        this.inFlight--;
        this.drop();
      },
    );
  };

  private frameOf(msg: Message): Frame {
    const frame: Frame = { o: this.settings.gatewayId, t: msg.topic, q: msg.qos, r: msg.retain, p: msg.payload.toString('base64') };
    const properties = outboxProperties(msg.properties);
    if (properties === undefined) return frame;
    // What is left of the interval by this gateway's clock, carried over to the shared one.
    return msg.expiresAt === undefined ? { ...frame, m: properties } : { ...frame, m: properties, e: this.clock.now() + (msg.expiresAt - Date.now()) };
  }

  private readonly onMessage = (_channel: Buffer, data: Buffer): void => {
    const frame = decode(data);
    if (frame === null) {
      this.counters.invalid++;
      this.invalidLog.emit('redis cluster: message not understood; skipped', { channel: this.settings.cluster.channel, invalid: this.counters.invalid });
      return;
    }
    if (frame.o === this.settings.gatewayId) return; // our own, echoed by Redis
    this.counters.received++;
    this.publishLocally(frame);
  };

  private publishLocally(frame: Frame): void {
    const message = this.messageOf(frame);
    if (message === null) return;
    try {
      this.ctx.publish(message, `${CLUSTER_SOURCE_PREFIX}${frame.o}`);
    } catch (err) {
      this.counters.invalid++;
      this.invalidLog.emit('redis cluster: message refused by the broker; skipped', { topic: frame.t, error: errorMessage(err) });
    }
  }

  /**
   * The message a frame carries, or null when its properties are not what a PUBLISH could carry:
   * dropped rather than delivered without them — they may be what a subscriber relies on to read
   * the payload (format, content type) or to answer (response topic, correlation data).
   */
  private messageOf(frame: Frame): Message | null {
    const payload = Buffer.from(frame.p, 'base64');
    const plain: Message = { topic: frame.t, payload, qos: frame.q, retain: frame.r };
    if (frame.m === undefined) return plain;
    const read = checkedOutboxProperties(frame.m, payload);
    if ('problem' in read) {
      this.counters.invalid++;
      this.invalidLog.emit('redis cluster: message with invalid MQTT 5 properties; dropped', { topic: frame.t, origin: frame.o, problem: read.problem, invalid: this.counters.invalid });
      return null;
    }
    if (read.properties === undefined) return plain;
    if (frame.e === undefined) return { ...plain, properties: read.properties };
    const now = Date.now();
    // Two gateways' estimates of the Redis clock differ by up to half a round trip each: never
    // more left than the interval the message was published with (a 60 s message arrived with 61).
    const published = read.properties.messageExpiryInterval;
    const left = frame.e - this.clock.now();
    const expiresAt = now + (published === undefined ? left : Math.min(left, published * 1000));
    // Still handed to the broker: an expired retained message replaces the topic's retained one.
    if (expiresAt <= now) this.counters.expired++;
    return { ...plain, properties: read.properties, expiresAt };
  }

  private drop(): void {
    this.counters.dropped++;
    this.dropLog.emit('redis cluster: message not shared with the other gateways (Redis away or slow)', { dropped: this.counters.dropped });
  }
}

function encode(frame: Frame): string {
  return JSON.stringify(frame);
}

function decode(data: Buffer): Frame | null {
  try {
    const f = JSON.parse(data.toString()) as Partial<Frame>;
    if (typeof f.o !== 'string' || typeof f.t !== 'string' || typeof f.p !== 'string' || typeof f.r !== 'boolean') return null;
    if (f.q !== 0 && f.q !== 1 && f.q !== 2) return null;
    if (f.e !== undefined && !Number.isFinite(f.e)) return null;
    return f as Frame;
  } catch {
    return null;
  }
}
