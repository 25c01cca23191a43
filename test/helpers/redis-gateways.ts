/**
 * Real gateways (child processes of the CLI) configured for one real `redis-server`: the Redis
 * downlink and cluster tests start several and talk to each with mqtt.js.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import { connect, connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import type { IPublishPacket } from 'mqtt-packet';
import type Redis from 'ioredis';
import { startGatewayProcess } from './gateway';
import { within } from './mqtt-client';
import { waitForOutput, type Running } from './processes';

export interface GatewaySpec {
  /** Names the config file and the database. */
  readonly name: string;
  readonly port: number;
  /** Lines of the `redis` section (without indentation). */
  readonly redis: readonly string[];
  readonly sysInterval?: number;
  readonly level?: 'debug' | 'info' | 'warn';
  /** With it, `/metrics` and `/healthz` on 127.0.0.1 at this port. */
  readonly metricsPort?: number;
  /** Added to the gateway's environment. */
  readonly env?: Record<string, string>;
}

/** The environment of a gateway child whose wall clock is `skewMs` off (test/helpers/clock-skew.ts). */
export function clockSkewEnv(skewMs: number): Record<string, string> {
  return { NODE_OPTIONS: `--require ${JSON.stringify(join(__dirname, 'clock-skew.js'))}`, EDGEWAY_TEST_CLOCK_SKEW_MS: String(skewMs) };
}

/** The redis section most tests use: short timeouts and back-off, so outages are quick to see. */
export function redisLines(url: string, gatewayId: string, extra: readonly string[] = []): string[] {
  return [`url: ${JSON.stringify(url)}`, `gatewayId: ${gatewayId}`, 'connectTimeout: 2000', 'commandTimeout: 1000', 'reconnect:', '  initialDelay: 50', '  maxDelay: 500', ...extra];
}

/** Writes `<dir>/<name>.yaml` (database `<dir>/<name>.db`) and returns its path. */
export function writeGatewayConfig(dir: string, spec: GatewaySpec): string {
  const path = join(dir, `${spec.name}.yaml`);
  const lines = [
    'listeners:',
    '  - protocol: mqtt',
    '    host: 127.0.0.1',
    `    port: ${spec.port}`,
    'sys:',
    `  interval: ${spec.sysInterval ?? 0}`,
    'log:',
    `  level: ${spec.level ?? 'info'}`,
    'storage:',
    `  path: ${JSON.stringify(join(dir, `${spec.name}.db`))}`,
    '  flushInterval: 20',
    ...(spec.metricsPort === undefined ? [] : ['metrics:', '  host: 127.0.0.1', `  port: ${spec.metricsPort}`]),
    'redis:',
    ...spec.redis.map((l) => `  ${l}`),
  ];
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}

/** The real gateway CLI in `dir`; SIGKILLed by PID when the test ends if still running. */
export function startRedisGateway(t: Test, dir: string, spec: GatewaySpec): Promise<Running> {
  return startGatewayProcess(t, writeGatewayConfig(dir, spec), { cwd: dir, what: `gateway ${spec.name} to start`, ...(spec.env === undefined ? {} : { env: spec.env }) });
}

/**
 * Waits until the gateway's downlink has taken its first position: one without a position starts
 * after the stream's last entry, so an entry added before that is (rightly) never read.
 */
export async function downlinkPositioned(gw: Running, name: string): Promise<void> {
  await waitForOutput(() => gw.stdout + gw.stderr, /redis downlink: no position stored/, 10_000, `${name}: the downlink to take its position`);
}

/** SIGTERM (a graceful stop: pending state committed) and a clean exit. */
export async function stopGateway(t: Test, gw: Running, name: string): Promise<void> {
  gw.child.kill('SIGTERM');
  const exit = await within(gw.exited, `gateway ${name} to exit`, 10_000);
  t.same(exit, { code: 0, signal: null }, `gateway ${name} stopped cleanly`);
}

/** An mqtt.js client of a gateway child, without reconnects, ended (bounded) when the test ends. */
export async function gatewayClient(t: Test, port: number, opts: IClientOptions = {}): Promise<MqttClient> {
  const c = await connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 3000, ...opts }, false);
  c.on('error', () => undefined);
  t.teardown(() => within(c.endAsync(true), 'mqtt.js end').catch(() => undefined));
  return c;
}

/**
 * A client with a persistent session whose message handler (`listen`) is attached before CONNECT:
 * messages queued for the session while it was away arrive right after CONNACK and must not be
 * missed. (MQTT 5 also needs a Session Expiry Interval in `opts` to keep the session.)
 */
export async function persistentClient(t: Test, port: number, clientId: string, listen: (c: MqttClient) => void, opts: IClientOptions = {}): Promise<MqttClient> {
  const c = connect(`mqtt://127.0.0.1:${port}`, { clientId, clean: false, reconnectPeriod: 0, connectTimeout: 3000, ...opts });
  listen(c);
  t.teardown(() => within(c.endAsync(true), 'mqtt.js end').catch(() => undefined));
  await within(
    new Promise<void>((resolve, reject) => {
      c.once('connect', () => resolve());
      c.once('error', reject);
    }),
    `${clientId} to connect`,
  );
  c.on('error', () => undefined);
  return c;
}

/** Subscribers of a pub/sub channel, as Redis counts them. */
export async function channelSubscribers(r: Redis, channel: string): Promise<number> {
  const reply = (await r.call('PUBSUB', 'NUMSUB', channel)) as [string, number];
  return Number(reply[1]);
}

/** Waits (at most `timeoutMs`) until `channel` has `count` subscribers; resolves with how many it has. */
export async function waitForSubscribers(r: Redis, channel: string, count: number, timeoutMs = 10_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while ((await channelSubscribers(r, channel)) < count && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
  return channelSubscribers(r, channel);
}

/** The last value of each `$SYS` topic seen by `c` (subscribed to `filter`). */
export async function sysValues(c: MqttClient, filter: string): Promise<Map<string, string>> {
  const values = new Map<string, string>();
  c.on('message', (topic, payload) => {
    if (topic.startsWith('$SYS/')) values.set(topic, payload.toString());
  });
  await c.subscribeAsync(filter);
  return values;
}

/**
 * What a new subscriber to `topic` on the gateway at `port` gets, once it gets a message flagged
 * retained: a gateway loads the cluster's retained messages once connected, and a subscriber that
 * came before the load gets them live (not flagged), so clients subscribe one after the other
 * until `deadline`. Returns the last one's messages.
 */
export async function retainedOnSubscribe(t: Test, port: number, topic: string, deadline: number, opts: IClientOptions = {}): Promise<IPublishPacket[]> {
  let got: IPublishPacket[] = [];
  for (let attempt = 0; Date.now() < deadline; attempt++) {
    const c = await gatewayClient(t, port, { clientId: `retained-probe-${port}-${attempt}`, ...opts });
    const mine: IPublishPacket[] = [];
    got = mine;
    c.on('message', (_topic, _payload, packet) => mine.push(packet));
    await c.subscribeAsync(topic, { qos: 1 });
    const until = Date.now() + 300;
    while (mine.length === 0 && Date.now() < until) await new Promise((res) => setTimeout(res, 20));
    await within(c.endAsync(), 'client end');
    if (mine.some((m) => m.retain)) break;
  }
  return got;
}
