/**
 * The composition root: builds storage, broker and adapters from a validated config, starts them,
 * and stops them in the right order. gateway/main.ts (the CLI) runs it; tests and benchmarks that
 * need the outbox without a Redis (scripts/gateway-child.ts) run it too.
 */
import { hostname } from 'node:os';
import type { Config } from '../config/schema';
import { SqliteOutbox, SqliteRetainedStore, SqliteSessionStore, SqliteStateStore, SqliteStorage } from '../adapters/sqlite';
import { CLUSTER_SOURCE_PREFIX, cameThroughRedis } from '../adapters/redis/sources';
import { AuthAdapter, AuthFileError, type AuthReloadResult } from '../adapters/auth';
import { Broker, errorMessage, MemoryOutbox, type BrokerOptions, type Logger, type Outbox } from './broker';
import type { MetricsServer } from './metrics-http';
import { noServiceNotifier, type ServiceNotifier } from './systemd-notify';

type SerialModule = typeof import('../adapters/serial');
type RedisModule = typeof import('../adapters/redis');
type SerialAdapter = InstanceType<SerialModule['SerialAdapter']>;
type RedisAdapter = InstanceType<RedisModule['RedisAdapter']>;
type PortStatus = ReturnType<SerialAdapter['status']>[number];

/**
 * Loaded only when a serial port is configured or listed: `serialport` loads a native addon,
 * which a gateway without serial sensors should neither pay for at start nor depend on.
 */
export function loadSerial(): SerialModule {
  return require('../adapters/serial') as SerialModule;
}

/** Loaded only with a `redis` section: a gateway without Redis does not load ioredis at all. */
function loadRedis(): RedisModule {
  return require('../adapters/redis') as RedisModule;
}

/**
 * Loaded only with a `metrics` section: `node:http` and `node:perf_hooks` cost 0.5–0.7 MB of idle
 * RSS (issue 6, scripts/bench/footprint.ts) that a gateway without the endpoint should not pay.
 */
function loadMetrics(): typeof import('./metrics-http') {
  return require('./metrics-http') as typeof import('./metrics-http');
}

export interface GatewayOptions {
  readonly config: Config;
  readonly version: string;
  readonly logger: Logger;
  /**
   * Topic filters whose messages enter the outbox. Default: the Redis uplink's `redis.uplink.topics`
   * (none without a `redis` section). Given explicitly, an outbox is kept without any Redis — for
   * tests and benchmarks of the store-and-forward path alone.
   */
  readonly uplinkTopics?: readonly string[];
}

interface OpenedStorage {
  readonly storage: SqliteStorage;
  readonly retained: SqliteRetainedStore;
  readonly sessions: SqliteSessionStore;
  readonly state: SqliteStateStore;
  readonly outbox: SqliteOutbox | undefined;
}

/** What a reload applied, and the sections that changed but take effect only after a restart. */
export interface ReloadResult {
  readonly applied: readonly string[];
  readonly needsRestart: readonly string[];
  readonly serial?: { readonly added: readonly string[]; readonly removed: readonly string[]; readonly changed: readonly string[] };
  /** The password and ACL files read again (on every reload while there is an `auth` section). */
  readonly auth?: AuthReloadResult;
}

/** Sections a running gateway takes over from a reloaded file; everything else needs a restart. */
const RELOADABLE: ReadonlySet<keyof Config> = new Set<keyof Config>(['log', 'serial', 'auth']);

export class Gateway {
  private stopping: Promise<void> | undefined;

  private constructor(
    readonly broker: Broker,
    readonly storage: OpenedStorage | undefined,
    private serial: SerialAdapter | undefined,
    readonly redis: RedisAdapter | undefined,
    /** Password file and ACL, with an `auth` section (also one added by a reload). */
    private auth: AuthAdapter | undefined,
    /** The configuration in effect: the start's, with reloaded sections replaced. */
    private config: Config,
    /** How serial adapters are made (also one added by a reload). */
    private readonly serialOptions: { readonly gatewayId: string; readonly version: string },
  ) {}

