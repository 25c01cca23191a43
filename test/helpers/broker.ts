import type { AddressInfo } from 'node:net';
import { validateConfig } from '../../config/load';
import { Broker, silentLogger, type Logger } from '../../gateway/broker';

export interface TestBroker {
  readonly broker: Broker;
  readonly port: number;
  readonly url: string;
  stop(): Promise<void>;
}

/**
 * Starts a broker in this process on a free loopback port. `config` is a partial configuration
 * document (as in YAML), validated with the real schema so defaults match production.
 */
export async function startBroker(config: Record<string, unknown> = {}, logger: Logger = silentLogger): Promise<TestBroker> {
  const full = validateConfig(
    { listeners: [{ protocol: 'mqtt', host: '127.0.0.1', port: 0 }], sys: { interval: 0 }, ...config },
    'test',
  );
  const broker = new Broker({ limits: full.limits, sysInterval: full.sys.interval, version: 'test' }, logger);
  const [address] = (await broker.start(full.listeners)) as [AddressInfo];
  return {
    broker,
    port: address.port,
    url: `mqtt://127.0.0.1:${address.port}`,
    stop: () => broker.stop(2000),
  };
}

/** Polls `predicate` until it is true or `timeoutMs` passes; never sleeps blindly. */
export async function waitFor(predicate: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
