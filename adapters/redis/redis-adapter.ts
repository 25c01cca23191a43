import type Redis from 'ioredis';
import { errorMessage, type GatewayContext, type Outbox } from '../../gateway/broker';
import { ClusterLink, type ClusterStats } from './cluster';
import { createRedisConnection, redactUrl } from './connection';
import { Downlink, type DownlinkStats } from './downlink';
import { RedisClock } from './redis-clock';
import type { RedisSettings } from './settings';
import { STATUS_SOURCE } from './sources';
import { Uplink, type StateStore, type UplinkState, type UplinkStats } from './uplink';

/** The status topic is republished at least this often while its values change (ms). */
const STATUS_INTERVAL_MS = 10_000;
/** While a backlog drains, its status is republished at most this often (ms). */
const PROGRESS_STATUS_MS = 1000;

export interface RedisAdapterStats {
  readonly uplink: UplinkStats;
  readonly downlink: DownlinkStats | undefined;
  readonly cluster: ClusterStats | undefined;
}

/**
 * The optional link to a central Redis (issue 5): the uplink drains the outbox into a stream,
 * the downlink brings commands in, cluster mode shares messages between gateways. Redis is never
 * required: `start()` returns at once, connecting happens in the background and forever, and
 * nothing local ever waits for Redis. Connections: one for the uplink (and cluster publishes),
 * one for the downlink's blocking reads, one for the cluster subscription.
 */
export class RedisAdapter {
  private readonly main: Redis;
  private readonly uplink: Uplink;
  private readonly downlink: Downlink | undefined;
  private readonly cluster: ClusterLink | undefined;
  /** Redis' clock, for message expiry (downlink and cluster); read over `main`. */
  private readonly clock: RedisClock;
  private readonly others: Redis[] = [];
  private statusTimer: NodeJS.Timeout | undefined;
  private lastStatus = '';
  private lastStatusAt = 0;
  /** The backlog in the last status published. */
  private backlogReported = 0;

  constructor(
    private readonly ctx: GatewayContext,
    outbox: Outbox,
    store: StateStore,
    private readonly settings: RedisSettings,
  ) {
    const log = ctx.logger;
    this.main = createRedisConnection(settings, 'uplink', log);
    this.uplink = new Uplink(
      this.main,
      outbox,
      store,
      settings,
      log,
      (state) => this.onUplinkState(state),
      () => this.onUplinkProgress(),
    );
    this.clock = new RedisClock(this.main, (err) => log.debug('redis: TIME failed; read again in a minute', { error: errorMessage(err) }));
    if (settings.downlink.enabled) {
      const conn = createRedisConnection(settings, 'downlink', log);
      this.others.push(conn);
      this.downlink = new Downlink(conn, ctx, store, settings, this.clock);
    }
    if (settings.cluster.enabled) {
      const conn = createRedisConnection(settings, 'cluster', log);
      this.others.push(conn);
      this.cluster = new ClusterLink(this.main, conn, ctx, settings, this.clock);
    }
  }

  /** Starts connecting and draining in the background; never waits for Redis. */
  start(): void {
    this.ctx.logger.info('redis: connecting in the background', {
      url: redactUrl(this.settings.url),
      gatewayId: this.settings.gatewayId,
      uplinkStream: this.settings.uplink.stream,
      uplinkTopics: this.settings.uplink.topics.join(','),
      downlink: this.settings.downlink.enabled ? this.settings.downlink.stream : 'off',
      cluster: this.settings.cluster.enabled ? this.settings.cluster.channel : 'off',
    });
    this.main.on('ready', () => this.ctx.logger.info('redis: connected', { url: redactUrl(this.settings.url) }));
    this.main.connect().catch(() => undefined); // retried forever by the connection; logged there
    // Only what expires by Redis' clock needs it: no TIME every minute for an uplink alone.
    if (this.downlink !== undefined || this.cluster !== undefined) this.clock.start();
    this.uplink.start();
    this.downlink?.start();
    this.cluster?.start();
    this.publishStatus(true);
    this.statusTimer = setInterval(() => this.publishStatus(false), STATUS_INTERVAL_MS);
    this.statusTimer.unref();
  }

  /** Stops the loops (the batch in progress finishes), then closes the connections. */
  async stop(): Promise<void> {
    if (this.statusTimer !== undefined) clearInterval(this.statusTimer);
    this.statusTimer = undefined;
    await Promise.all([this.uplink.stop(), this.downlink?.stop(), this.cluster?.stop()]);
    this.clock.stop();
    this.publishStatus(true, 'disconnected');
    for (const conn of [this.main, ...this.others]) {
      try {
        conn.disconnect();
      } catch (err) {
        this.ctx.logger.warn('redis: error while disconnecting', { error: errorMessage(err) });
      }
    }
  }

  stats(): RedisAdapterStats {
    return { uplink: this.uplink.stats(), downlink: this.downlink?.stats(), cluster: this.cluster?.stats() };
  }

  /**
   * A backlog that has just drained is reported at once; progress otherwise at most once a second.
   * (Live traffic confirms a batch every few ms with the backlog at 0 each time: reporting each
   * would publish — and store — the retained status hundreds of times a second.)
   */
  private onUplinkProgress(): void {
    const backlog = this.uplink.backlog;
    const drained = backlog === 0 && this.backlogReported > 0;
    if (drained || Date.now() - this.lastStatusAt >= PROGRESS_STATUS_MS) this.publishStatus(false);
  }

  private onUplinkState(state: UplinkState): void {
    this.ctx.logger.info('redis uplink state', { state });
    this.publishStatus(true);
  }

  /**
   * The retained status topic: state, backlog and the age of the oldest waiting message. On every
   * state change, and every STATUS_INTERVAL_MS while something changed (the age of a waiting
   * backlog grows, so it is republished while the uplink is away).
   */
  private publishStatus(force: boolean, state?: UplinkState): void {
    const u = this.uplink.stats();
    const status = {
      state: state ?? u.state,
      backlog: u.backlog,
      oldestAgeMs: u.oldestAgeMs,
      delivered: u.delivered,
      gateway: this.settings.gatewayId,
      ...(u.lastError === undefined ? {} : { lastError: u.lastError }),
    };
    const json = JSON.stringify(status);
    if (!force && json === this.lastStatus) return;
    this.lastStatus = json;
    this.lastStatusAt = Date.now();
    this.backlogReported = status.backlog;
    try {
      this.ctx.publish({ topic: this.settings.statusTopic, payload: Buffer.from(json), qos: 0, retain: true }, STATUS_SOURCE);
    } catch (err) {
      this.ctx.logger.warn('redis: status not published', { topic: this.settings.statusTopic, error: errorMessage(err) });
    }
  }
}
