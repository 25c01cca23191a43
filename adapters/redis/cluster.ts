import type Redis from 'ioredis';
import { errorMessage, RateLimitedLog, type GatewayContext, type Message, type QoS } from '../../gateway/broker';
import type { RedisSettings } from './settings';
import { cameThroughRedis, CLUSTER_SOURCE_PREFIX } from './sources';

/** PUBLISH commands waiting for Redis' reply at most; beyond it messages are dropped and counted. */
const MAX_IN_FLIGHT = 10_000;

interface Frame {
  /** Origin gateway id. */
  readonly o: string;
  readonly t: string;
  readonly q: QoS;
  readonly r: boolean;
  /** Payload, base64. */
  readonly p: string;
}

export interface ClusterStats {
  readonly sent: number;
  readonly received: number;
  /** Not sent: Redis away, or MAX_IN_FLIGHT publishes waiting. */
  readonly dropped: number;
  readonly invalid: number;
}

/**
 * Cluster mode (issue 5, item 5): gateways sharing one Redis see each other's messages. Every
 * message published on this gateway (by a client, serial, a will) goes to the Redis pub/sub
 * channel with this gateway's id as origin; every message on the channel from another gateway is
 * published here with the source `cluster:<origin>`, which is never sent back out — no loops, and
 * each subscriber gets a message once. Pub/sub is at most once: while Redis is away messages do
 * not cross (they are counted as dropped). Retained messages are also kept in a Redis hash, so a
 * gateway that starts later still gets them.
 */
export class ClusterLink {
  private running = false;
  private inFlight = 0;
  private retainedLoaded = false;
  private readonly counters = { sent: 0, received: 0, dropped: 0, invalid: 0 };
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
    const frame = encode({ o: this.settings.gatewayId, t: msg.topic, q: msg.qos, r: msg.retain, p: msg.payload.toString('base64') });
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
    try {
      this.ctx.publish({ topic: frame.t, payload: Buffer.from(frame.p, 'base64'), qos: frame.q, retain: frame.r }, `${CLUSTER_SOURCE_PREFIX}${frame.o}`);
    } catch (err) {
      this.counters.invalid++;
      this.invalidLog.emit('redis cluster: message refused by the broker; skipped', { topic: frame.t, error: errorMessage(err) });
    }
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
    return f as Frame;
  } catch {
    return null;
  }
}
