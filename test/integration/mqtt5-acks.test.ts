import t from 'tap';
import { waitFor } from '../helpers/broker';
import { mqttClient, within } from '../helpers/mqtt-client';
import { brokerFor, client, publishPacket, subscribe } from '../helpers/mqtt5';

/**
 * MQTT 5 acknowledgements and flow control (MQTT 5.0 sections 3.4–3.11, 4.9): reason codes on
 * PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK, Receive Maximum in both directions, and
 * 3.1.1 and MQTT 5 clients exchanging messages on the same topics.
 */




t.test('PUBACK and PUBREC: 0x00 when a subscriber took the message, 0x10 when none matched [MQTT-3.4.2-1] [MQTT-3.5.2-1]', async (t) => {
  const tb = await brokerFor(t);
  const sub = await client(t, tb, 'acks-sub');
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'taken/#', qos: 0 }] });
  await sub.next('suback');
  const pub = await client(t, tb, 'acks-pub');

  pub.send(publishPacket('taken/a', 'x', 1, { messageId: 1 }));
  pub.send(publishPacket('nobody/a', 'x', 1, { messageId: 2 }));
  pub.send(publishPacket('taken/b', 'x', 2, { messageId: 3 }));
  pub.send(publishPacket('nobody/b', 'x', 2, { messageId: 4 }));
  const pubacks = [await pub.next('puback'), await pub.next('puback')];
  t.same(pubacks.map((p) => [p.messageId, p.reasonCode]), [[1, 0x00], [2, 0x10]], 'PUBACK 0x00, then 0x10 (no matching subscribers)');
  const pubrecs = [await pub.next('pubrec'), await pub.next('pubrec')];
  t.same(pubrecs.map((p) => [p.messageId, p.reasonCode]), [[3, 0x00], [4, 0x10]], 'PUBREC 0x00, then 0x10');
  // 0x10 is a success: the exchange goes on with PUBREL.
  pub.send({ cmd: 'pubrel', messageId: 4 });
  t.equal((await pub.next('pubcomp')).reasonCode, 0, 'PUBCOMP 0x00 for the released id');

  // mqtt.js treats 0x10 as success too.
  const js = await mqttClient(t, tb, { protocolVersion: 5, clientId: 'acks-js' });
  await within(js.publishAsync('nobody/js', 'x', { qos: 1 }), 'mqtt.js publish to no subscriber');
  t.pass('mqtt.js publishAsync resolves on PUBACK 0x10');
});

t.test('PUBREL and PUBCOMP for an unknown packet identifier carry 0x92 [MQTT-3.6.2-1] [MQTT-3.7.2.1-1]', async (t) => {
  const tb = await brokerFor(t);
  const c = await client(t, tb, 'unknown-ids');
  c.send({ cmd: 'pubrel', messageId: 77 });
  const pubcomp = await c.next('pubcomp');
  t.same([pubcomp.messageId, pubcomp.reasonCode], [77, 0x92], 'PUBCOMP 0x92 (packet identifier not found) for a PUBREL nobody sent a PUBLISH for');
  c.send({ cmd: 'pubrec', messageId: 78 });
  const pubrel = await c.next('pubrel');
  t.same([pubrel.messageId, pubrel.reasonCode], [78, 0x92], 'PUBREL 0x92 for a PUBREC of a message never sent');

  // 3.1.1 keeps its plain four-byte answers.
  const v4 = await client(t, tb, 'unknown-ids-v4', { protocolVersion: 4 });
  v4.send({ cmd: 'pubrel', messageId: 77 });
  t.equal((await v4.next('pubcomp')).messageId, 77, '3.1.1: PUBCOMP, no reason code');
});

