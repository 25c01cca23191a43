#!/usr/bin/env -S node --max-semi-space-size=2
/**
 * The `edgeway` command: the composition root. Reads the configuration, builds the broker and
 * the adapters (serial), opens the listeners and handles signals.
 *
 * `--max-semi-space-size=2` (in the shebang and `npm start`): V8's young generation otherwise grows
 * to 16 MB per semi-space under the allocation bursts of many connects, which on a 1000-client
 * gateway costs ~7 KB of RSS per connection; at 2 MB the peak QoS 0 fan-in measured ~5 % lower
 * (scripts/bench, issue 2 note). A Pi has more CPU to spare than memory.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, defaultConfig, loadConfigFile } from '../config/load';
import type { Config } from '../config/schema';
import { SqliteRetainedStore } from '../adapters/sqlite';
import { Broker, EdgewayError, errorMessage, type Logger } from './broker';
import { createConsoleLogger } from './console-logger';

/** sysexits.h EX_CONFIG: systemd units use it to avoid restart loops on a broken config. */
export const EXIT_CONFIG = 78;
export const EXIT_LISTEN = 1;

const USAGE = `Usage: edgeway [--config FILE]
       edgeway serial list [--json]

Runs the edgeway MQTT gateway. Without --config it listens on 127.0.0.1:1883 and allows
anonymous clients (local only).

"edgeway serial list" prints the serial ports present with their stable /dev/serial/by-id
paths, USB vendor:product ids and serial numbers (--json for a machine-readable list).

Options:
  -c, --config FILE   YAML configuration file
  -h, --help          show this help
  -v, --version       print the version
      --json          (serial list) print JSON
`;

type SerialModule = typeof import('../adapters/serial');

/**
 * Loaded only when a serial port is configured or listed: `serialport` loads a native addon,
 * which a gateway without serial sensors should neither pay for at start nor depend on.
 */
function loadSerial(): SerialModule {
  return require('../adapters/serial') as SerialModule;
}

async function serialList(json: boolean): Promise<void> {
  const { listSerialPorts, formatPortTable } = loadSerial();
  const result = await listSerialPorts();
  if (!json && result.note !== undefined) process.stderr.write(`edgeway: ${result.note}\n`);
  const out = json ? `${JSON.stringify(result.ports, null, 2)}\n` : formatPortTable(result.ports);
  // Exit explicitly: a udevadm that hangs (its timeout already answered) must not keep us alive.
  process.stdout.write(out, () => process.exit(0));
}

function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

function fail(message: string, code: number): never {
  process.stderr.write(`edgeway: ${message}\n`);
  process.exit(code);
}

async function main(argv: string[]): Promise<void> {
  let args: ReturnType<typeof parseCli>;
  try {
    args = parseCli(argv);
  } catch (err) {
    fail(`${(err as Error).message}\n${USAGE}`, 64);
  }
  const { values: options, positionals } = args;
  if (options.help) {
    process.stdout.write(USAGE);
    return;
  }
  const version = packageVersion();
  if (options.version) {
    process.stdout.write(`${version}\n`);
    return;
  }
  if (positionals.length > 0) {
    if (positionals.length === 2 && positionals[0] === 'serial' && positionals[1] === 'list') {
      await serialList(options.json === true);
      return;
    }
    fail(`unknown command: ${positionals.join(' ')}\n${USAGE}`, 64);
  }
  if (options.json === true) fail(`--json is only used with "serial list"\n${USAGE}`, 64);

  let config: Config;
  try {
    config = options.config === undefined ? defaultConfig() : loadConfigFile(options.config);
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message, EXIT_CONFIG);
    throw err;
  }

  const logger = createConsoleLogger(config.log.level);
  const retainedStore = openRetainedStore(config, logger);
  const broker = new Broker({ limits: config.limits, sysInterval: config.sys.interval, version, retainedStore }, logger);
  try {
    await broker.start(config.listeners);
  } catch (err) {
    if (err instanceof EdgewayError) fail(err.message, EXIT_LISTEN);
    throw err;
  }
  // Adapters get a narrow context, never the broker (DESIGN.md "Layering").
  let serial: InstanceType<SerialModule['SerialAdapter']> | undefined;
  if (config.serial.length > 0) {
    const { SerialAdapter } = loadSerial();
    serial = new SerialAdapter(broker.context('serial'), config.serial, { gatewayId: hostname(), version });
    // Resolves after each port's first open attempt; missing ports are retried in the background.
    await serial.start();
  }
  logger.info('edgeway started', { version, config: options.config ?? 'built-in defaults', serialPorts: config.serial.length });

  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info('stopping', { signal });
    // Serial first: its ports publish `offline` while the broker still routes.
    (serial?.stop(2000) ?? Promise.resolve())
      .then(() => broker.stop())
      .then(() => retainedStore?.close()) // writes what is pending before exit
      .then(
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

/**
 * Storage for retained messages. A database that cannot be opened (read-only file system,
 * permissions) is logged and the gateway runs without persistence: live routing matters more.
 */
function openRetainedStore(config: Config, logger: Logger): SqliteRetainedStore | undefined {
  const store = new SqliteRetainedStore({ ...config.storage, logger });
  try {
    store.open();
    return store;
  } catch (err) {
    logger.error('storage unavailable; running without persistence (retained messages will not survive a restart)', {
      path: config.storage.path,
      error: errorMessage(err),
    });
    return undefined;
  }
}

function parseCli(argv: string[]) {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
      json: { type: 'boolean' },
    },
    strict: true,
    allowPositionals: true,
  });
  return { values, positionals };
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`edgeway: fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
