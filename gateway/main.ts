#!/usr/bin/env node
/**
 * The `edgeway` command: the composition root. Reads the configuration, builds the broker (and,
 * in later issues, the adapters), opens the listeners and handles signals.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, defaultConfig, loadConfigFile } from '../config/load';
import type { Config } from '../config/schema';
import { Broker, EdgewayError } from './broker';
import { createConsoleLogger } from './console-logger';

/** sysexits.h EX_CONFIG: systemd units use it to avoid restart loops on a broken config. */
export const EXIT_CONFIG = 78;
export const EXIT_LISTEN = 1;

const USAGE = `Usage: edgeway [--config FILE]

Runs the edgeway MQTT gateway. Without --config it listens on 127.0.0.1:1883 and allows
anonymous clients (local only).

Options:
  -c, --config FILE   YAML configuration file
  -h, --help          show this help
  -v, --version       print the version
`;

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
  if (args.help) {
    process.stdout.write(USAGE);
    return;
  }
  const version = packageVersion();
  if (args.version) {
    process.stdout.write(`${version}\n`);
    return;
  }

  let config: Config;
  try {
    config = args.config === undefined ? defaultConfig() : loadConfigFile(args.config);
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message, EXIT_CONFIG);
    throw err;
  }

  const logger = createConsoleLogger(config.log.level);
  const broker = new Broker({ limits: config.limits, sysInterval: config.sys.interval, version }, logger);
  try {
    await broker.start(config.listeners);
  } catch (err) {
    if (err instanceof EdgewayError) fail(err.message, EXIT_LISTEN);
    throw err;
  }
  logger.info('edgeway started', { version, config: args.config ?? 'built-in defaults' });

  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info('stopping', { signal });
    broker.stop().then(
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

function parseCli(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
    },
    strict: true,
    allowPositionals: false,
  });
  return values;
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`edgeway: fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
