/**
 * The real gateway (gateway/app.ts, as the CLI composes it) with settings the config file does not
 * offer yet: the outbox's topic filters, which the uplink (issue 5) will choose. For the durability
 * tests (which kill it with SIGKILL or stop it with SIGTERM) and the durable-acknowledgement
 * benchmark.
 *
 *   node gateway-child.js <config.yaml> [uplink topic filter,…]
 *
 * Prints "edgeway started" once the listeners are open, like the CLI.
 */
import { loadConfigFile } from '../config/load';
import { Gateway, stopOnSignals } from '../gateway/app';
import { createConsoleLogger } from '../gateway/console-logger';

const [configPath, topics] = process.argv.slice(2);
if (configPath === undefined) throw new Error('usage: gateway-child <config.yaml> [filter,…]');
const config = loadConfigFile(configPath);
const logger = createConsoleLogger(config.log.level);
const uplinkTopics = topics === undefined || topics === '' ? [] : topics.split(',');

Gateway.start({ config, version: 'test', logger, uplinkTopics }).then(
  (gateway) => {
    process.stdout.write('edgeway started\n'); // whatever the log level: the test waits for it
    stopOnSignals(gateway, logger);
  },
  (err: unknown) => {
    process.stderr.write(`gateway-child: ${String(err)}\n`);
    process.exit(1);
  },
);
