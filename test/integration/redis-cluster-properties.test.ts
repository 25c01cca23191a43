/**
 * Cluster mode carries MQTT 5 properties (adapters/redis/cluster.ts): real gateways (the CLI, in
 * child processes) on one real `redis-server`, mqtt.js clients, and an ioredis client of the
 * test's own that watches the cluster channel and sends frames of its own there.
 *
 * - user properties (a repeated name, order kept), content type, response topic, binary
 *   correlation data, payload format indicator and message expiry reach an MQTT 5 subscriber on
 *   the other gateway as a local one gets them; a 3.1.1 subscriber gets the message without;
 *   topic aliases and subscription identifiers never travel; retained messages keep them, in the
 *   other gateway's store and in the cluster hash;
 * - the Message Expiry Interval counts the time on the way: an expired message is not delivered,
 *   an expired retained one still replaces the topic's retained message; clocks of the gateways
 *   that disagree by an hour change nothing;
 * - frames with invalid properties are dropped, logged and counted; the gateway carries on.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import type { IClientOptions, MqttClient } from 'mqtt';
import type { IPublishPacket } from 'mqtt-packet';
import { waitFor } from '../helpers/broker';
import { freePort, waitForOutput, type Running } from '../helpers/processes';
import { RedisServer } from '../helpers/redis';
import { clockSkewEnv, gatewayClient, redisLines, retainedOnSubscribe, startRedisGateway, stopGateway, sysValues, waitForSubscribers } from '../helpers/redis-gateways';

const dir = mkdtempSync(join(tmpdir(), 'edgeway-redis-props-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const CHANNEL = 'edgeway:cluster';

interface Gateway {
  readonly id: string;
  readonly port: number;
  readonly process: Running;
}

/** Gateways with cluster mode on (no downlink), connected and subscribed to the channel. */
async function startCluster(t: Test, redis: RedisServer, ids: readonly string[], extra: { sysInterval?: number; env?: Record<string, Record<string, string>> } = {}): Promise<Gateway[]> {
  const gateways: Gateway[] = [];
  for (const id of ids) {
    const port = await freePort();
    const env = extra.env?.[id];
    const process = await startRedisGateway(t, dir, {
      name: id,
      port,
      sysInterval: extra.sysInterval ?? 0,
      redis: redisLines(redis.url, id, ['downlink:', '  enabled: false', 'cluster:', '  enabled: true']),
      ...(env === undefined ? {} : { env }),
    });
    await waitForOutput(() => process.stdout + process.stderr, /redis: connected/, 10_000, `${id} connected to Redis`);
    gateways.push({ id, port, process });
  }
  return gateways;
}

/** Pub/sub is at most once: the test publishes only when `count` connections listen. */
async function allListening(t: Test, redis: RedisServer, count: number): Promise<void> {
  t.equal(await waitForSubscribers(redis.client(), CHANNEL, count), count, `${count} connections subscribed to the cluster channel`);
}

/** An mqtt.js client of a gateway (MQTT 5 unless `opts` says otherwise) and the packets it receives. */
async function client(t: Test, gw: Gateway, clientId: string, opts: IClientOptions = {}): Promise<{ c: MqttClient; got: IPublishPacket[] }> {
  const c = await gatewayClient(t, gw.port, { clientId, protocolVersion: 5, ...opts });
  const got: IPublishPacket[] = [];
  c.on('message', (_topic, _payload, packet) => got.push(packet));
  return { c, got };
}

const texts = (got: readonly IPublishPacket[]): string[] => got.map((p) => p.payload.toString());

/** Frames the gateways send on the channel, as the test's own subscriber sees them. */
async function watchChannel(redis: RedisServer): Promise<Record<string, unknown>[]> {
  const spy = redis.client();
  const frames: Record<string, unknown>[] = [];
  spy.on('messageBuffer', (_ch: Buffer, data: Buffer) => frames.push(JSON.parse(data.toString()) as Record<string, unknown>));
  await spy.subscribe(CHANNEL);
  return frames;
}

/** Publishes `text` on `topic` from `from` and waits until `to` got it: what was sent before has arrived. */
async function marker(from: MqttClient, to: IPublishPacket[], topic: string, text: string): Promise<void> {
  await from.publishAsync(topic, text, { qos: 1 });
  await waitFor(() => texts(to).includes(text), 5000, `the marker ${text}`);
}

const CORRELATION = Buffer.from([0x00, 0xff, 0x80, 0x01, 0xfe, 0x00]); // not UTF-8, with zero bytes