t.test('a PUBREC with a reason code of 0x80 or more ends an outgoing QoS 2 delivery without PUBREL [MQTT-4.3.3-4] [MQTT-4.4.0-2]', async (t) => {
  const tb = await brokerFor(t, { limits: { maxInflight: 1 } });
  const sub = await client(t, tb, 'refuser');
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'refused', qos: 2 }] });
  await sub.next('suback');
  const pub = await client(t, tb, 'refused-pub', { protocolVersion: 4 });
  pub.send(publishPacket('refused', 'first', 2, { messageId: 1 }));
  pub.send(publishPacket('refused', 'second', 2, { messageId: 2 }));

  const first = await sub.next('publish');
  t.equal(first.payload.toString(), 'first', 'first message sent; the second waits (maxInflight 1)');
  sub.send({ cmd: 'pubrec', messageId: first.messageId ?? 0, reasonCode: 0x80 });
  const second = await sub.next('publish');
  t.equal(second.payload.toString(), 'second', 'the refusal freed the slot: the second message follows');
  t.same(sub.received.filter((p) => p.cmd === 'pubrel'), [], 'no PUBREL for the refused message');
  t.equal(tb.broker.sessions.get('refuser')?.inflight.has(first.messageId ?? 0), false, 'its packet identifier is free');
});

t.test('SUBACK reason codes: granted QoS, 0x8F beyond maxTopicLevels, 0x97 beyond maxSubscriptionsPerClient [MQTT-3.9.3-1] [MQTT-3.9.3-2]', async (t) => {
  const tb = await brokerFor(t, { limits: { maxTopicLevels: 3, maxSubscriptionsPerClient: 2 } });
  const c = await client(t, tb, 'suback-codes');
  c.send({
    cmd: 'subscribe',
    messageId: 5,
    subscriptions: [
      { topic: 'a/b', qos: 2 },
      { topic: 'a/b/c/d', qos: 1 },
      { topic: 'x', qos: 1 },
      { topic: 'y', qos: 0 },
    ],
  });
  const suback = await c.next('suback');
  t.equal(suback.messageId, 5);
  t.same(suback.granted, [2, 0x8f, 1, 0x97], 'in the order of the filters: 2, 0x8F (topic filter invalid), 1, 0x97 (quota exceeded)');
  t.match(suback.properties?.reasonString, /a\/b\/c\/d.*more than 3 topic levels.*y: more than 2 subscriptions/, 'the Reason String says why for each refusal');
  t.notOk(c.closed, 'a refused filter does not close the connection');

  // 3.1.1: the limit on levels closes the connection; the subscription limit is 0x80.
  const v4 = await client(t, tb, 'suback-v4', { protocolVersion: 4 });
  v4.send({ cmd: 'subscribe', messageId: 6, subscriptions: [{ topic: 'p', qos: 0 }, { topic: 'q', qos: 0 }, { topic: 'r', qos: 0 }] });
  t.same((await v4.next('suback')).granted, [0, 0, 0x80], '3.1.1: 0x80 (failure)');
});

t.test('UNSUBACK reason codes: 0x00 for a removed subscription, 0x11 when there was none [MQTT-3.11.3-1] [MQTT-3.11.3-2]', async (t) => {
  const tb = await brokerFor(t);
  const c = await client(t, tb, 'unsuback-codes');
  c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'here', qos: 0 }] });
  await c.next('suback');
  c.send({ cmd: 'unsubscribe', messageId: 2, unsubscriptions: ['here', 'never/there'] });
  const unsuback = await c.next('unsuback');
  t.equal(unsuback.messageId, 2);
  t.same(unsuback.granted, [0x00, 0x11], '0x00 (success), 0x11 (no subscription existed)');
});

