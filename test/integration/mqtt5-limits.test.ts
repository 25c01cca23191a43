import t from 'tap';
import { waitFor } from '../helpers/broker';
import { mqttClient, within } from '../helpers/mqtt-client';
import { brokerFor, client, open, publishPacket, subscribe } from '../helpers/mqtt5';
import type { RawClient } from '../helpers/raw-client';

/**
 * MQTT 5 limits between client and server (MQTT 5.0 sections 3.1.2.11, 3.2.2.3, 3.3.2.3.4):
 * Topic Alias in both directions, Maximum Packet Size of the client for what the server sends,
 * and Server Keep Alive. Receive Maximum is in mqtt5-acks.test.ts.
 */





t.test('topic aliases from the client: set with a topic, used with an empty one, re-set at will [MQTT-3.3.2-12]', async (t) => {
  const tb = await brokerFor(t);
  const sub = await client(t, tb, 'alias-sub', { protocolVersion: 4 });
  await subscribe(sub, [{ topic: 'alias/#', qos: 0 }]);
  const pub = await client(t, tb, 'alias-pub');
  pub.send(publishPacket('alias/a', '1', 0, { properties: { topicAlias: 1 } }));
  pub.send(publishPacket('', '2', 0, { properties: { topicAlias: 1 } }));
  pub.send(publishPacket('alias/b', '3', 0, { properties: { topicAlias: 1 } }));
  pub.send(publishPacket('', '4', 0, { properties: { topicAlias: 1 } }));
  pub.send(publishPacket('alias/c', '5', 0, { properties: { topicAlias: 10 } }));
  pub.send(publishPacket('', '6', 0, { properties: { topicAlias: 10 } }));
  const got: string[] = [];
  for (let i = 0; i < 6; i++) {
    const p = await sub.next('publish');
    got.push(`${p.topic} ${String(p.payload)}`);
  }
  t.same(got, ['alias/a 1', 'alias/a 2', 'alias/b 3', 'alias/b 4', 'alias/c 5', 'alias/c 6'], 'the 3.1.1 subscriber sees the full topics');

  // mqtt.js assigning aliases on its own.
  const js = await mqttClient(t, tb, { protocolVersion: 5, clientId: 'alias-js', autoAssignTopicAlias: true });
  for (const n of ['7', '8', '9']) await within(js.publishAsync('alias/js', n, { qos: 1 }), 'mqtt.js publish');
  for (const n of ['7', '8', '9']) {
    const p = await sub.next('publish');
    t.equal(`${p.topic} ${String(p.payload)}`, `alias/js ${n}`, `mqtt.js message ${n} under its full topic`);
  }
});

t.test('a topic alias of 0, above the server’s Topic Alias Maximum, or never set closes the connection [MQTT-3.3.2-8] [MQTT-3.3.2-7]', async (t) => {
  const tb = await brokerFor(t, { limits: { topicAliasMaximum: 3 } });
  const cases: [string, Parameters<RawClient['send']>[0], number][] = [
    ['alias 0', publishPacket('x', '1', 0, { properties: { topicAlias: 0 } }), 0x94],
    ['alias 4 with a maximum of 3', publishPacket('x', '1', 0, { properties: { topicAlias: 4 } }), 0x94],
    ['an alias this connection never set', publishPacket('', '1', 0, { properties: { topicAlias: 2 } }), 0x82],
  ];
  for (const [what, packet, reasonCode] of cases) {
    const c = await client(t, tb, `bad-alias-${what.length}`);
    c.send(packet);
    t.equal((await c.next('disconnect')).reasonCode, reasonCode, `${what}: DISCONNECT 0x${reasonCode.toString(16)}`);
    await c.waitClosed();
  }

  // Aliases are not carried to the next connection of the same client.
  const first = await client(t, tb, 'alias-carry');
  first.send(publishPacket('carry/a', '1', 0, { properties: { topicAlias: 1 } }));
  first.disconnect();
  await first.waitClosed();
  const second = await client(t, tb, 'alias-carry');
  second.send(publishPacket('', '2', 0, { properties: { topicAlias: 1 } }));
  t.equal((await second.next('disconnect')).reasonCode, 0x82, 'the alias of the earlier connection means nothing: 0x82');

  const none = await brokerFor(t, { limits: { topicAliasMaximum: 0 } });
  const { client: c, connack } = await open(t, none, { clientId: 'no-aliases' });
  t.equal(connack.properties?.topicAliasMaximum, undefined, 'limits.topicAliasMaximum 0: no Topic Alias Maximum in CONNACK');
  c.send(publishPacket('x', '1', 0, { properties: { topicAlias: 1 } }));
  t.equal((await c.next('disconnect')).reasonCode, 0x94, 'and any alias is invalid');
});