t.test('MQTT 5 properties cross gateways as a local subscriber gets them; 3.1.1 gets the message without; aliases and subscription ids stay', async (t) => {
  const redis = await RedisServer.start(t);
  const frames = await watchChannel(redis);
  const [a, b] = (await startCluster(t, redis, ['pr-a', 'pr-b'])) as [Gateway, Gateway];
  await allListening(t, redis, 3);

  const local = await client(t, a, 'local-on-a');
  await local.c.subscribeAsync('req/#', { qos: 1, properties: { subscriptionIdentifier: 3 } });
  const remote = await client(t, b, 'v5-on-b');
  await remote.c.subscribeAsync('req/#', { qos: 1, properties: { subscriptionIdentifier: 7 } });
  const old = await client(t, b, 'v4-on-b', { protocolVersion: 4 });
  await old.c.subscribeAsync('req/#', { qos: 1 });

  const publisher = await client(t, a, 'requester');
  const properties = {
    payloadFormatIndicator: true,
    messageExpiryInterval: 120,
    contentType: 'application/json',
    responseTopic: 'resp/requester',
    correlationData: CORRELATION,
    // mqtt.js sends `a` twice, then `b`: a=1, a=3, b=2.
    userProperties: { a: ['1', '3'], b: '2' },
    topicAlias: 1,
  };
  await publisher.c.publishAsync('req/lamp', '{"on":true}', { qos: 1, properties });
  await waitFor(() => local.got.length === 1 && remote.got.length === 1 && old.got.length === 1, 5000, 'the request at the three subscribers');

  const here = local.got[0] as IPublishPacket;
  const there = remote.got[0] as IPublishPacket;
  t.equal(there.payload.toString(), '{"on":true}', 'the payload on B');
  const { messageExpiryInterval: hereExpiry, subscriptionIdentifier: hereIds, ...hereRest } = here.properties ?? {};
  const { messageExpiryInterval: thereExpiry, subscriptionIdentifier: thereIds, ...thereRest } = there.properties ?? {};
  t.same(thereRest, hereRest, 'the subscriber on B gets the properties the local subscriber on A gets');
  t.same(thereRest, { payloadFormatIndicator: true, contentType: 'application/json', responseTopic: 'resp/requester', correlationData: CORRELATION, userProperties: { a: ['1', '3'], b: '2' } }, '…which are the published ones');
  t.ok(Buffer.isBuffer(thereRest.correlationData) && CORRELATION.equals(thereRest.correlationData), 'correlation data: the same bytes');
  t.same(Object.keys(thereRest.userProperties ?? {}), ['a', 'b'], 'user properties: names in their order');
  t.same(thereRest.userProperties?.['a'], ['1', '3'], 'a repeated name keeps its values in order');
  t.ok(typeof thereExpiry === 'number' && thereExpiry >= 1 && thereExpiry <= 120, `message expiry on B: what is left of 120 s (${String(thereExpiry)})`);
  t.ok(typeof hereExpiry === 'number' && hereExpiry >= 1 && hereExpiry <= 120, `…as on A (${String(hereExpiry)})`);
  t.same([hereIds, thereIds], [3, 7], "each subscriber gets its own subscription identifier, not the other gateway's");
  t.equal(there.properties?.topicAlias, undefined, 'no topic alias on B');

  const v4 = old.got[0] as IPublishPacket;
  t.same([v4.topic, v4.payload.toString(), v4.properties], ['req/lamp', '{"on":true}', undefined], 'an MQTT 3.1.1 subscriber on B gets the message, without properties');

  const sent = frames.filter((f) => f['t'] === 'req/lamp');
  t.equal(sent.length, 1, 'one frame on the channel');
  t.same(Object.keys((sent[0]?.['m'] ?? {}) as object).sort(), ['contentType', 'correlationData', 'messageExpiryInterval', 'payloadFormatIndicator', 'responseTopic', 'userProperties'], 'its properties: without topic alias or subscription identifier');
  t.equal(typeof sent[0]?.['e'], 'number', 'and the expiry as a time');

  // Retained: B keeps the properties in its store, the cluster hash keeps them for a gateway that starts later.
  const retainedProperties = { contentType: 'text/plain', correlationData: CORRELATION, userProperties: { unit: 'lux', tag: ['x', 'y'] }, messageExpiryInterval: 600 };
  await publisher.c.publishAsync('req/state', 'bright', { qos: 1, retain: true, properties: retainedProperties });
  await waitFor(() => texts(remote.got).includes('bright'), 5000, 'the retained message live on B');
  const later = await client(t, b, 'later-on-b');
  await later.c.subscribeAsync('req/state', { qos: 1 });
  await waitFor(() => later.got.length === 1, 3000, 'the retained message at a new subscriber on B');
  const { messageExpiryInterval: storedExpiry, ...stored } = later.got[0]?.properties ?? {};
  t.same([later.got[0]?.retain, later.got[0]?.payload.toString(), stored], [true, 'bright', { contentType: 'text/plain', correlationData: CORRELATION, userProperties: { unit: 'lux', tag: ['x', 'y'] } }], "B's retained copy keeps its properties");
  t.ok(typeof storedExpiry === 'number' && storedExpiry >= 1 && storedExpiry <= 600, `…and what is left of its expiry (${String(storedExpiry)})`);

  const [c] = (await startCluster(t, redis, ['pr-c'])) as [Gateway];
  await allListening(t, redis, 4);
  const fromHash = await retainedOnSubscribe(t, c.port, 'req/state', Date.now() + 5000, { protocolVersion: 5 });
  const { messageExpiryInterval: hashExpiry, ...hashed } = fromHash[0]?.properties ?? {};
  t.same([fromHash.length, fromHash[0]?.retain, fromHash[0]?.payload.toString(), hashed], [1, true, 'bright', { contentType: 'text/plain', correlationData: CORRELATION, userProperties: { unit: 'lux', tag: ['x', 'y'] } }], 'a gateway started later has it from the hash with its properties');
  t.ok(typeof hashExpiry === 'number' && hashExpiry >= 1 && hashExpiry <= 600, `…and what is left of its expiry (${String(hashExpiry)})`);

  for (const gw of [a, b, c]) await stopGateway(t, gw.process, gw.id);
});

