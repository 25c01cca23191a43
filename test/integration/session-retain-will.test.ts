import t, { type Test } from 'tap';
import type { IConnackPacket, IConnectPacket, IPublishPacket, QoS } from 'mqtt-packet';
import { startBroker, waitFor, type TestBroker } from '../helpers/broker';
import { mqttClient, within } from '../helpers/mqtt-client';
import { RawClient } from '../helpers/raw-client';

/**
 * Persistent sessions and their queue, retained messages, SUBSCRIBE/UNSUBSCRIBE and wills
 * (MQTT 3.1.1 sections 3.1.2.4–3.1.2.7, 3.3.1.3, 3.8, 3.10), over real TCP.
 */

async function setup(t: Test, config: Record<string, unknown> = {}): Promise<TestBroker> {
  const tb = await startBroker(config);
  t.teardown(() => tb.stop());
  return tb;
}

/** Connects a raw client, checks the CONNACK and leaves every later packet in `received`. */
async function rawConnect(t: Test, port: number, connect: Partial<IConnectPacket> = {}): Promise<{ client: RawClient; connack: IConnackPacket }> {
  const client = await RawClient.connectSocket(port);
  t.teardown(() => client.destroy());
  client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: '', keepalive: 0, ...connect });
  const connack = await client.next('connack');
  t.equal(connack.returnCode, 0, `CONNACK accepted for ${connect.clientId ?? '(no id)'}`);
  return { client, connack };
}

async function raw(t: Test, port: number, connect: Partial<IConnectPacket> = {}): Promise<RawClient> {
  return (await rawConnect(t, port, connect)).client;
}

let nextId = 100;

async function subscribe(client: RawClient, subscriptions: { topic: string; qos: QoS }[]): Promise<number[]> {
  const messageId = nextId++;
  client.send({ cmd: 'subscribe', messageId, subscriptions });
  const suback = await client.next('suback');
  if (suback.messageId !== messageId) throw new Error(`SUBACK for ${suback.messageId}, expected ${messageId}`);
  return suback.granted as number[];
}

/** Publishes and completes the QoS flow, so the broker has routed the message when it returns. */
async function publish(client: RawClient, topic: string, payload: string, qos: QoS, retain = false): Promise<void> {
  const packet: IPublishPacket = { cmd: 'publish', topic, payload: Buffer.from(payload), qos, dup: false, retain };
  if (qos === 0) {
    client.send(packet);
    // A PINGREQ after it: when PINGRESP arrives, the PUBLISH before it was processed.
    client.send({ cmd: 'pingreq' });
    await client.next('pingresp');
    return;
  }
  const messageId = nextId++;
  client.send({ ...packet, messageId });
  if (qos === 1) {
    const ack = await client.next('puback');
    if (ack.messageId !== messageId) throw new Error('PUBACK id mismatch');
    return;
  }
  const rec = await client.next('pubrec');
  if (rec.messageId !== messageId) throw new Error('PUBREC id mismatch');
  client.send({ cmd: 'pubrel', messageId });
  await client.next('pubcomp');
}

/** Acknowledges a received PUBLISH as a well-behaved client would. */
async function ack(client: RawClient, p: IPublishPacket): Promise<void> {
  if (p.qos === 1) client.send({ cmd: 'puback', messageId: p.messageId });
  if (p.qos === 2) {
    client.send({ cmd: 'pubrec', messageId: p.messageId });
    await client.next('pubrel');
    client.send({ cmd: 'pubcomp', messageId: p.messageId });
  }
}

/** Ends `client` with DISCONNECT and waits until the broker has let go of it. */
async function disconnect(tb: TestBroker, client: RawClient, clientId: string): Promise<void> {
  client.disconnect();
  await client.waitClosed();
  await waitFor(() => !tb.broker.clients.has(clientId), 2000, `${clientId} to be unregistered`);
}


interface Received {
  topic: string;
  payload: string;
  qos: number;
  retain: boolean;
}

