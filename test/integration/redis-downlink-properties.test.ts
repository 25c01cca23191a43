/**
 * Downlink entries carry MQTT 5 properties (adapters/redis/downlink.ts, field `properties`): the
 * real gateway (the CLI, in child processes) on a real `redis-server`, mqtt.js clients, and an
 * ioredis client of the test's own that XADDs the entries.
 *
 * - response topic, binary correlation data, user properties, content type, payload format
 *   indicator and message expiry reach an MQTT 5 subscriber; a 3.1.1 subscriber gets the message;
 * - entries with invalid properties are skipped, logged and counted, and do not block the next one;
 * - the Message Expiry Interval counts from when the entry was added, on Redis' clock: a command
 *   that expired while the gateway was down is not delivered when it comes back (even with the
 *   gateway's own clock an hour behind), one with time left arrives with what is left.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import type { MqttClient } from 'mqtt';
import type { IPublishPacket } from 'mqtt-packet';
import { waitFor } from '../helpers/broker';
import { within } from '../helpers/mqtt-client';
import { freePort, waitForOutput, type Running } from '../helpers/processes';
import { RedisServer } from '../helpers/redis';
import { clockSkewEnv, downlinkPositioned, gatewayClient, persistentClient, redisLines, startRedisGateway, stopGateway, sysValues, type GatewaySpec } from '../helpers/redis-gateways';

const dir = mkdtempSync(join(tmpdir(), 'edgeway-redis-dlprops-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const CORRELATION = Buffer.from([0x00, 0xff, 0x80, 0x01, 0xfe, 0x00]); // not UTF-8, with zero bytes

/** The gateway, once its downlink has a position (downlinkPositioned). */
async function startGateway(t: Test, spec: GatewaySpec): Promise<Running> {
  const gw = await startRedisGateway(t, dir, spec);
  await downlinkPositioned(gw, spec.name);
  return gw;
}

/** An mqtt.js client (MQTT 5 unless `protocolVersion` says otherwise) and the packets it receives. */
async function subscriber(t: Test, port: number, clientId: string, protocolVersion: 4 | 5 = 5): Promise<{ c: MqttClient; got: IPublishPacket[] }> {
  const c = await gatewayClient(t, port, { clientId, protocolVersion });
  const got: IPublishPacket[] = [];
  c.on('message', (_topic, _payload, packet) => got.push(packet));
  return { c, got };
}

const texts = (got: readonly IPublishPacket[]): string[] => got.map((p) => p.payload.toString());

t.test('properties of a downlink entry reach an MQTT 5 subscriber; a 3.1.1 subscriber gets the message', async (t) => {
  const redis = await RedisServer.start(t);
  const r = redis.client();
  const port = await freePort();
  const gw = await startGateway(t, { name: 'dp-props', port, redis: redisLines(redis.url, 'dp-props') });
  const v5 = await subscriber(t, port, 'dp-v5');
  await v5.c.subscribeAsync('cmd/#', { qos: 1 });
  const v4 = await subscriber(t, port, 'dp-v4', 4);
  await v4.c.subscribeAsync('cmd/#', { qos: 1 });

  const properties = {
    payloadFormatIndicator: true,
    messageExpiryInterval: 60,
    contentType: 'application/json',
    responseTopic: 'resp/central',
    correlationData: CORRELATION.toString('base64'),
    userProperties: { a: ['1', '3'], b: '2' },
  };
  await r.xadd('edgeway:downlink:dp-props', '*', 'topic', 'cmd/valve', 'payload', '{"open":true}', 'qos', '1', 'properties', JSON.stringify(properties));
  await waitFor(() => v5.got.length === 1 && v4.got.length === 1, 5000, 'the command at both subscribers');

  const got = v5.got[0] as IPublishPacket;
  t.equal(got.payload.toString(), '{"open":true}', 'MQTT 5: the payload');
  const { messageExpiryInterval, ...rest } = got.properties ?? {};
  t.same(rest, { payloadFormatIndicator: true, contentType: 'application/json', responseTopic: 'resp/central', correlationData: CORRELATION, userProperties: { a: ['1', '3'], b: '2' } }, 'MQTT 5: the properties of the entry');
  t.ok(Buffer.isBuffer(rest.correlationData) && CORRELATION.equals(rest.correlationData), 'correlation data: the same bytes');
  t.same(rest.userProperties?.['a'], ['1', '3'], 'a repeated user property keeps its values in order');
  // Never more than published (the estimate of Redis' clock is off by half a round trip), and the
  // entry was read within seconds of being added.
  t.ok(typeof messageExpiryInterval === 'number' && messageExpiryInterval <= 60 && messageExpiryInterval > 50, `message expiry: what is left of 60 s (${String(messageExpiryInterval)})`);

  const old = v4.got[0] as IPublishPacket;
  t.same([old.topic, old.payload.toString(), old.qos, old.properties], ['cmd/valve', '{"open":true}', 1, undefined], 'MQTT 3.1.1: the message, without properties');
  await stopGateway(t, gw, 'dp-props');
});