t.test('message expiry counts the time on the way: an expired message is not delivered, an expired retained one clears the topic', async (t) => {
  const redis = await RedisServer.start(t);
  const [a, b] = (await startCluster(t, redis, ['ex-a', 'ex-b'], { sysInterval: 1 })) as [Gateway, Gateway];
  await allListening(t, redis, 2);
  const publisher = await client(t, a, 'ex-publisher');
  const sub = await client(t, b, 'ex-sub');
  await sub.c.subscribeAsync(['exp/#', 'mark/b'], { qos: 1 });
  await publisher.c.publishAsync('exp/state', 'old', { qos: 1, retain: true });
  await waitFor(() => texts(sub.got).includes('old'), 5000, 'the first retained value on B');

  // B stands still (SIGSTOP) while A publishes; Redis holds the frames for it. Every PUBACK came
  // before the pause ends, so more than `paused` ms of each interval are gone when B reads them.
  const paused = 2100;
  b.process.child.kill('SIGSTOP');
  try {
    await publisher.c.publishAsync('exp/gone', 'gone', { qos: 1, properties: { messageExpiryInterval: 1 } });
    await publisher.c.publishAsync('exp/state', 'short-lived', { qos: 1, retain: true, properties: { messageExpiryInterval: 1 } });
    await publisher.c.publishAsync('exp/kept', 'kept', { qos: 1, properties: { messageExpiryInterval: 60 } });
    await new Promise((res) => setTimeout(res, paused));
  } finally {
    b.process.child.kill('SIGCONT');
  }
  await marker(publisher.c, sub.got, 'mark/b', 'after the pause');
  t.same(texts(sub.got), ['old', 'kept', 'after the pause'], 'B delivered the message that had time left, not the two that expired on the way');
  const kept = sub.got.find((p) => p.payload.toString() === 'kept');
  const left = kept?.properties?.messageExpiryInterval;
  t.ok(typeof left === 'number' && left >= 1 && left <= 60 - Math.floor(paused / 1000), `its Message Expiry Interval counts the pause: ${String(left)} of 60 s left`);

  const fresh = await client(t, b, 'ex-fresh');
  await fresh.c.subscribeAsync(['exp/state', 'mark/fresh'], { qos: 1 });
  await marker(publisher.c, fresh.got, 'mark/fresh', 'fresh marker');
  t.same(texts(fresh.got), ['fresh marker'], 'the expired retained message replaced "old" on B: a new subscriber gets no retained message');

  const sys = await sysValues((await client(t, b, 'ex-sys')).c, '$SYS/broker/cluster/#');
  await waitFor(() => sys.get('$SYS/broker/cluster/expired') === '2', 5000, '$SYS cluster/expired to count the two');
  t.equal(sys.get('$SYS/broker/cluster/invalid'), '0', 'nothing counted as invalid');
  for (const gw of [a, b]) await stopGateway(t, gw.process, gw.id);
});

