/**
 * Worker thread of load-isolated.ts: reads and validates one configuration and posts the result (or
 * the problems) back, then ends, taking the validator's memory with it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ConfigError } from './errors';
import { defaultConfig, loadConfigFile } from './load';
import type { LoadReply, LoadRequest } from './load-isolated';

if (parentPort === null) throw new Error('load-worker.js runs as a worker thread only');
const { path } = workerData as LoadRequest;
let reply: LoadReply;
try {
  reply = { config: path === undefined ? defaultConfig() : loadConfigFile(path) };
} catch (err) {
  reply = err instanceof ConfigError ? { source: err.source, problems: err.problems } : { error: err instanceof Error ? (err.stack ?? err.message) : String(err) };
}
parentPort.postMessage(reply);
