import t, { type Test } from 'tap';
import type { IConnackPacket, IConnectPacket, IPublishPacket, QoS } from 'mqtt-packet';
import { startBroker, waitFor, type TestBroker } from '../helpers/broker';
import { mqttClient, within } from '../helpers/mqtt-client';
import { RawClient } from '../helpers/raw-client';

/**
 * PUBLISH at QoS 0, 1 and 2 in both directions (MQTT 3.1.1 sections 3.3–3.7, 4.3, 4.4), the
 * delivery QoS, re-delivery on reconnect and the inflight window, over real TCP.
 */

async function setup(t: Test, config: Record<string, unknown> = {}): Promise<TestBroker> {
  const tb = await startBroker(config);
  t.teardown(() => tb.stop());
  return tb;
}

/** Connects a raw client (accepted) and destroys it at teardown. */
async function raw(t: Test, port: number, connect: Partial<IConnectPacket> = {}): Promise<RawClient> {
  const c = await RawClient.connect(port, connect);
  t.teardown(() => c.destroy());
  return c;
}

/** Like `raw`, but returns the CONNACK and leaves every later packet in `received`, in order. */
async function rawWithConnack(t: Test, port: number, connect: Partial<IConnectPacket>): Promise<{ client: RawClient; connack: IConnackPacket }> {
  const client = await RawClient.connectSocket(port);
  t.teardown(() => client.destroy());
  client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: '', keepalive: 0, ...connect });
  const connack = await client.next('connack');
  t.equal(connack.returnCode, 0, 'CONNACK accepted');
  return { client, connack };
}

let nextSubscribeId = 100;

async function subscribe(client: RawClient, subscriptions: { topic: string; qos: QoS }[]): Promise<number[]> {
  const messageId = nextSubscribeId++;
  client.send({ cmd: 'subscribe', messageId, subscriptions });
  const suback = await client.next('suback');
  if (suback.messageId !== messageId) throw new Error(`SUBACK for ${suback.messageId}, expected ${messageId}`);
  return suback.granted as number[];
}

function publish(client: RawClient, topic: string, payload: string, qos: QoS, messageId?: number, dup = false): void {
  const packet: IPublishPacket = { cmd: 'publish', topic, payload: Buffer.from(payload), qos, dup, retain: false };
  if (qos > 0) packet.messageId = messageId ?? 1;
  client.send(packet);
}

/** Publishes at QoS 1 and waits for the matching PUBACK. */
async function publishQos1(client: RawClient, topic: string, payload: string, messageId: number): Promise<void> {
  publish(client, topic, payload, 1, messageId);
  const ack = await client.next('puback');
  if (ack.messageId !== messageId) throw new Error(`PUBACK for ${ack.messageId}, expected ${messageId}`);
}

/** Publishes at QoS 2 and completes the flow (PUBREC, PUBREL, PUBCOMP). */
async function publishQos2(client: RawClient, topic: string, payload: string, messageId: number): Promise<void> {
  publish(client, topic, payload, 2, messageId);
  const rec = await client.next('pubrec');
  if (rec.messageId !== messageId) throw new Error(`PUBREC for ${rec.messageId}, expected ${messageId}`);
  client.send({ cmd: 'pubrel', messageId });
  const comp = await client.next('pubcomp');
  if (comp.messageId !== messageId) throw new Error(`PUBCOMP for ${comp.messageId}, expected ${messageId}`);
}


const text = (p: IPublishPacket): string => p.payload.toString();

t.test('QoS 0 in both directions: no acknowledgement, no packet id', async (t) => {
  const tb = await setup(t);
  const sub = await raw(t, tb.port, { clientId: 'q0-sub' });
  const pub = await raw(t, tb.port, { clientId: 'q0-pub' });
  t.same(await subscribe(sub, [{ topic: 'q0/t', qos: 0 }]), [0]);
  publish(pub, 'q0/t', 'zero', 0);
  const got = await sub.next('publish');
  t.equal(got.topic, 'q0/t');
  t.equal(text(got), 'zero');
  t.equal(got.qos, 0, 'delivered at QoS 0');
  t.equal(got.dup, false);
  t.equal(got.retain, false);
  t.equal(got.messageId, undefined, 'no packet identifier at QoS 0 [MQTT-2.3.1-5]');
  t.same(await pub.collect('puback', 200), [], 'publisher gets no PUBACK for QoS 0');
  t.same(pub.received, [], 'publisher gets nothing at all');
});