  /** The `/metrics` and `/healthz` listener, with a `metrics` section. */
  metrics: MetricsServer | undefined;

  /** Per-port status of the serial bridge (none without serial ports). */
  serialStatus(): PortStatus[] {
    return this.serial?.status() ?? [];
  }

  /**
   * One line for `systemctl status` (systemd's STATUS=): clients, the listeners' actual addresses,
   * serial ports online, the uplink's state and backlog.
   */
  statusLine(): string {
    const clients = this.broker.connectionCount;
    const parts = [`${clients} client${clients === 1 ? '' : 's'}`];
    // broker.start() opened config.listeners one after the other, in order.
    this.broker.addresses().forEach((address, i) => {
      const listener = this.config.listeners[i];
      const path = listener?.protocol === 'ws' || listener?.protocol === 'wss' ? listener.path : '';
      parts.push(`${listener?.protocol ?? 'mqtt'} ${address.address}:${address.port}${path}`);
    });
    if (this.metrics !== undefined) parts.push(`metrics port ${this.metrics.port}`);
    const ports = this.serialStatus();
    if (ports.length > 0) parts.push(`serial ${ports.filter((p) => p.state === 'online').length}/${ports.length} online`);
    if (this.redis !== undefined) {
      const { state, backlog } = this.redis.stats().uplink;
      parts.push(`uplink ${state}, backlog ${backlog}`);
    }
    return parts.join('; ');
  }

  /**
   * SIGHUP (issue 6): takes over the sections of `next` that can change while running — `log`
   * (through `setLogLevel`) and `serial` (ports added, removed or changed; unchanged ones keep
   * running) — and names the other changed sections, which keep their old values until a restart.
   */
  async reload(next: Config, setLogLevel: (level: Config['log']['level']) => void): Promise<ReloadResult> {
    if (this.stopping !== undefined) return { applied: [], needsRestart: [] };
    // Both sides' keys: an optional section (redis, metrics) removed from the file is a change too.
    const keys = new Set([...Object.keys(this.config), ...Object.keys(next)] as (keyof Config)[]);
    const changed = [...keys].filter((key) => JSON.stringify(this.config[key]) !== JSON.stringify(next[key]));
    const applied = changed.filter((key) => RELOADABLE.has(key));
    const needsRestart = changed.filter((key) => !RELOADABLE.has(key));
    if (applied.includes('log')) setLogLevel(next.log.level);
    let serial: ReloadResult['serial'];
    if (applied.includes('serial')) {
      if (this.serial === undefined) {
        const { SerialAdapter } = loadSerial();
        this.serial = new SerialAdapter(this.broker.context('serial'), [], this.serialOptions);
        await this.serial.start();
      }
      serial = await this.serial.reconfigure(next.serial);
    }
    const auth = await this.reloadAuth(next.auth);
    this.config = { ...this.config, log: next.log, serial: next.serial, auth: auth === undefined || auth.problems.length === 0 ? next.auth : this.config.auth };
    return { applied, needsRestart, ...(serial === undefined ? {} : { serial }), ...(auth === undefined ? {} : { auth }) };
  }

  /**
   * The password and ACL files are read again even when the `auth` section is unchanged (their
   * contents are what changed); with a problem the files in use stay. An `auth` section added
   * starts the adapter, one removed stops it.
   */
  private async reloadAuth(next: Config['auth']): Promise<AuthReloadResult | undefined> {
    if (next === undefined) {
      if (this.auth === undefined) return undefined;
      this.auth.stop();
      this.auth = undefined;
      return { changed: ['auth section removed: no authentication or ACL'], problems: [] };
    }
    let result: AuthReloadResult;
    if (this.auth !== undefined) {
      result = await this.auth.reload(next);
      if (result.problems.length > 0) return result;
    } else {
      const added = newAuthAdapter(this.broker, next);
      try {
        await added.start();
      } catch (err) {
        return { changed: [], problems: err instanceof AuthFileError ? err.problems : [errorMessage(err)] };
      }
      this.auth = added;
      result = { changed: ['auth section added'], problems: [] };
    }
    // Connected clients whose login the new files no longer accept are disconnected, as Mosquitto does.
    const auth = this.auth;
    const revoked = this.broker.disconnectClients((client) => !auth.stillAllowed(client), 'login no longer valid after a reload of the users');
    return revoked === 0 ? result : { ...result, changed: [...result.changed, `${revoked} connected clients disconnected (user removed or password changed)`] };
  }