/** An mqtt.js observer that records every message it gets. */
async function observer(t: Test, tb: TestBroker, clientId: string, filter: string, qos: QoS = 2): Promise<Received[]> {
  const c = await mqttClient(t, tb, { clientId });
  const got: Received[] = [];
  c.on('message', (topic, payload, packet) => got.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain }));
  await within(c.subscribeAsync(filter, { qos }), 'SUBACK');
  return got;
}

const text = (p: IPublishPacket): string => p.payload.toString();

// ---- persistent sessions ----

t.test('persistent session: subscriptions kept, QoS 1/2 queued in order while away, QoS 0 not queued', async (t) => {
  const tb = await setup(t);
  const first = await rawConnect(t, tb.port, { clientId: 'away', clean: false });
  t.equal(first.connack.sessionPresent, false);
  t.same(await subscribe(first.client, [{ topic: 'away/#', qos: 2 }]), [2]);
  await disconnect(tb, first.client, 'away');

  const pub = await raw(t, tb.port, { clientId: 'away-pub' });
  await publish(pub, 'away/1', 'm1', 1);
  await publish(pub, 'away/0', 'z0', 0);
  await publish(pub, 'away/2', 'm2', 2);
  await publish(pub, 'away/3', 'm3', 1);
  await publish(pub, 'away/0', 'z1', 0);
  await publish(pub, 'away/4', 'm4', 2);

  const back = await rawConnect(t, tb.port, { clientId: 'away', clean: false });
  t.equal(back.connack.sessionPresent, true, 'session present [MQTT-3.2.2-2]');
  const got: IPublishPacket[] = [];
  for (let i = 0; i < 4; i++) {
    const p = await back.client.next('publish');
    got.push(p);
    await ack(back.client, p);
  }
  t.same(got.map(text), ['m1', 'm2', 'm3', 'm4'], 'QoS 1/2 messages delivered on return, in order');
  t.same(got.map((p) => p.qos), [1, 2, 1, 2], 'at their QoS');
  t.same(got.map((p) => p.dup), [false, false, false, false], 'never sent before, so DUP 0');
  t.same((await back.client.collect('publish', 250)).map(text), [], 'QoS 0 published while away was not queued');

  // The subscription survived: no SUBSCRIBE on this connection, yet live messages arrive.
  await publish(pub, 'away/live', 'live', 0);
  t.equal(text(await back.client.next('publish')), 'live', 'subscription kept across reconnect');
});

t.test('clean session 1 discards the old session and its queue [MQTT-3.1.2-6]', async (t) => {
  const tb = await setup(t);
  const first = await raw(t, tb.port, { clientId: 'discard', clean: false });
  await subscribe(first, [{ topic: 'discard/#', qos: 1 }]);
  await disconnect(tb, first, 'discard');
  const pub = await raw(t, tb.port, { clientId: 'discard-pub' });
  await publish(pub, 'discard/q', 'queued', 1);
  t.equal(tb.broker.sessions.get('discard')?.queue.length, 1, 'message queued for the absent session');

  const clean = await rawConnect(t, tb.port, { clientId: 'discard', clean: true });
  t.equal(clean.connack.sessionPresent, false, 'sessionPresent 0 [MQTT-3.2.2-1]');
  t.same(await clean.client.collect('publish', 250), [], 'the queued message is discarded');
  t.equal(tb.broker.subscriptions.size, 0, "the old session's subscriptions are removed from the broker");
  await publish(pub, 'discard/q', 'after', 1);
  t.same(await clean.client.collect('publish', 250), [], 'the old subscription is gone');
  await disconnect(tb, clean.client, 'discard');
  t.notOk(tb.broker.sessions.has('discard'), 'a clean session ends with its connection');

  const again = await rawConnect(t, tb.port, { clientId: 'discard', clean: false });
  t.equal(again.connack.sessionPresent, false, 'no session left to resume');
});