t.test('QoS 1 inbound: PUBACK carries the PUBLISH packet id [MQTT-4.3.2-2]', async (t) => {
  const tb = await setup(t);
  const pub = await raw(t, tb.port, { clientId: 'q1-in' });
  for (const id of [1, 1234, 65535]) {
    publish(pub, 'q1/in', `m${id}`, 1, id);
    const ack = await pub.next('puback');
    t.equal(ack.messageId, id, `PUBACK for packet id ${id}`);
  }
});

t.test('QoS 1 outbound: broker PUBLISH with a packet id, client PUBACK frees it', async (t) => {
  const tb = await setup(t);
  const sub = await raw(t, tb.port, { clientId: 'q1-out' });
  const pub = await raw(t, tb.port, { clientId: 'q1-out-pub' });
  t.same(await subscribe(sub, [{ topic: 'q1/out', qos: 1 }]), [1]);
  await publishQos1(pub, 'q1/out', 'a', 7);
  await publishQos1(pub, 'q1/out', 'b', 8);
  const a = await sub.next('publish');
  const b = await sub.next('publish');
  t.same([text(a), text(b)], ['a', 'b'], 'in order');
  t.equal(a.qos, 1);
  t.equal(b.qos, 1);
  t.equal(a.dup, false, 'first delivery has DUP 0 [MQTT-3.3.1-3]');
  t.ok(typeof a.messageId === 'number' && a.messageId > 0, 'non-zero packet id');
  t.ok(typeof b.messageId === 'number' && b.messageId > 0, 'non-zero packet id');
  t.not(a.messageId, b.messageId, 'two unacknowledged messages have distinct packet ids [MQTT-2.3.1-4]');
  // A PUBLISH that arrives with DUP 1 is forwarded with DUP 0: the flag is per hop.
  publish(pub, 'q1/out', 'c', 1, 9, true);
  t.equal((await pub.next('puback')).messageId, 9);
  const c = await sub.next('publish');
  t.equal(text(c), 'c');
  t.equal(c.dup, false, 'outgoing DUP is set independently of the incoming one [MQTT-3.3.1-3]');
  sub.send({ cmd: 'puback', messageId: c.messageId });
  const session = tb.broker.sessions.get('q1-out');
  await waitFor(() => session?.inflight.size === 2, 2000, 'the third message to be acknowledged');
  t.equal(session?.inflight.size, 2, 'the first two stay inflight until acknowledged');
  sub.send({ cmd: 'puback', messageId: a.messageId });
  sub.send({ cmd: 'puback', messageId: b.messageId });
  await waitFor(() => session?.inflight.size === 0, 2000, 'the PUBACKs to free the inflight slots');
  t.pass('PUBACK released both messages');
});

t.test('QoS 2 inbound: PUBLISH → PUBREC → PUBREL → PUBCOMP with the same packet id', async (t) => {
  const tb = await setup(t);
  const sub = await raw(t, tb.port, { clientId: 'q2-in-sub' });
  const pub = await raw(t, tb.port, { clientId: 'q2-in' });
  await subscribe(sub, [{ topic: 'q2/in', qos: 2 }]);
  publish(pub, 'q2/in', 'two', 2, 777);
  const rec = await pub.next('pubrec');
  t.equal(rec.messageId, 777, 'PUBREC with the PUBLISH packet id [MQTT-4.3.3-2]');
  pub.send({ cmd: 'pubrel', messageId: 777 });
  const comp = await pub.next('pubcomp');
  t.equal(comp.messageId, 777, 'PUBCOMP with the PUBREL packet id [MQTT-4.3.3-2]');
  const got = await sub.next('publish');
  t.equal(text(got), 'two');
  t.equal(got.qos, 2);
});

t.test('QoS 2 outbound: broker PUBLISH → client PUBREC → broker PUBREL → client PUBCOMP', async (t) => {
  const tb = await setup(t);
  const sub = await raw(t, tb.port, { clientId: 'q2-out' });
  const pub = await raw(t, tb.port, { clientId: 'q2-out-pub' });
  await subscribe(sub, [{ topic: 'q2/out', qos: 2 }]);
  await publishQos2(pub, 'q2/out', 'x', 1);
  await publishQos2(pub, 'q2/out', 'y', 2);
  const x = await sub.next('publish');
  const y = await sub.next('publish');
  t.same([text(x), text(y)], ['x', 'y']);
  t.equal(x.qos, 2);
  t.ok(typeof x.messageId === 'number' && x.messageId > 0 && typeof y.messageId === 'number' && y.messageId > 0, 'non-zero packet ids');
  t.not(x.messageId, y.messageId, 'distinct packet ids');

  sub.send({ cmd: 'pubrec', messageId: y.messageId });
  sub.send({ cmd: 'pubrec', messageId: x.messageId });
  const rel1 = await sub.next('pubrel');
  const rel2 = await sub.next('pubrel');
  t.same([rel1.messageId, rel2.messageId], [y.messageId, x.messageId], 'PUBREL for each PUBREC, same packet id [MQTT-4.3.3-1]');
  t.same(await sub.collect('publish', 200), [], 'no re-send of the PUBLISH after PUBREC');

  const session = tb.broker.sessions.get('q2-out');
  t.equal(session?.inflight.size, 2, 'still inflight until PUBCOMP');
  sub.send({ cmd: 'pubcomp', messageId: x.messageId });
  sub.send({ cmd: 'pubcomp', messageId: y.messageId });
  await waitFor(() => session?.inflight.size === 0, 2000, 'PUBCOMP to complete both');
  t.pass('PUBCOMP completed both deliveries');
});