  /**
   * SIGHUP: every TLS listener re-reads its certificate, key and CA (renewals change the files,
   * not the configuration). Each listener is logged; one whose files fail keeps its old ones.
   */
  reloadCertificates(): ReturnType<Broker['reloadCertificates']> {
    return this.stopping === undefined ? this.broker.reloadCertificates() : [];
  }

  /** Opens storage, starts the broker's listeners, serial ports and Redis. Rejects if a listener cannot open. */
  static async start(options: GatewayOptions): Promise<Gateway> {
    const { config, version, logger } = options;
    const uplinkTopics = options.uplinkTopics ?? config.redis?.uplink.topics ?? [];
    const stored = openStorage(config, logger, uplinkTopics.length > 0);
    let outbox: Outbox | undefined = stored?.outbox;
    if (outbox === undefined && (uplinkTopics.length > 0 || config.redis !== undefined)) {
      // Without storage (or with no uplink topics: downlink and cluster still run) the uplink
      // buffers in memory, within the same bounds.
      if (uplinkTopics.length > 0) logger.warn('outbox kept in memory only: messages waiting for the uplink are lost on restart', { maxMessages: config.storage.outbox.maxMessages });
      const memory = new MemoryOutbox(config.storage.outbox, logger);
      await memory.open();
      outbox = memory;
    }
    const brokerOptions: BrokerOptions = {
      limits: config.limits,
      sysInterval: config.sys.interval,
      version,
      ...(stored === undefined ? {} : { storage: { retained: stored.retained, sessions: stored.sessions, durable: () => stored.storage.durable() } }),
      ...(outbox === undefined || uplinkTopics.length === 0 ? {} : { uplink: { outbox, topics: uplinkTopics, skipSource: cameThroughRedis } }),
    };
    const broker = new Broker(brokerOptions, logger);
    if (stored !== undefined) broker.sys.addValues(() => storageSysValues(stored));
    // Resolved before serial starts: both name the gateway the same way.
    const redisSettings = config.redis === undefined ? undefined : loadRedis().resolveRedisSettings(config.redis, hostname());
    // One gateway id everywhere (discovery, Redis keys) when the redis section names one.
    const serialOptions = { gatewayId: redisSettings?.gatewayId ?? hostname(), version };
    let serial: SerialAdapter | undefined;
    let redis: RedisAdapter | undefined;
    let auth: AuthAdapter | undefined;
    try {
      // Before the listeners open: no client may connect before its password and ACL are known.
      if (config.auth !== undefined) {
        auth = newAuthAdapter(broker, config.auth);
        await auth.start();
      }
      await broker.start(config.listeners);
      // Adapters get a narrow context, never the broker (DESIGN.md "Layering").
      if (config.serial.length > 0) {
        const { SerialAdapter } = loadSerial();
        serial = new SerialAdapter(broker.context('serial'), config.serial, serialOptions);
        // Resolves after each port's first open attempt; missing ports are retried in the background.
        await serial.start();
      }
      if (redisSettings !== undefined && outbox !== undefined) {
        const { MemoryStateStore, RedisAdapter } = loadRedis();
        if (config.redis?.gatewayId === undefined) {
          logger.info('redis: gatewayId not set; using the host name — every gateway on one Redis needs its own id', { gatewayId: redisSettings.gatewayId });
        }
        redis = new RedisAdapter(broker.context('redis'), outbox, stored?.state ?? new MemoryStateStore(), redisSettings);
        const adapter = redis;
        broker.sys.addValues(() => redisSysValues(adapter));
        redis.start(); // connects in the background: Redis is never waited for
      }
    } catch (err) {
      await new Gateway(broker, stored, serial, redis, auth, config, serialOptions).stop();
      throw err;
    }
    const gateway = new Gateway(broker, stored, serial, redis, auth, config, serialOptions);
    if (config.metrics !== undefined) {
      // Reads the gateway's parts at scrape time.
      const { MetricsServer } = loadMetrics();
      gateway.metrics = new MetricsServer(gateway, config.metrics, logger);
      try {
        await gateway.metrics.start();
      } catch (err) {
        gateway.metrics = undefined;
        await gateway.stop();
        throw err;
      }
    }
    return gateway;
  }