t.test("gateways whose clocks disagree by an hour keep each other's expiry intervals (the Redis server's clock is the common one)", async (t) => {
  const redis = await RedisServer.start(t);
  const hour = 3_600_000;
  const [ahead, right] = (await startCluster(t, redis, ['sk-ahead', 'sk-right'], { env: { 'sk-ahead': clockSkewEnv(hour) } })) as [Gateway, Gateway];
  await allListening(t, redis, 2);
  const onAhead = await client(t, ahead, 'sk-on-ahead');
  const onRight = await client(t, right, 'sk-on-right');
  await onAhead.c.subscribeAsync('skew/to-ahead', { qos: 1 });
  await onRight.c.subscribeAsync('skew/to-right', { qos: 1 });

  // Taken as sent, an expiry time of the gateway an hour ahead is an hour too late on the other,
  // and one of the other has passed an hour ago on the gateway ahead.
  await onAhead.c.publishAsync('skew/to-right', 'from the one ahead', { qos: 1, properties: { messageExpiryInterval: 60 } });
  await onRight.c.publishAsync('skew/to-ahead', 'to the one ahead', { qos: 1, properties: { messageExpiryInterval: 60 } });
  await waitFor(() => onRight.got.length === 1 && onAhead.got.length === 1, 5000, 'each message on the other gateway');
  for (const [where, got] of [['on the gateway with the right time', onRight.got], ['on the gateway an hour ahead', onAhead.got]] as const) {
    const left = got[0]?.properties?.messageExpiryInterval;
    t.ok(typeof left === 'number' && left >= 1 && left <= 60, `${where}: ${String(left)} of 60 s left`);
  }
  await stopGateway(t, ahead.process, ahead.id);
  await stopGateway(t, right.process, right.id);
});

t.test('frames with invalid properties are dropped, logged and counted; valid ones around them are delivered', async (t) => {
  const redis = await RedisServer.start(t);
  const [b] = (await startCluster(t, redis, ['iv-b'], { sysInterval: 1 })) as [Gateway];
  await allListening(t, redis, 1);
  const sub = await client(t, b, 'iv-sub');
  await sub.c.subscribeAsync('in/#', { qos: 1, properties: { subscriptionIdentifier: 5 } });

  const frame = (text: string | Buffer, extra: Record<string, unknown>): string =>
    JSON.stringify({ o: 'elsewhere', t: 'in/x', q: 1, r: false, p: Buffer.from(text).toString('base64'), ...extra });
  const invalid: [string, string][] = [
    ['properties not an object', frame('bad', { m: 'contentType=text' })],
    ['correlation data not base64', frame('bad', { m: { correlationData: '***' } })],
    ['a response topic with a wildcard', frame('bad', { m: { responseTopic: 'resp/+' } })],
    ['a UTF-8 payload format over bytes that are not', frame(Buffer.from([0xff, 0xfe]), { m: { payloadFormatIndicator: true } })],
    ['a user property that is a number', frame('bad', { m: { userProperties: { k: 5 } } })],
    ['a content type with U+0000', frame('bad', { m: { contentType: 'text\u0000plain' } })],
    ['a negative expiry interval', frame('bad', { m: { messageExpiryInterval: -1 } })],
    ['an expiry time that is text', frame('bad', { m: { messageExpiryInterval: 5 }, e: 'soon' })],
  ];
  const r = redis.client();
  for (const [, data] of invalid) await r.publish(CHANNEL, data);
  // Names a receiver does not know are left out; what belongs to a connection is never taken.
  await r.publish(CHANNEL, frame('valid', { m: { contentType: 'text/plain', topicAlias: 4, subscriptionIdentifier: 9, fromTheFuture: 1 } }));
  await waitFor(() => sub.got.length >= 1, 5000, 'the valid frame at the subscriber');

  const sys = await sysValues((await client(t, b, 'iv-sys')).c, '$SYS/broker/cluster/#');
  await waitFor(() => sys.get('$SYS/broker/cluster/invalid') === String(invalid.length), 5000, `$SYS cluster/invalid to count ${invalid.length}`);
  t.same(texts(sub.got), ['valid'], `none of the ${invalid.length} invalid frames was delivered (${invalid.map(([what]) => what).join('; ')})`);
  t.same(sub.got[0]?.properties, { contentType: 'text/plain', subscriptionIdentifier: 5 }, 'the valid one with its content type and the subscriber\'s own subscription identifier only');
  const output = b.process.stdout + b.process.stderr;
  t.match(output, /redis cluster: message with invalid MQTT 5 properties; dropped/, 'logged');
  t.match(output, /correlationData|properties: not an object/, 'with the reason');
  t.equal(b.process.child.exitCode, null, 'the gateway still runs');
  await stopGateway(t, b.process, b.id);
});