t.test('QoS 1 and 2 end to end with the mqtt.js client', async (t) => {
  const tb = await setup(t);
  const sub = await mqttClient(t, tb, { clientId: 'mqttjs-sub' });
  const pub = await mqttClient(t, tb, { clientId: 'mqttjs-pub' });
  const got: { topic: string; payload: string; qos: number }[] = [];
  sub.on('message', (topic, payload, packet) => got.push({ topic, payload: payload.toString(), qos: packet.qos }));
  const granted = await within(sub.subscribeAsync('e2e/#', { qos: 2 }), 'SUBACK');
  t.same(granted.map((g) => g.qos), [2]);
  await within(pub.publishAsync('e2e/one', 'q1', { qos: 1 }), 'PUBACK');
  await within(pub.publishAsync('e2e/two', 'q2', { qos: 2 }), 'PUBCOMP'); // resolves on PUBCOMP
  await waitFor(() => got.length >= 2, 3000, 'both messages');
  t.same(got, [
    { topic: 'e2e/one', payload: 'q1', qos: 1 },
    { topic: 'e2e/two', payload: 'q2', qos: 2 },
  ]);
});

t.test('delivery QoS is min(subscription QoS, publication QoS) [MQTT-3.8.4-6]', async (t) => {
  const tb = await setup(t);
  const subs: RawClient[] = [];
  for (const qos of [0, 1, 2] as const) {
    const s = await raw(t, tb.port, { clientId: `min-sub-${qos}` });
    t.same(await subscribe(s, [{ topic: 'min/t', qos }]), [qos], `subscribed at QoS ${qos}`);
    subs.push(s);
  }
  const pub = await raw(t, tb.port, { clientId: 'min-pub' });
  publish(pub, 'min/t', 'p0', 0);
  await publishQos1(pub, 'min/t', 'p1', 11);
  await publishQos2(pub, 'min/t', 'p2', 12);
  for (const [subQos, s] of subs.entries()) {
    for (const pubQos of [0, 1, 2]) {
      const got = await s.next('publish');
      t.equal(text(got), `p${pubQos}`, `sub QoS ${subQos} gets p${pubQos} in order`);
      t.equal(got.qos, Math.min(subQos, pubQos), `sub QoS ${subQos} × pub QoS ${pubQos} → QoS ${Math.min(subQos, pubQos)}`);
    }
  }
});

t.test('QoS 2 is delivered exactly once when the PUBLISH is re-sent with DUP before PUBREL [MQTT-4.3.3-2]', async (t) => {
  const tb = await setup(t);
  const sub = await raw(t, tb.port, { clientId: 'once-sub' });
  const pub = await raw(t, tb.port, { clientId: 'once-pub' });
  await subscribe(sub, [{ topic: 'once/t', qos: 2 }]);

  publish(pub, 'once/t', 'first', 2, 42);
  t.equal((await pub.next('pubrec')).messageId, 42);
  publish(pub, 'once/t', 'first', 2, 42, true); // the client did not see PUBREC and re-sends
  t.equal((await pub.next('pubrec')).messageId, 42, 'the re-sent PUBLISH is answered with PUBREC again');
  publish(pub, 'once/t', 'first', 2, 42, true);
  t.equal((await pub.next('pubrec')).messageId, 42);
  const delivered = await sub.collect('publish', 300);
  t.same(delivered.map(text), ['first'], 'delivered exactly once');

  pub.send({ cmd: 'pubrel', messageId: 42 });
  t.equal((await pub.next('pubcomp')).messageId, 42);

  // After PUBREL the packet id is free: a new PUBLISH with it is a new message.
  publish(pub, 'once/t', 'second', 2, 42);
  t.equal((await pub.next('pubrec')).messageId, 42);
  const again = await sub.next('publish');
  t.equal(text(again), 'second', 'a new PUBLISH with a released id is a new message');
  pub.send({ cmd: 'pubrel', messageId: 42 });
  t.equal((await pub.next('pubcomp')).messageId, 42);
  t.same(await sub.collect('publish', 200), [], 'and it too is delivered once');
});