  /**
   * The metrics listener first, then Redis (the batch in flight is confirmed and acknowledged),
   * then serial (its ports publish `offline` while the broker still routes), then the broker, then
   * storage, which commits what is pending before it closes. Idempotent.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      try {
        await this.metrics?.stop();
        await this.redis?.stop();
        await this.serial?.stop(2000);
        await this.broker.stop();
      } finally {
        // Whatever failed above, what is pending is still written.
        this.storage?.storage.close();
      }
    })();
    return this.stopping;
  }
}

/**
 * The auth adapter of a gateway. Messages from another gateway of the cluster were authorised
 * where they were published (README "Users and access control"), so they are not checked again.
 */
function newAuthAdapter(broker: Broker, settings: NonNullable<Config['auth']>): AuthAdapter {
  return new AuthAdapter(broker.context('auth'), settings, { trustedSource: (source) => source.startsWith(CLUSTER_SOURCE_PREFIX) });
}

/**
 * The longest a graceful stop may take before the process exits anyway (ms): below the systemd
 * unit's TimeoutStopSec (15 s), so systemd never has to SIGKILL a gateway in the middle of a commit.
 */
const STOP_DEADLINE_MS = 10_000;

/** SIGINT / SIGTERM: a graceful stop (pending writes committed), then exit. */
export function stopOnSignals(gateway: Gateway, logger: Logger, notifier: ServiceNotifier = noServiceNotifier): void {
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info('stopping', { signal });
    notifier.stopping();
    setTimeout(() => {
      logger.error('stop took too long; exiting without waiting further', { deadlineMs: STOP_DEADLINE_MS });
      process.exit(1);
    }, STOP_DEADLINE_MS).unref();
    gateway.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error('error while stopping', { error: String(err) });
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
}

/** A log field with the names, or nothing when there are none. */
function listed(key: string, names: readonly string[] | undefined): Record<string, string> {
  return names === undefined || names.length === 0 ? {} : { [key]: names.join(',') };
}

/**
 * SIGHUP: re-reads the certificates of TLS listeners (always: Gateway.reloadCertificates), then
 * reads the configuration file again and applies what can change while running
 * (Gateway.reload). A file with problems is logged with every problem and changes nothing. One
 * reload at a time; a SIGHUP during one runs one more afterwards. Each run is framed by
 * RELOADING=1 and READY=1 for systemd, also when nothing could be reloaded: `systemctl reload`
 * under a Type=notify-reload unit (systemd ≥ 253) waits for that pair.
 */
export function reloadOnHangup(
  gateway: Gateway,
  logger: Logger & { setLevel(level: Config['log']['level']): void },
  configPath: string | undefined,
  load: (path: string) => Promise<Config>,
  notifier: ServiceNotifier = noServiceNotifier,
): void {
  let running: Promise<void> | undefined;
  let again = false;
  const reload = async (): Promise<void> => {
    // First, and whatever the configuration file holds: a renewed certificate must be taken up
    // even when the file is unchanged or broken.
    gateway.reloadCertificates();
    if (configPath === undefined) {
      logger.warn('SIGHUP: nothing to reload, running on the built-in defaults (no --config / EDGEWAY_CONFIG)');
      return;
    }
    let next: Config;
    try {
      next = await load(configPath);
    } catch (err) {
      logger.error('SIGHUP: configuration not reloaded; the running one stays in effect', { config: configPath, problems: (err as { problems?: readonly string[] }).problems?.join('; ') ?? errorMessage(err) });
      return;
    }
    const result = await gateway.reload(next, (level) => logger.setLevel(level));
    logger.info('SIGHUP: configuration reloaded', {
      config: configPath,
      applied: result.applied.join(',') || 'nothing changed',
      ...listed('serialAdded', result.serial?.added),
      ...listed('serialRemoved', result.serial?.removed),
      ...listed('serialChanged', result.serial?.changed),
    });
    const auth = result.auth;
    if (auth !== undefined && auth.problems.length > 0) {
      logger.error('SIGHUP: auth files not reloaded; the ones in use stay', { problems: auth.problems.join('; ') });
    } else if (auth !== undefined) {
      logger.info('SIGHUP: auth files reloaded', { changes: auth.changed.join('; ') || 'none' });
    }
    if (result.needsRestart.length > 0) logger.warn('SIGHUP: changed sections not applied; they take effect after a restart', { sections: result.needsRestart.join(',') });
  };
  const run = (): void => {
    if (running !== undefined) {
      again = true;
      return;
    }
    notifier.reloading();
    running = reload()
      .catch((err: unknown) => logger.error('SIGHUP: reload failed', { error: errorMessage(err) }))
      .finally(() => {
        notifier.reloaded();
        running = undefined;
        if (again) {
          again = false;
          run();
        }
      });
  };
  process.on('SIGHUP', run);
}

/**
 * The database with its parts. One that cannot be opened (read-only file system, permissions) is
 * logged and the gateway runs without persistence: live routing matters more.
 */
function openStorage(config: Config, logger: Logger, withOutbox: boolean): OpenedStorage | undefined {
  const { path, sync, flushInterval, outbox: limits } = config.storage;
  const storage = new SqliteStorage({ path, sync, flushInterval, logger });
  const retained = new SqliteRetainedStore(storage);
  const sessions = new SqliteSessionStore(storage);
  const state = new SqliteStateStore(storage);
  // The storage is closed by Gateway.stop(), not by whoever drains the outbox.
  const outbox = withOutbox ? new SqliteOutbox(storage, limits, { ownsStorage: false }) : undefined;
  try {
    storage.open();
    return { storage, retained, sessions, state, outbox };
  } catch (err) {
    logger.error('storage unavailable; running without persistence (retained messages and sessions will not survive a restart)', {
      path,
      error: errorMessage(err),
    });
    return undefined;
  }
}

function storageSysValues({ storage, outbox }: OpenedStorage): [string, string][] {
  const values: [string, string][] = [
    ['storage/commits', String(storage.counters.commits)],
    ['storage/commits failed', String(storage.counters.failedCommits)],
  ];
  const lastHour = storage.diskWrites.lastHour;
  if (lastHour !== null) values.push(['storage/bytes written/hour', String(lastHour)]);
  if (outbox !== undefined) {
    const s = outbox.stats();
    values.push(
      ['outbox/messages', String(s.size)],
      ['outbox/bytes', String(s.bytes)],
      ['outbox/dropped', String(s.droppedOldest + s.droppedNew)],
      ['outbox/failed', String(s.failed)],
      ['outbox/never written', String(s.neverWritten)],
    );
  }
  return values;
}

function redisSysValues(redis: RedisAdapter): [string, string][] {
  const { uplink, downlink, cluster } = redis.stats();
  const values: [string, string][] = [
    ['uplink/state', uplink.state],
    ['uplink/backlog', String(uplink.backlog)],
    ['uplink/oldest age ms', String(uplink.oldestAgeMs)],
    ['uplink/delivered', String(uplink.delivered)],
    ['uplink/failures', String(uplink.failures)],
  ];
  if (downlink !== undefined) {
    values.push(['downlink/delivered', String(downlink.delivered)], ['downlink/invalid', String(downlink.invalid)], ['downlink/expired', String(downlink.expired)], ['downlink/denied', String(downlink.denied)]);
  }
  if (cluster !== undefined) {
    values.push(
      ['cluster/sent', String(cluster.sent)],
      ['cluster/received', String(cluster.received)],
      ['cluster/dropped', String(cluster.dropped)],
      ['cluster/invalid', String(cluster.invalid)],
      ['cluster/expired', String(cluster.expired)],
    );
  }
  return values;
}