t.test("the server's Receive Maximum: one QoS 1/2 message too many gets DISCONNECT 0x93 [MQTT-3.3.4-7]", async (t) => {
  const tb = await brokerFor(t, { limits: { receiveMaximum: 2 } });
  const c = await client(t, tb, 'flooder');
  // QoS 2 messages count until PUBCOMP: two are in flight after their PUBREC.
  c.send(publishPacket('flow/a', '1', 2, { messageId: 1 }));
  c.send(publishPacket('flow/a', '2', 2, { messageId: 2 }));
  t.equal((await c.next('pubrec')).messageId, 1);
  t.equal((await c.next('pubrec')).messageId, 2);
  // Completing one frees a place.
  c.send({ cmd: 'pubrel', messageId: 1 });
  t.equal((await c.next('pubcomp')).messageId, 1, 'PUBCOMP for 1');
  c.send(publishPacket('flow/a', '3', 2, { messageId: 3 }));
  t.equal((await c.next('pubrec')).messageId, 3, 'a third message is fine once the first is complete');
  // A re-sent id is the same exchange, not one more.
  c.send({ ...publishPacket('flow/a', '3', 2, { messageId: 3 }), dup: true });
  t.equal((await c.next('pubrec')).messageId, 3, 'a re-sent PUBLISH with a held id is answered, not counted');
  c.send(publishPacket('flow/a', '4', 2, { messageId: 4 }));
  const d = await c.next('disconnect');
  t.equal(d.reasonCode, 0x93, 'two in flight and a third new one: DISCONNECT 0x93 (receive maximum exceeded)');
  await c.waitClosed();

  // mqtt.js v5 publishing QoS 1 within the limit is never disconnected: its PUBACKs come at once.
  const js = await mqttClient(t, tb, { protocolVersion: 5, clientId: 'flow-js' });
  await within(Promise.all(Array.from({ length: 20 }, (_, i) => js.publishAsync('flow/js', String(i), { qos: 1 }))), '20 QoS 1 publishes');
  t.ok(js.connected, 'still connected after 20 QoS 1 messages in a burst');
});

t.test("the client's Receive Maximum bounds the server's unacknowledged QoS 1/2 messages [MQTT-3.3.4-9]", async (t) => {
  const tb = await brokerFor(t, { limits: { maxInflight: 20 } });
  const sub = await client(t, tb, 'slow-reader', { properties: { receiveMaximum: 2 } });
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'rm/#', qos: 1 }] });
  await sub.next('suback');
  const pub = await client(t, tb, 'rm-pub', { protocolVersion: 4 });
  for (let i = 1; i <= 5; i++) pub.send(publishPacket('rm/x', String(i), 1, { messageId: i }));
  for (let i = 1; i <= 5; i++) await pub.next('puback');

  const first = [await sub.next('publish'), await sub.next('publish')];
  t.same(first.map((p) => p.payload.toString()), ['1', '2'], 'two messages sent');
  t.same(await sub.collect('publish', 200), [], 'and no third until one is acknowledged');
  sub.send({ cmd: 'puback', messageId: first[0]?.messageId ?? 0 });
  t.equal((await sub.next('publish')).payload.toString(), '3', 'a PUBACK lets the next one go');
  t.equal(tb.broker.sessions.get('slow-reader')?.queue.length, 2, 'the rest wait in the session queue');
});

t.test('3.1.1 and MQTT 5 clients exchange messages on the same topics at QoS 0, 1 and 2', async (t) => {
  const tb = await brokerFor(t);
  const v4 = await mqttClient(t, tb, { protocolVersion: 4, clientId: 'mixed-v4' });
  const v5 = await mqttClient(t, tb, { protocolVersion: 5, clientId: 'mixed-v5' });
  const got: Record<string, string[]> = { v4: [], v5: [] };
  v4.on('message', (topic, payload, packet) => got.v4?.push(`${topic} ${payload.toString()} q${packet.qos}`));
  v5.on('message', (topic, payload, packet) => got.v5?.push(`${topic} ${payload.toString()} q${packet.qos}`));
  await within(v4.subscribeAsync('mixed/#', { qos: 2 }), 'v4 subscribe');
  await within(v5.subscribeAsync('mixed/#', { qos: 2 }), 'v5 subscribe');
  for (const qos of [0, 1, 2] as const) {
    await within(v4.publishAsync(`mixed/from-v4/${qos}`, `v4 q${qos}`, { qos }), 'v4 publish');
    await within(v5.publishAsync(`mixed/from-v5/${qos}`, `v5 q${qos}`, { qos }), 'v5 publish');
  }
  await waitFor(() => (got.v4?.length ?? 0) === 6 && (got.v5?.length ?? 0) === 6, 5000, 'six messages each');
  const expected = [0, 1, 2].flatMap((q) => [`mixed/from-v4/${q} v4 q${q} q${q}`, `mixed/from-v5/${q} v5 q${q} q${q}`]);
  t.same(got.v4?.slice().sort(), expected.slice().sort(), 'the 3.1.1 client gets every message, its own and the MQTT 5 client’s');
  t.same(got.v5?.slice().sort(), expected.slice().sort(), 'the MQTT 5 client gets every message, its own and the 3.1.1 client’s');
});