t.test('limits.maxQueued bounds the queue of an absent session; excess is dropped and counted', async (t) => {
  const tb = await setup(t, { limits: { maxQueued: 3 } });
  const first = await raw(t, tb.port, { clientId: 'bounded', clean: false });
  await subscribe(first, [{ topic: 'bounded/t', qos: 1 }]);
  await disconnect(tb, first, 'bounded');
  const dropped = tb.broker.metrics.publishDropped;
  const pub = await raw(t, tb.port, { clientId: 'bounded-pub' });
  for (let i = 0; i < 5; i++) await publish(pub, 'bounded/t', `m${i}`, 1);
  t.equal(tb.broker.metrics.publishDropped - dropped, 2, 'two messages dropped');
  t.equal(tb.broker.metrics.limitHits.maxQueued, 2, 'maxQueued hits counted');

  const back = await raw(t, tb.port, { clientId: 'bounded', clean: false });
  const got: IPublishPacket[] = [];
  for (let i = 0; i < 3; i++) {
    const p = await back.next('publish');
    got.push(p);
    await ack(back, p);
  }
  t.same(got.map(text), ['m0', 'm1', 'm2'], 'the first maxQueued messages are kept');
  t.same(await back.collect('publish', 250), [], 'the excess was dropped');
});

// ---- retained messages ----

t.test('retained: stored and sent with RETAIN 1 on subscribe [MQTT-3.3.1-8], forwarded live with RETAIN 0 [MQTT-3.3.1-9]', async (t) => {
  const tb = await setup(t);
  const live = await raw(t, tb.port, { clientId: 'ret-live' });
  await subscribe(live, [{ topic: 'ret/#', qos: 1 }]);
  const pub = await raw(t, tb.port, { clientId: 'ret-pub' });
  await publish(pub, 'ret/a', 'v1', 1, true);

  const forwarded = await live.next('publish');
  t.equal(text(forwarded), 'v1');
  t.equal(forwarded.retain, false, 'normal forwarding to an existing subscription has RETAIN 0');
  const live0 = await raw(t, tb.port, { clientId: 'ret-live0' });
  await subscribe(live0, [{ topic: 'ret/#', qos: 0 }]);
  t.equal((await live0.next('publish')).retain, true, 'the new subscription got the stored message');
  await publish(pub, 'ret/zero', 'v0', 0, true);
  const forwarded0 = await live0.next('publish');
  t.equal(text(forwarded0), 'v0');
  t.equal(forwarded0.retain, false, 'at QoS 0 too');

  const late = await raw(t, tb.port, { clientId: 'ret-late' });
  t.same(await subscribe(late, [{ topic: 'ret/+', qos: 1 }]), [1]);
  const stored = await late.next('publish');
  t.equal(stored.topic, 'ret/a');
  t.equal(text(stored), 'v1');
  t.equal(stored.retain, true, 'sent on subscribe with RETAIN 1');
  t.equal(stored.qos, 1);
});

t.test('retained: replaced by a new retained message, kept by a non-retained one, deleted by an empty payload [MQTT-3.3.1-10]', async (t) => {
  const tb = await setup(t);
  const pub = await raw(t, tb.port, { clientId: 'rep-pub' });
  const latest = async (id: string): Promise<string[]> => {
    const c = await raw(t, tb.port, { clientId: id });
    await subscribe(c, [{ topic: 'rep/t', qos: 0 }]);
    const got = await c.collect('publish', 250);
    t.ok(got.every((p) => p.retain), 'everything sent on subscribe is flagged retained');
    return got.map(text);
  };

  await publish(pub, 'rep/t', 'v1', 0, true);
  await publish(pub, 'rep/t', 'v2', 1, true);
  t.same(await latest('rep-1'), ['v2'], 'only the latest retained message is kept [MQTT-3.3.1-5]');
  await publish(pub, 'rep/t', 'not retained', 1, false);
  t.same(await latest('rep-2'), ['v2'], 'a non-retained message does not replace it [MQTT-3.3.1-12]');
  await publish(pub, 'rep/t', '', 1, true);
  t.same(await latest('rep-3'), [], 'an empty retained payload deletes it');
  t.equal(tb.broker.retained.size, 0, 'retained store is empty');
});