t.test('QoS 2 inbound exactly once across a reconnect of a persistent session [MQTT-4.3.3-2]', async (t) => {
  const tb = await setup(t);
  const sub = await raw(t, tb.port, { clientId: 'across-sub' });
  await subscribe(sub, [{ topic: 'across/t', qos: 2 }]);
  const first = await rawWithConnack(t, tb.port, { clientId: 'across-pub', clean: false });
  publish(first.client, 'across/t', 'once', 2, 9);
  t.equal((await first.client.next('pubrec')).messageId, 9);
  first.client.destroy(); // the client never saw the PUBREC, as far as it knows
  await waitFor(() => !tb.broker.clients.has('across-pub'), 2000, 'the broker to see the close');

  const second = await rawWithConnack(t, tb.port, { clientId: 'across-pub', clean: false });
  t.equal(second.connack.sessionPresent, true);
  publish(second.client, 'across/t', 'once', 2, 9, true);
  t.equal((await second.client.next('pubrec')).messageId, 9, 'the re-sent PUBLISH is acknowledged');
  second.client.send({ cmd: 'pubrel', messageId: 9 });
  t.equal((await second.client.next('pubcomp')).messageId, 9);
  t.same((await sub.collect('publish', 300)).map(text), ['once'], 'delivered once, not again after the reconnect');
});

t.test('unacknowledged QoS 1/2 are re-sent with DUP and PUBREL is re-sent on reconnect [MQTT-4.4.0-1]', async (t) => {
  const tb = await setup(t);
  const first = await rawWithConnack(t, tb.port, { clientId: 'redeliver', clean: false });
  t.equal(first.connack.sessionPresent, false);
  const sub = first.client;
  await subscribe(sub, [{ topic: 'rd/#', qos: 2 }]);
  const pub = await raw(t, tb.port, { clientId: 'redeliver-pub' });
  await publishQos1(pub, 'rd/a', 'A', 1);
  await publishQos2(pub, 'rd/b', 'B', 2);
  await publishQos2(pub, 'rd/c', 'C', 3);
  const a = await sub.next('publish');
  const b = await sub.next('publish');
  const c = await sub.next('publish');
  t.same([text(a), text(b), text(c)], ['A', 'B', 'C']);
  t.same([a.qos, b.qos, c.qos], [1, 2, 2]);
  t.same([a.dup, b.dup, c.dup], [false, false, false], 'DUP 0 on first delivery');
  // A: not acknowledged. B: not acknowledged. C: PUBREC'd, but PUBCOMP is never sent.
  sub.send({ cmd: 'pubrec', messageId: c.messageId });
  t.equal((await sub.next('pubrel')).messageId, c.messageId);
  sub.destroy();
  await waitFor(() => !tb.broker.clients.has('redeliver'), 2000, 'the broker to see the close');

  const second = await rawWithConnack(t, tb.port, { clientId: 'redeliver', clean: false });
  t.equal(second.connack.sessionPresent, true, 'session resumed');
  const back = second.client;
  await waitFor(() => back.received.length >= 3, 3000, 'three re-sent packets');
  const [ra, rb, rc, ...rest] = back.received.splice(0);
  t.same(rest, [], 'nothing else re-sent');
  t.match(ra, { cmd: 'publish', topic: 'rd/a', qos: 1, dup: true, messageId: a.messageId }, 'QoS 1 re-sent with DUP 1, same id [MQTT-3.3.1-1]');
  t.equal(ra && ra.cmd === 'publish' ? text(ra) : undefined, 'A');
  t.match(rb, { cmd: 'publish', topic: 'rd/b', qos: 2, dup: true, messageId: b.messageId }, 'QoS 2 (no PUBREC) re-sent with DUP 1, same id');
  t.equal(rb && rb.cmd === 'publish' ? text(rb) : undefined, 'B');
  t.match(rc, { cmd: 'pubrel', messageId: c.messageId }, "PUBREL re-sent for the PUBREC'd message, not the PUBLISH");

  // Complete every flow; then a further reconnect re-sends nothing.
  back.send({ cmd: 'puback', messageId: a.messageId });
  back.send({ cmd: 'pubrec', messageId: b.messageId });
  t.equal((await back.next('pubrel')).messageId, b.messageId);
  back.send({ cmd: 'pubcomp', messageId: b.messageId });
  back.send({ cmd: 'pubcomp', messageId: c.messageId });
  const session = tb.broker.sessions.get('redeliver');
  await waitFor(() => session?.inflight.size === 0, 2000, 'all flows completed');
  back.destroy();
  await waitFor(() => !tb.broker.clients.has('redeliver'), 2000, 'the broker to see the close');
  const third = await rawWithConnack(t, tb.port, { clientId: 'redeliver', clean: false });
  t.equal(third.connack.sessionPresent, true);
  t.same(await third.client.collect('publish', 200), [], 'completed messages are not re-sent');
  t.same(third.client.received, [], 'no PUBREL either');
});

