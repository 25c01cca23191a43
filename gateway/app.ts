/**
 * The composition root: builds storage, broker and adapters from a validated config, starts them,
 * and stops them in the right order. gateway/main.ts (the CLI) runs it; tests that need the real
 * gateway with settings the config does not offer yet (the outbox's topics before the uplink
 * exists) run it as a child process too.
 */
import { hostname } from 'node:os';
import type { Config } from '../config/schema';
import { SqliteOutbox, SqliteRetainedStore, SqliteSessionStore, SqliteStorage } from '../adapters/sqlite';
import { Broker, errorMessage, type BrokerOptions, type Logger } from './broker';

type SerialModule = typeof import('../adapters/serial');

/**
 * Loaded only when a serial port is configured or listed: `serialport` loads a native addon,
 * which a gateway without serial sensors should neither pay for at start nor depend on.
 */
export function loadSerial(): SerialModule {
  return require('../adapters/serial') as SerialModule;
}

export interface GatewayOptions {
  readonly config: Config;
  readonly version: string;
  readonly logger: Logger;
  /**
   * Topic filters whose messages enter the outbox: the uplink's choice (issue 5). Without them no
   * outbox is kept and nothing waits for it.
   */
  readonly uplinkTopics?: readonly string[];
}

interface OpenedStorage {
  readonly storage: SqliteStorage;
  readonly retained: SqliteRetainedStore;
  readonly sessions: SqliteSessionStore;
  readonly outbox: SqliteOutbox | undefined;
}

export class Gateway {
  private stopping: Promise<void> | undefined;

  private constructor(
    readonly broker: Broker,
    readonly storage: OpenedStorage | undefined,
    private readonly serial: InstanceType<SerialModule['SerialAdapter']> | undefined,
  ) {}

  /** Opens storage, starts the broker's listeners and the serial ports. Rejects if a listener cannot open. */
  static async start(options: GatewayOptions): Promise<Gateway> {
    const { config, version, logger } = options;
    const stored = openStorage(config, logger, (options.uplinkTopics?.length ?? 0) > 0);
    const brokerOptions: BrokerOptions = {
      limits: config.limits,
      sysInterval: config.sys.interval,
      version,
      ...(stored === undefined
        ? {}
        : {
            storage: { retained: stored.retained, sessions: stored.sessions, durable: () => stored.storage.durable() },
            ...(stored.outbox === undefined ? {} : { uplink: { outbox: stored.outbox, topics: options.uplinkTopics ?? [] } }),
          }),
    };
    const broker = new Broker(brokerOptions, logger);
    if (stored !== undefined) broker.sys.addValues(() => storageSysValues(stored));
    let serial: InstanceType<SerialModule['SerialAdapter']> | undefined;
    try {
      await broker.start(config.listeners);
      // Adapters get a narrow context, never the broker (DESIGN.md "Layering").
      if (config.serial.length > 0) {
        const { SerialAdapter } = loadSerial();
        serial = new SerialAdapter(broker.context('serial'), config.serial, { gatewayId: hostname(), version });
        // Resolves after each port's first open attempt; missing ports are retried in the background.
        await serial.start();
      }
    } catch (err) {
      await new Gateway(broker, stored, serial).stop();
      throw err;
    }
    return new Gateway(broker, stored, serial);
  }

  /**
   * Serial first (its ports publish `offline` while the broker still routes), then the broker,
   * then storage, which commits what is pending before it closes. Idempotent.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      try {
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
 * The database with its parts. One that cannot be opened (read-only file system, permissions) is
 * logged and the gateway runs without persistence: live routing matters more.
 */
function openStorage(config: Config, logger: Logger, withOutbox: boolean): OpenedStorage | undefined {
  const { path, sync, flushInterval, outbox: limits } = config.storage;
  const storage = new SqliteStorage({ path, sync, flushInterval, logger });
  const retained = new SqliteRetainedStore(storage);
  const sessions = new SqliteSessionStore(storage);
  // The storage is closed by Gateway.stop(), not by whoever drains the outbox.
  const outbox = withOutbox ? new SqliteOutbox(storage, limits, { ownsStorage: false }) : undefined;
  try {
    storage.open();
    return { storage, retained, sessions, outbox };
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
    );
  }
  return values;
}