t.test('the server assigns topic aliases to a client that allows them, up to its Topic Alias Maximum [MQTT-3.1.2-26] [MQTT-3.1.2-27] [MQTT-3.3.2-11]', async (t) => {
  const tb = await brokerFor(t);
  const sub = await client(t, tb, 'takes-aliases', { properties: { topicAliasMaximum: 2 } });
  await subscribe(sub, [{ topic: 'out/#', qos: 1 }]);
  const plain = await client(t, tb, 'no-aliases');
  await subscribe(plain, [{ topic: 'out/#', qos: 0 }]);
  const pub = await client(t, tb, 'alias-source', { protocolVersion: 4 });
  const topics = ['out/a', 'out/a', 'out/b', 'out/c', 'out/a', 'out/c'];
  topics.forEach((topic, i) => pub.send(publishPacket(topic, String(i), 1, { messageId: i + 1 })));

  const seen: [string, number | undefined][] = [];
  for (let i = 0; i < topics.length; i++) {
    const p = await sub.next('publish');
    seen.push([p.topic, p.properties?.topicAlias]);
    sub.send({ cmd: 'puback', messageId: p.messageId ?? 0 });
  }
  t.same(
    seen,
    [
      ['out/a', 1], // new: topic and alias
      ['', 1], // known: alias only
      ['out/b', 2],
      ['out/c', 1], // both in use: the least recently used (out/a) gives up its alias
      ['out/a', 2], // out/a is new again and takes the then least recently used (out/b's)
      ['', 1],
    ],
    'aliases 1 and 2 only, reassigned least recently used first',
  );
  for (let i = 0; i < topics.length; i++) {
    const p = await plain.next('publish');
    t.equal(p.properties?.topicAlias, undefined, `a client without Topic Alias Maximum gets no alias (${topics[i]})`);
    t.equal(p.topic, topics[i]);
  }

  // mqtt.js resolves the aliases it gets.
  const js = await mqttClient(t, tb, { protocolVersion: 5, clientId: 'alias-js-sub', properties: { topicAliasMaximum: 5 } });
  const got: string[] = [];
  js.on('message', (topic, payload) => got.push(`${topic} ${payload.toString()}`));
  await within(js.subscribeAsync('out/#', { qos: 0 }), 'mqtt.js subscribe');
  for (const [i, topic] of ['out/x', 'out/x', 'out/y', 'out/x'].entries()) pub.send(publishPacket(topic, `j${i}`, 0));
  await waitFor(() => got.length === 4, 3000, 'four messages at mqtt.js');
  t.same(got, ['out/x j0', 'out/x j1', 'out/y j2', 'out/x j3'], 'mqtt.js sees the full topics');
});

t.test("a message larger than the client's Maximum Packet Size is not sent to it, at any QoS [MQTT-3.1.2-24] [MQTT-3.1.2-25]", async (t) => {
  const tb = await brokerFor(t);
  const small = await client(t, tb, 'small-packets', { properties: { maximumPacketSize: 100 } });
  await subscribe(small, [{ topic: 'size/#', qos: 1 }]);
  const v4 = await client(t, tb, 'any-size', { protocolVersion: 4 });
  await subscribe(v4, [{ topic: 'size/#', qos: 1 }]);
  const pub = await client(t, tb, 'size-pub', { protocolVersion: 4 });
  const big = 'x'.repeat(200);
  pub.send(publishPacket('size/0', 'small 0', 0));
  pub.send(publishPacket('size/0', big, 0));
  pub.send(publishPacket('size/1', big, 1, { messageId: 1 }));
  pub.send(publishPacket('size/1', 'small 1', 1, { messageId: 2 }));

  const received: string[] = [];
  for (let i = 0; i < 2; i++) {
    const p = await small.next('publish');
    received.push(`${p.topic} ${String(p.payload)}`);
    if (p.qos === 1) small.send({ cmd: 'puback', messageId: p.messageId ?? 0 });
  }
  t.same(received, ['size/0 small 0', 'size/1 small 1'], 'only the messages that fit in 100 bytes');
  t.same(await small.collect('publish', 200), [], 'nothing else');
  t.equal(tb.broker.sessions.get('small-packets')?.inflight.size, 0, 'the dropped QoS 1 message is not waiting for a PUBACK: as if delivered');
  t.equal(tb.broker.metrics.limitHits.clientMaxPacketSize, 2, 'both drops counted');
  const all: string[] = [];
  for (let i = 0; i < 4; i++) all.push((await v4.next('publish')).topic);
  t.same(all, ['size/0', 'size/0', 'size/1', 'size/1'], 'a client without the limit gets all four');
});

t.test('Server Keep Alive: limits.maxKeepalive replaces a longer keepalive, or none, for MQTT 5 clients [MQTT-3.2.2-21] [MQTT-3.2.2-22]', async (t) => {
  const tb = await brokerFor(t, { limits: { maxKeepalive: 2 } });
  const cases: [number, number | undefined][] = [
    [60, 2],
    [0, 2],
    [1, undefined],
  ];
  for (const [keepalive, serverKeepAlive] of cases) {
    const { connack } = await open(t, tb, { clientId: `ka-${keepalive}`, keepalive });
    t.equal(connack.properties?.serverKeepAlive, serverKeepAlive, `keepalive ${keepalive}: Server Keep Alive ${serverKeepAlive ?? 'absent'}`);
    t.equal(tb.broker.clients.get(`ka-${keepalive}`)?.keepalive, serverKeepAlive ?? keepalive, 'and the server supervises that one');
  }
  const silent = await client(t, tb, 'ka-silent', { keepalive: 600 });
  t.equal((await silent.next('disconnect', 10_000)).reasonCode, 0x8d, 'a silent client asking for 600 s is dropped after 1.5 × 2 s: DISCONNECT 0x8D');

  const v4 = await client(t, tb, 'ka-v4', { protocolVersion: 4, keepalive: 60 });
  t.equal(tb.broker.clients.get('ka-v4')?.keepalive, 60, '3.1.1 cannot be told: its keepalive stands');
  t.notOk(v4.closed);
});
