import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { ConfigError, deepFreeze } from './errors';
import type { Config } from './schema';

/** What the worker is started with: the file, or none for the built-in defaults. */
export interface LoadRequest {
  readonly path: string | undefined;
}

export type LoadReply = { readonly config: Config } | { readonly source: string; readonly problems: readonly string[] } | { readonly error: string };

/**
 * loadConfigFile() (or defaultConfig() without a path) in a worker thread, for the long-running
 * gateway (issue 6): the validator — zod, yaml and the built schema, 4.2 MB of V8 heap in use once
 * loaded (scripts/bench/footprint.ts) — lives in the worker's heap and goes when the worker ends,
 * instead of staying in the gateway's for its whole run to be needed again only on SIGHUP. Idle
 * RSS with storage, a serial port and a Redis uplink: 63.7 -> 60.6 MB with the installed wrapper's
 * MALLOC_ARENA_MAX=2, 64.1 -> 62.5 MB without it (the ended thread's malloc arena stays).
 * Rejects with the same ConfigError as loadConfigFile(); the result is deeply frozen like its.
 */
export function loadConfigIsolated(path: string | undefined): Promise<Config> {
  return new Promise((resolve, reject) => {
    const request: LoadRequest = { path };
    const worker = new Worker(join(__dirname, 'load-worker.js'), { workerData: request });
    let reply: LoadReply | undefined;
    worker.once('message', (message: LoadReply) => {
      reply = message;
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (reply === undefined) reject(new Error(`the configuration loader exited (code ${code}) without an answer`));
      else if ('config' in reply) resolve(deepFreeze(reply.config));
      else if ('problems' in reply) reject(new ConfigError(reply.source, reply.problems));
      else reject(new Error(`the configuration loader failed: ${reply.error}`));
    });
  });
}
