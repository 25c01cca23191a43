import type { Test } from 'tap';
import { connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import type { TestBroker } from './broker';

/** Bounds an mqtt.js promise: a misbehaving broker must fail the test, not hang it. */
export function within<T>(promise: Promise<T>, what: string, ms = 3000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** An mqtt.js client without reconnects, ended (bounded) when the test ends. */
export async function mqttClient(t: Test, tb: TestBroker, opts: IClientOptions = {}): Promise<MqttClient> {
  const c = await connectAsync(tb.url, { reconnectPeriod: 0, connectTimeout: 3000, ...opts }, false);
  t.teardown(() => within(c.endAsync(true), 'mqtt.js end').catch(() => undefined));
  return c;
}