t.test('retained: re-sent when a subscription is replaced [MQTT-3.8.4-3]', async (t) => {
  const tb = await setup(t);
  const pub = await raw(t, tb.port, { clientId: 'resend-pub' });
  await publish(pub, 'resend/t', 'kept', 2, true);
  const sub = await raw(t, tb.port, { clientId: 'resend-sub' });
  t.same(await subscribe(sub, [{ topic: 'resend/#', qos: 0 }]), [0]);
  const first = await sub.next('publish');
  t.match(first, { topic: 'resend/t', retain: true, qos: 0 });
  t.same(await subscribe(sub, [{ topic: 'resend/#', qos: 2 }]), [2]);
  const again = await sub.next('publish');
  t.match(again, { topic: 'resend/t', retain: true, qos: 2 }, 'retained message re-sent at the new QoS');
  t.equal(text(again), 'kept');
});

// ---- SUBSCRIBE / UNSUBSCRIBE ----

t.test('SUBACK has the SUBSCRIBE packet id and grants the requested QoS per filter [MQTT-3.8.4-2] [MQTT-3.8.4-5]', async (t) => {
  const tb = await setup(t);
  const c = await raw(t, tb.port, { clientId: 'granted' });
  c.send({
    cmd: 'subscribe',
    messageId: 4242,
    subscriptions: [
      { topic: 'g/zero', qos: 0 },
      { topic: 'g/one', qos: 1 },
      { topic: 'g/+/two', qos: 2 },
    ],
  });
  const suback = await c.next('suback');
  t.equal(suback.messageId, 4242);
  t.same(suback.granted, [0, 1, 2], 'one return code per filter, equal to the requested QoS');
});

t.test('subscribing to the same filter twice replaces the subscription with the new QoS [MQTT-3.8.4-3]', async (t) => {
  const tb = await setup(t);
  const sub = await raw(t, tb.port, { clientId: 'replace' });
  t.same(await subscribe(sub, [{ topic: 'replace/t', qos: 2 }]), [2]);
  t.same(await subscribe(sub, [{ topic: 'replace/t', qos: 0 }]), [0]);
  t.equal(tb.broker.subscriptions.size, 1, 'one subscription in the broker');
  t.equal(tb.broker.sessions.get('replace')?.subscriptions.size, 1, 'one subscription in the session');
  const pub = await raw(t, tb.port, { clientId: 'replace-pub' });
  await publish(pub, 'replace/t', 'x', 2);
  const got = await sub.collect('publish', 250);
  t.equal(got.length, 1, 'one copy');
  t.equal(got[0]?.qos, 0, 'at the new QoS');
});

t.test('UNSUBSCRIBE stops delivery; UNSUBACK with the packet id, even for unknown filters [MQTT-3.10.4-4] [MQTT-3.10.4-5]', async (t) => {
  const tb = await setup(t);
  const sub = await raw(t, tb.port, { clientId: 'unsub' });
  await subscribe(sub, [
    { topic: 'unsub/a', qos: 1 },
    { topic: 'unsub/b', qos: 1 },
  ]);
  const pub = await raw(t, tb.port, { clientId: 'unsub-pub' });
  await publish(pub, 'unsub/a', 'before', 0);
  t.equal(text(await sub.next('publish')), 'before', 'delivered while subscribed');

  sub.send({ cmd: 'unsubscribe', messageId: 77, unsubscriptions: ['unsub/a'] });
  t.equal((await sub.next('unsuback')).messageId, 77, 'UNSUBACK with the same packet id');
  await publish(pub, 'unsub/a', 'after', 1);
  await publish(pub, 'unsub/b', 'other', 0);
  const got = await sub.collect('publish', 250);
  t.same(got.map(text), ['other'], 'no delivery for the removed filter; the other one still works');

  sub.send({ cmd: 'unsubscribe', messageId: 78, unsubscriptions: ['never/subscribed', 'unsub/+'] });
  t.equal((await sub.next('unsuback')).messageId, 78, 'UNSUBACK even when nothing matched');
  t.notOk(sub.closed);
  t.equal(tb.broker.subscriptions.size, 1, "'unsub/+' did not remove 'unsub/b' (exact comparison) [MQTT-3.10.4-1]");
});

// ---- wills ----

const will = (topic: string, payload: string, qos: QoS = 0, retain = false): IConnectPacket['will'] => ({ topic, payload: Buffer.from(payload), qos, retain });

