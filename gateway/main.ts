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
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError } from '../config/errors';
import { loadConfigIsolated } from '../config/load-isolated';
import type { Config } from '../config/schema';
import { Gateway, loadSerial, reloadOnHangup, stopOnSignals } from './app';
import { EdgewayError, errorMessage } from './broker';
import { createConsoleLogger } from './console-logger';
import { connectServiceNotifier } from './systemd-notify';

/** sysexits.h EX_CONFIG: systemd units use it to avoid restart loops on a broken config. */
export const EXIT_CONFIG = 78;
export const EXIT_LISTEN = 1;

const USAGE = `Usage: edgeway [--config FILE]
       edgeway check-config [FILE]
       edgeway passwd [--delete] FILE USER
       edgeway serial list [--json]

Runs the edgeway MQTT gateway. Without a configuration file it listens on 127.0.0.1:1883 and
allows anonymous clients (local only). The file comes from --config, else from the
EDGEWAY_CONFIG environment variable.

"edgeway check-config" validates a configuration file (FILE, --config or EDGEWAY_CONFIG) without
starting anything: it prints every problem with its key path and exits 78, or exits 0.

"edgeway passwd" adds USER to the password file FILE (auth.passwordFile) or changes its
password, asked twice on the terminal, or read from the first line of stdin when it is not a
terminal. The file is created (mode 0600) if missing; other lines stay as they are. --delete
removes USER. Send the gateway SIGHUP (systemctl reload edgeway) to use the new file.

"edgeway serial list" prints the serial ports present with their stable /dev/serial/by-id
paths, USB vendor:product ids and serial numbers (--json for a machine-readable list).

Options:
  -c, --config FILE   YAML configuration file (default: $EDGEWAY_CONFIG, else built-in defaults)
  -h, --help          show this help
  -v, --version       print the version
      --json          (serial list) print JSON
      --delete        (passwd) remove the user
`;

async function serialList(json: boolean): Promise<void> {
  const { listSerialPorts, formatPortTable } = loadSerial();
  const result = await listSerialPorts();
  if (!json && result.note !== undefined) process.stderr.write(`edgeway: ${result.note}\n`);
  const out = json ? `${JSON.stringify(result.ports, null, 2)}\n` : formatPortTable(result.ports);
  // Exit explicitly: a udevadm that hangs (its timeout already answered) must not keep us alive.
  process.stdout.write(out, () => process.exit(0));
}

/**
 * `edgeway check-config`: every problem with its key path on stderr and exit 78, or "ok" and exit
 * 0. The password and ACL files the configuration names are checked too (file and line).
 */
async function checkConfig(path: string | undefined): Promise<void> {
  if (path === undefined) fail(`check-config needs a file (FILE, --config or EDGEWAY_CONFIG)\n${USAGE}`, 64);
  // In this thread: the command exits right after, the validator's memory with it.
  const { loadConfigFile } = require('../config/load') as typeof import('../config/load');
  let config: Config;
  try {
    config = loadConfigFile(path);
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message, EXIT_CONFIG);
    throw err;
  }
  if (config.auth !== undefined) {
    const problems = await loadAuth().authFileProblems(config.auth);
    if (problems.length > 0) fail(new (loadAuth().AuthFileError)(problems).message, EXIT_CONFIG);
  }
  process.stdout.write(`${path}: ok\n`);
}

/** The auth adapter, for `edgeway passwd` and to recognise its errors. */
function loadAuth(): typeof import('../adapters/auth') {
  return require('../adapters/auth') as typeof import('../adapters/auth');
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
  // --config wins over the environment; an empty EDGEWAY_CONFIG counts as unset.
  const configPath = options.config ?? (process.env.EDGEWAY_CONFIG || undefined);
  if (positionals.length > 0) {
    if (positionals.length === 2 && positionals[0] === 'serial' && positionals[1] === 'list') {
      await serialList(options.json === true);
      return;
    }
    if (positionals[0] === 'check-config' && positionals.length <= 2) {
      await checkConfig(positionals[1] ?? configPath);
      return;
    }
    if (positionals[0] === 'passwd') {
      const [, file, user] = positionals;
      if (positionals.length !== 3 || file === undefined || user === undefined) fail(`passwd needs FILE and USER\n${USAGE}`, 64);
      process.exitCode = await loadAuth().runPasswd({ file, user, delete: options.delete === true });
      return;
    }
    fail(`unknown command: ${positionals.join(' ')}\n${USAGE}`, 64);
  }
  if (options.json === true) fail(`--json is only used with "serial list"\n${USAGE}`, 64);
  if (options.delete === true) fail(`--delete is only used with "passwd"\n${USAGE}`, 64);

  let config: Config;
  try {
    config = await loadConfigIsolated(configPath);
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message, EXIT_CONFIG);
    throw err;
  }

  const logger = createConsoleLogger(config.log.level);
  // Under systemd (Type=notify): READY=1 once everything below has started, never before.
  const notifier = connectServiceNotifier(process.env, logger);
  let gateway: Gateway;
  try {
    gateway = await Gateway.start({ config, version, logger });
  } catch (err) {
    notifier.status(`start failed: ${errorMessage(err)}`);
    // A password or ACL file that cannot be used, or an unreadable or invalid certificate file, is a
    // configuration problem: restarting cannot fix it (no restart loop under systemd).
    if (err instanceof loadAuth().AuthFileError) fail(err.message, EXIT_CONFIG);
    if (err instanceof EdgewayError) fail(err.message, err.code === 'EDGEWAY_ERR_TLS_FILES' ? EXIT_CONFIG : EXIT_LISTEN);
    throw err;
  }
  logger.info('edgeway started', { version, config: configPath ?? 'built-in defaults', serialPorts: config.serial.length });
  stopOnSignals(gateway, logger, notifier);
  reloadOnHangup(gateway, logger, configPath, loadConfigIsolated, notifier);
  // Last: storage is loaded, every listener (MQTT, metrics) accepts, serial ports had their first
  // open attempt, and the Redis adapter connects in the background (never waited for).
  notifier.ready(() => gateway.statusLine());
}

function parseCli(argv: string[]) {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
      json: { type: 'boolean' },
      delete: { type: 'boolean' },
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