t.test('entries with invalid properties are skipped, logged and counted; the entry behind them is delivered', async (t) => {
  const redis = await RedisServer.start(t);
  const r = redis.client();
  const port = await freePort();
  const gw = await startGateway(t, { name: 'dp-invalid', port, sysInterval: 1, redis: redisLines(redis.url, 'dp-invalid') });
  const sub = await subscriber(t, port, 'dp-invalid-sub');
  const sys = await sysValues(sub.c, '$SYS/broker/downlink/#');
  await sub.c.subscribeAsync('cmd/#', { qos: 1 });

  const stream = 'edgeway:downlink:dp-invalid';
  const badJson = await r.xadd(stream, '*', 'topic', 'cmd/a', 'payload', 'bad json', 'properties', '{"contentType":');
  await r.xadd(stream, '*', 'topic', 'cmd/b', 'payload', 'bad base64', 'properties', '{"correlationData":"not base64!"}');
  await r.xadd(stream, '*', 'topic', 'cmd/c', 'payload', 'wrong type', 'properties', '{"userProperties":{"k":5}}');
  await r.xadd(stream, '*', 'topic', 'cmd/ok', 'payload', 'valid', 'qos', '1', 'properties', '{"contentType":"text/plain"}');
  await waitFor(() => texts(sub.got).includes('valid'), 5000, 'the valid entry behind the invalid ones');
  await waitFor(() => sys.get('$SYS/broker/downlink/invalid') === '3' && sys.get('$SYS/broker/downlink/delivered') === '1', 5000, '$SYS downlink counters');

  const commands = sub.got.filter((p) => p.topic.startsWith('cmd/'));
  t.same(commands.map((p) => [p.topic, p.payload.toString(), p.properties]), [['cmd/ok', 'valid', { contentType: 'text/plain' }]], 'only the valid entry is published, with its property');
  t.equal(sys.get('$SYS/broker/downlink/invalid'), '3', 'the three invalid entries counted');
  t.equal(sys.get('$SYS/broker/downlink/expired'), '0', 'none counted as expired');
  const line = (gw.stdout + gw.stderr).split('\n').find((l) => l.includes('redis downlink: entry skipped')) ?? '';
  t.match(line, new RegExp(`id=${badJson}\\b`), 'the first one logged with its id');
  t.match(line, /reason="invalid properties \(not JSON\)"/, '…and why');
  await stopGateway(t, gw, 'dp-invalid');
});

t.test('message expiry counts from when the entry was added: one that expired while the gateway was down is not delivered', async (t) => {
  const redis = await RedisServer.start(t);
  const r = redis.client();
  const port = await freePort();
  const name = 'dp-expiry';
  const stream = `edgeway:downlink:${name}`;
  const spec: GatewaySpec = { name, port, sysInterval: 1, redis: redisLines(redis.url, name) };
  // MQTT 5 keeps a session only with a Session Expiry Interval.
  const session = { protocolVersion: 5, properties: { sessionExpiryInterval: 3600 } } as const;
  const got: IPublishPacket[] = [];
  const listen = (c: MqttClient): void => {
    c.on('message', (_topic, _payload, packet) => got.push(packet));
  };

  // Run 1: the downlink takes its position; a persistent session subscribes.
  let gw = await startGateway(t, spec);
  let c = await persistentClient(t, port, 'dp-expiry-sub', listen, session);
  await c.subscribeAsync('cmd/#', { qos: 1 });
  await within(c.endAsync(), 'client end');
  await stopGateway(t, gw, `${name} (run 1)`);

  // Down: a command valid for 2 s, one valid for 60 s, one without expiry.
  const added = Date.now();
  const short = await r.xadd(stream, '*', 'topic', 'cmd/valve', 'payload', 'open for 2 s', 'qos', '1', 'properties', '{"messageExpiryInterval":2}');
  await r.xadd(stream, '*', 'topic', 'cmd/valve', 'payload', 'open for 60 s', 'qos', '1', 'properties', '{"messageExpiryInterval":60}');
  await r.xadd(stream, '*', 'topic', 'cmd/valve', 'payload', 'no expiry', 'qos', '1');
  // Past the 2 s (Redis' clock at XADD is in the ids) before the gateway is back.
  await new Promise((res) => setTimeout(res, Math.max(0, added + 2500 - Date.now())));

  // Run 2, with the gateway's own clock an hour behind: measured by it, the ids would lie in the
  // future and the 2 s command would count from now — and be executed.
  gw = await startRedisGateway(t, dir, { ...spec, env: clockSkewEnv(-3_600_000) });
  c = await persistentClient(t, port, 'dp-expiry-sub', listen, session);
  const sys = await sysValues(c, '$SYS/broker/downlink/#');
  const commands = (): IPublishPacket[] => got.filter((p) => p.topic.startsWith('cmd/'));
  await waitFor(() => texts(commands()).includes('no expiry'), 5000, 'the entry behind the expired ones');
  await waitFor(() => sys.get('$SYS/broker/downlink/expired') === '1', 5000, '$SYS downlink/expired');
  t.same(texts(commands()), ['open for 60 s', 'no expiry'], 'the command that expired while the gateway was down is not delivered; the ones behind it are, in order');
  const left = commands()[0]?.properties?.messageExpiryInterval;
  t.ok(typeof left === 'number' && left <= 60 && left > 50, `the 60 s command arrives with what is left (${String(left)} s)`);
  t.equal(commands()[1]?.properties?.messageExpiryInterval, undefined, 'the one without expiry has none');
  t.equal(sys.get('$SYS/broker/downlink/expired'), '1', 'counted as expired');
  t.equal(sys.get('$SYS/broker/downlink/delivered'), '2', 'the two others delivered');
  t.equal(sys.get('$SYS/broker/downlink/invalid'), '0', 'nothing invalid');
  await waitForOutput(() => gw.stdout + gw.stderr, /redis downlink: entry expired before it was read; not delivered/, 3000, 'the log line of the expired entry');
  const line = (gw.stdout + gw.stderr).split('\n').find((l) => l.includes('entry expired before it was read')) ?? '';
  t.match(line, new RegExp(`id=${short}\\b`), 'names the entry id');
  t.equal(await r.xlen(stream), 3, 'the expired entry stays in the stream, read past (consumed)');
  await within(c.endAsync(), 'client end');
  await stopGateway(t, gw, `${name} (run 2)`);
});