t.test('will is published when the connection is closed without DISCONNECT [MQTT-3.1.2-8]', async (t) => {
  const tb = await setup(t);
  const got = await observer(t, tb, 'will-obs-1', 'will/#');
  const c = await raw(t, tb.port, { clientId: 'dies', will: will('will/dies', 'gone', 1) });
  t.same(got, [], 'nothing before the close');
  c.destroy();
  await waitFor(() => got.length >= 1, 3000, 'the will');
  t.same(got, [{ topic: 'will/dies', payload: 'gone', qos: 1, retain: false }]);
});

t.test('will is published on keepalive timeout', async (t) => {
  const tb = await setup(t);
  const got = await observer(t, tb, 'will-obs-2', 'will/#');
  const start = Date.now();
  const c = await raw(t, tb.port, { clientId: 'silent', keepalive: 1, will: will('will/silent', 'timed out') });
  await c.waitClosed(5000);
  await waitFor(() => got.length >= 1, 3000, 'the will');
  const elapsed = Date.now() - start;
  t.ok(elapsed >= 1000, `not before the keepalive allowance (after ${elapsed} ms)`);
  t.same(got.map((m) => m.payload), ['timed out']);
});

t.test('will is published when the session is taken over', async (t) => {
  const tb = await setup(t);
  const got = await observer(t, tb, 'will-obs-3', 'will/#');
  const old = await raw(t, tb.port, { clientId: 'twin', will: will('will/twin', 'replaced') });
  const fresh = await raw(t, tb.port, { clientId: 'twin' });
  await old.waitClosed();
  await waitFor(() => got.length >= 1, 3000, 'the will');
  t.same(got.map((m) => m.payload), ['replaced']);
  t.notOk(fresh.closed, 'the new connection stays');
  fresh.send({ cmd: 'pingreq' });
  await fresh.next('pingresp');
  // The new connection had no will: its DISCONNECT publishes nothing.
  await disconnect(tb, fresh, 'twin');
  await new Promise((r) => setTimeout(r, 250)); // bounded "nothing arrives" window
  t.equal(got.length, 1, 'no second will');
});

t.test('will is NOT published after DISCONNECT [MQTT-3.1.2-10]', async (t) => {
  const tb = await setup(t);
  const obs = await raw(t, tb.port, { clientId: 'will-obs-4' });
  await subscribe(obs, [{ topic: 'will/#', qos: 2 }]);
  const c = await raw(t, tb.port, { clientId: 'polite', will: will('will/polite', 'should not appear', 2, true) });
  await disconnect(tb, c, 'polite');
  t.same(await obs.collect('publish', 300), [], 'no will after a clean DISCONNECT');
  t.equal(tb.broker.retained.size, 0, 'and its retained will was not stored');
});

t.test('will QoS and retain are honoured; a retained will reaches a later subscriber with RETAIN 1', async (t) => {
  const tb = await setup(t);
  const got = await observer(t, tb, 'will-obs-5', 'will/#', 2);
  const c = await raw(t, tb.port, { clientId: 'heavy', will: will('will/heavy', 'last words', 2, true) });
  const light = await raw(t, tb.port, { clientId: 'light', will: will('will/light', 'qos1 will', 1, false) });
  c.destroy();
  await waitFor(() => got.length >= 1, 3000, 'the first will');
  light.destroy();
  await waitFor(() => got.length >= 2, 3000, 'the second will');
  t.same(got, [
    { topic: 'will/heavy', payload: 'last words', qos: 2, retain: false },
    { topic: 'will/light', payload: 'qos1 will', qos: 1, retain: false },
  ], 'delivered at the will QoS; live forwarding has RETAIN 0');

  const later = await raw(t, tb.port, { clientId: 'later' });
  await subscribe(later, [{ topic: 'will/#', qos: 2 }]);
  const retained = await later.collect('publish', 250);
  t.equal(retained.length, 1, 'only the retained will is stored');
  t.match(retained[0], { topic: 'will/heavy', qos: 2, retain: true });
  t.equal(retained[0] && text(retained[0]), 'last words');
});
