/**
 * Commands from the central Redis pass the same ACL as clients (issue 8 part 3): the downlink
 * publishes as the internal user `redis` with client id `redis:downlink`. An entry for a topic that
 * user may not write is dropped and counted; an allowed one is delivered — and the downlink goes on
 * with the entries after a denied one. A real redis-server, the real gateway (in this process), a
 * real MQTT subscriber.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { connectAsync } from 'mqtt';
import { validateConfig } from '../../config/load';
import { Gateway } from '../../gateway/app';
import { waitFor } from '../helpers/broker';
import { within } from '../helpers/mqtt-client';
import { RedisServer } from '../helpers/redis';
import { recordingLogger, tempDir } from '../helpers/sqlite';

t.test('a downlink entry to a topic the redis user may not write is dropped and counted; allowed ones are delivered in order', async (t) => {
  const redis = await RedisServer.start(t);
  const dir = tempDir(t, 'edgeway-auth-downlink-');
  const acl = join(dir, 'acl');
  // Anonymous clients (the subscriber) read everything; the Redis side may command the pumps only
  // (and publish the uplink's status: redis:status).
  writeFileSync(acl, 'topic read #\n\nuser redis\ntopic write cmd/pumps/#\ntopic write edgeway/+/uplink\n');
  const logger = recordingLogger();
  const config = validateConfig(
    {
      listeners: [{ protocol: 'mqtt', host: '127.0.0.1', port: 0 }],
      sys: { interval: 0 },
      storage: { path: join(dir, 'edgeway.db') },
      redis: { url: redis.url, gatewayId: 'acl-gw', reconnect: { initialDelay: 50, maxDelay: 500 } },
      auth: { aclFile: acl, allowAnonymous: true },
    },
    'test',
  );
  const gateway = await Gateway.start({ config, version: 'test', logger });
  t.teardown(() => gateway.stop());
  const { port } = gateway.broker.addresses()[0] as AddressInfo;
  const sub = await within(connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0 }, false), 'subscriber connect');
  t.teardown(() => sub.endAsync(true));
  const got: string[] = [];
  sub.on('message', (topic, payload) => got.push(`${topic}=${payload.toString()}`));
  await sub.subscribeAsync('cmd/#', { qos: 1 });

  const denied = gateway.broker.metrics.denied;
  const before = denied.publish;
  const r = redis.client();
  const stream = 'edgeway:downlink:acl-gw';
  await r.xadd(stream, '*', 'topic', 'cmd/pumps/1', 'payload', 'on');
  await r.xadd(stream, '*', 'topic', 'cmd/valves/7', 'payload', 'open');
  await r.xadd(stream, '*', 'topic', 'cmd/pumps/2', 'payload', 'off');
  await waitFor(() => got.length >= 2, 10_000, 'the two allowed commands at the subscriber');
  await waitFor(() => denied.publish > before, 3000, 'the denied command to be counted');
  t.same(got, ['cmd/pumps/1=on', 'cmd/pumps/2=off'], 'the allowed commands are delivered in order; the denied one is not');
  t.equal(denied.publish - before, 1, 'the denied command is counted');
  const downlink = gateway.redis?.stats().downlink;
  t.equal(downlink?.denied, 1, 'the downlink counts it as denied');
  t.equal(downlink?.delivered, 2, 'and only the two allowed commands as delivered');
  t.ok(
    logger.lines.some((l) => l.msg === 'publication not authorised; message dropped' && l.fields?.clientId === 'redis:downlink' && l.fields.topic === 'cmd/valves/7'),
    'logged with the internal client id and the topic',
  );
});