t.test('overlapping subscriptions deliver one copy at the highest granted QoS', async (t) => {
  const tb = await setup(t);
  const sub = await raw(t, tb.port, { clientId: 'overlap' });
  t.same(
    await subscribe(sub, [
      { topic: 'ov/+', qos: 0 },
      { topic: 'ov/#', qos: 2 },
      { topic: 'ov/x', qos: 1 },
    ]),
    [0, 2, 1],
  );
  const pub = await raw(t, tb.port, { clientId: 'overlap-pub' });
  await publishQos2(pub, 'ov/x', 'two', 1);
  const got2 = await sub.collect('publish', 300);
  t.equal(got2.length, 1, 'one copy for three matching subscriptions');
  t.equal(got2[0]?.qos, 2, 'at the highest granted QoS');
  t.equal(got2[0] && text(got2[0]), 'two');

  await publishQos1(pub, 'ov/x', 'one', 2);
  const got1 = await sub.collect('publish', 300);
  t.equal(got1.length, 1, 'one copy');
  t.equal(got1[0]?.qos, 1, 'still limited by the publication QoS');
});

t.test('maxInflight: a client that does not acknowledge gets only maxInflight messages until it does', async (t) => {
  const tb = await setup(t, { limits: { maxInflight: 2 } });
  const sub = await raw(t, tb.port, { clientId: 'window' });
  await subscribe(sub, [{ topic: 'win/t', qos: 1 }]);
  const pub = await raw(t, tb.port, { clientId: 'window-pub' });
  for (let i = 0; i < 5; i++) await publishQos1(pub, 'win/t', `m${i}`, i + 1);

  const firstTwo = await sub.collect('publish', 300);
  t.same(firstTwo.map(text), ['m0', 'm1'], 'only 2 sent while unacknowledged');
  const [m0, m1] = firstTwo as [IPublishPacket, IPublishPacket];
  sub.send({ cmd: 'puback', messageId: m0.messageId });
  const m2 = await sub.next('publish');
  t.equal(text(m2), 'm2', 'one acknowledgement frees one slot');
  t.same(await sub.collect('publish', 200), [], 'and only one');
  sub.send({ cmd: 'puback', messageId: m1.messageId });
  sub.send({ cmd: 'puback', messageId: m2.messageId });
  const m3 = await sub.next('publish');
  const m4 = await sub.next('publish');
  t.same([text(m3), text(m4)], ['m3', 'm4'], 'the rest arrive in order');
  t.same([m3.dup, m4.dup], [false, false]);
  sub.send({ cmd: 'puback', messageId: m3.messageId });
  sub.send({ cmd: 'puback', messageId: m4.messageId });
  t.same(await sub.collect('publish', 200), [], 'nothing more');
});

t.test('maxInflight at QoS 2: PUBREC does not free a slot, PUBCOMP does', async (t) => {
  const tb = await setup(t, { limits: { maxInflight: 1 } });
  const sub = await raw(t, tb.port, { clientId: 'window2' });
  await subscribe(sub, [{ topic: 'win2/t', qos: 2 }]);
  const pub = await raw(t, tb.port, { clientId: 'window2-pub' });
  await publishQos2(pub, 'win2/t', 'a', 1);
  await publishQos2(pub, 'win2/t', 'b', 2);
  const a = await sub.next('publish');
  t.equal(text(a), 'a');
  sub.send({ cmd: 'pubrec', messageId: a.messageId });
  t.equal((await sub.next('pubrel')).messageId, a.messageId);
  t.same(await sub.collect('publish', 200), [], 'b waits while a is not completed');
  sub.send({ cmd: 'pubcomp', messageId: a.messageId });
  const b = await sub.next('publish');
  t.equal(text(b), 'b', 'PUBCOMP frees the slot');
});
