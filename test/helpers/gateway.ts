/**
 * The real gateway as a child process, and what it left in its database: shared by the tests that
 * restart, kill or starve it.
 */
import { join } from 'node:path';
import { SqliteOutbox, SqliteStorage } from '../../adapters/sqlite';
import type { OutboxEntry } from '../../gateway/broker';
import { startProcess, waitForOutput, type Running, type Teardowns } from './processes';

/** The CLI, compiled (tests run from dist/test/…). */
export const GATEWAY_MAIN = join(__dirname, '..', '..', 'gateway', 'main.js');
/** The same gateway with explicit outbox topics and no Redis (scripts/gateway-child.ts). */
export const GATEWAY_CHILD = join(__dirname, '..', '..', 'scripts', 'gateway-child.js');

export interface GatewayProcessOptions {
  /** Outbox topic filters (comma-separated): runs scripts/gateway-child.js instead of the CLI. */
  readonly uplinkTopics?: string;
  /** Working directory (where a gateway without storage.path would create ./data). */
  readonly cwd: string;
  /** For the timeout message. */
  readonly what?: string;
  /** SIGKILLed after this long (ms); default one minute (the chaos and soak scripts run longer). */
  readonly lifetimeMs?: number;
  /** Added to the gateway's environment. */
  readonly env?: Record<string, string>;
}

/** Starts the gateway on `config`; resolves once it printed "edgeway started". SIGKILLed when `t` ends. */
export async function startGatewayProcess(t: Teardowns, config: string, options: GatewayProcessOptions): Promise<Running> {
  const args = options.uplinkTopics === undefined ? [GATEWAY_MAIN, '--config', config] : [GATEWAY_CHILD, config, options.uplinkTopics];
  const gw = startProcess(t, process.execPath, args, options.lifetimeMs ?? 60_000, { cwd: options.cwd, ...(options.env === undefined ? {} : { env: options.env }) });
  await waitForOutput(() => gw.stdout + gw.stderr, /edgeway started/, 10_000, options.what ?? 'the gateway to start');
  return gw;
}

/**
 * Every entry in the outbox of the database at `path`, in seq order. Read beside a running
 * gateway too: in WAL mode a reader sees every committed entry.
 */
export async function readOutbox(path: string): Promise<OutboxEntry[]> {
  const outbox = new SqliteOutbox(new SqliteStorage({ path, sync: 'normal', flushInterval: 0 }), {
    maxMessages: 10_000_000,
    maxBytes: 1024 ** 3,
    whenFull: 'drop-oldest',
  });
  await outbox.open();
  const all: OutboxEntry[] = [];
  for (let batch = outbox.read(0, 1000); batch.length > 0; batch = outbox.read((batch[batch.length - 1] as OutboxEntry).seq, 1000)) all.push(...batch);
  await outbox.close();
  return all;
}
