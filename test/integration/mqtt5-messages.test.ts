import t, { type Test } from 'tap';
import type { IConnectPacket, IPublishPacket } from 'mqtt-packet';
import { waitFor, type TestBroker } from '../helpers/broker';
import { mqttClient, within } from '../helpers/mqtt-client';
import { brokerFor, client, open, publishPacket, subscribe } from '../helpers/mqtt5';

/**
 * MQTT 5 application messages (MQTT 5.0 sections 3.1.3.2, 3.3.2.3): properties passed through
 * unchanged, Payload Format Indicator and Response Topic checked, Message Expiry Interval
 * enforced on queues and retained messages and counted down when forwarded, and the Will Delay
 * Interval with will suppression on a resumed session.
 */





/** Resolves once `ms` have passed since `since` (a Date.now() value). */
async function until(since: number, ms: number): Promise<void> {
  await waitFor(() => Date.now() - since > ms, ms + 2000, `${ms} ms to pass`);
}

const ALL_PROPERTIES = {
  payloadFormatIndicator: true,
  contentType: 'application/json',
  responseTopic: 'replies/42',
  correlationData: Buffer.from([0, 1, 2, 255]),
  userProperties: { unit: 'C', sensor: ['a', 'b'] },
};

t.test('User Properties, Response Topic, Correlation Data, Payload Format Indicator and Content Type pass through unchanged [MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-18] [MQTT-3.3.2-20]', async (t) => {
  const tb = await brokerFor(t);
  const v5 = await client(t, tb, 'props-v5');
  await subscribe(v5, [{ topic: 'props/#', qos: 1 }]);
  const v4 = await client(t, tb, 'props-v4', { protocolVersion: 4 });
  await subscribe(v4, [{ topic: 'props/#', qos: 1 }]);
  const js = await mqttClient(t, tb, { protocolVersion: 5, clientId: 'props-js' });
  const jsGot = new Promise<IPublishPacket>((resolve) => js.once('message', (_t, _p, packet) => resolve(packet)));
  await within(js.subscribeAsync('props/#', { qos: 1 }), 'mqtt.js subscribe');

  const pub = await client(t, tb, 'props-pub');
  pub.send(publishPacket('props/a', '{"t":21.5}', 1, { messageId: 1, retain: true, properties: ALL_PROPERTIES }));
  t.equal((await pub.next('puback')).reasonCode, 0);

  const got = await v5.next('publish');
  t.same(got.properties, ALL_PROPERTIES, 'the MQTT 5 subscriber gets every property as sent, User Properties in order');
  t.equal(String(got.payload), '{"t":21.5}');
  const plain = await v4.next('publish');
  t.equal(String(plain.payload), '{"t":21.5}', 'the 3.1.1 subscriber gets the payload');
  t.equal(plain.properties, undefined, 'and no properties');
  const jsPacket = await within(jsGot, 'mqtt.js message');
  t.same(jsPacket.properties?.userProperties, ALL_PROPERTIES.userProperties, 'mqtt.js sees the User Properties');
  t.same(jsPacket.properties?.correlationData, ALL_PROPERTIES.correlationData, 'and the Correlation Data');

  // The retained copy keeps them for a later subscriber.
  const later = await client(t, tb, 'props-later');
  await subscribe(later, [{ topic: 'props/a', qos: 1 }]);
  const retained = await later.next('publish');
  t.equal(retained.retain, true);
  t.same(retained.properties, ALL_PROPERTIES, 'the retained message carries its properties');
});

t.test('Payload Format Indicator 1 with a payload that is not UTF-8: PUBACK/PUBREC 0x99, DISCONNECT 0x99 at QoS 0, CONNACK 0x99 for a will', async (t) => {
  const tb = await brokerFor(t);
  const sub = await client(t, tb, 'pfi-sub');
  await subscribe(sub, [{ topic: 'pfi/#', qos: 2 }]);
  const pub = await client(t, tb, 'pfi-pub');
  const notUtf8 = Buffer.from([0x61, 0xff, 0xfe]);
  pub.send(publishPacket('pfi/q1', notUtf8, 1, { messageId: 1, properties: { payloadFormatIndicator: true } }));
  const puback = await pub.next('puback');
  t.same([puback.messageId, puback.reasonCode], [1, 0x99], 'QoS 1: PUBACK 0x99 (payload format invalid)');
  pub.send(publishPacket('pfi/q2', notUtf8, 2, { messageId: 2, properties: { payloadFormatIndicator: true } }));
  const pubrec = await pub.next('pubrec');
  t.same([pubrec.messageId, pubrec.reasonCode], [2, 0x99], 'QoS 2: PUBREC 0x99');
  // A failing PUBREC ends the exchange: the same id is a new message [MQTT-4.3.3-9].
  pub.send(publishPacket('pfi/q2', 'now valid', 2, { messageId: 2, properties: { payloadFormatIndicator: true } }));
  t.same([(await pub.next('pubrec')).reasonCode], [0], 'the same packet id, valid this time: accepted as a new message');
  pub.send({ cmd: 'pubrel', messageId: 2 });
  await pub.next('pubcomp');
  pub.send(publishPacket('pfi/binary', notUtf8, 1, { messageId: 3 }));
  t.equal((await pub.next('puback')).reasonCode, 0, 'without the indicator any payload is fine');

  const delivered: string[] = [];
  for (let i = 0; i < 2; i++) {
    const p = await sub.next('publish');
    delivered.push(p.topic);
    if (p.qos === 1) sub.send({ cmd: 'puback', messageId: p.messageId ?? 0 });
    if (p.qos === 2) sub.send({ cmd: 'pubrec', messageId: p.messageId ?? 0 });
  }
  t.same(delivered, ['pfi/q2', 'pfi/binary'], 'only the valid messages were routed');

  pub.send(publishPacket('pfi/q0', notUtf8, 0, { properties: { payloadFormatIndicator: true } }));
  t.equal((await pub.next('disconnect')).reasonCode, 0x99, 'QoS 0 has no acknowledgement: DISCONNECT 0x99');

  const { connack } = await open(t, tb, {
    clientId: 'pfi-will',
    will: { topic: 'pfi/will', payload: notUtf8, qos: 0, retain: false, properties: { payloadFormatIndicator: true } },
  });
  t.equal(connack.reasonCode, 0x99, 'a will whose payload breaks its indicator: CONNACK 0x99');
});

t.test('a Response Topic with a wildcard is a protocol error [MQTT-3.3.2-14]', async (t) => {
  const tb = await brokerFor(t);
  const pub = await client(t, tb, 'bad-response');
  pub.send(publishPacket('ask', 'q', 0, { properties: { responseTopic: 'replies/#' } }));
  t.equal((await pub.next('disconnect')).reasonCode, 0x82, 'DISCONNECT 0x82');
});

t.test('Message Expiry Interval: forwarded counted down, expired messages not sent from a session queue [MQTT-3.3.2-5] [MQTT-3.3.2-6]', async (t) => {
  const tb = await brokerFor(t);
  const live = await client(t, tb, 'expiry-live');
  await subscribe(live, [{ topic: 'exp/#', qos: 1 }]);
  const away = await client(t, tb, 'expiry-away', { clean: false, properties: { sessionExpiryInterval: 300 } });
  await subscribe(away, [{ topic: 'exp/#', qos: 1 }]);
  away.disconnect();
  await waitFor(() => tb.broker.sessions.get('expiry-away')?.owner === null, 3000, 'the subscriber to leave');
  const v4 = await client(t, tb, 'expiry-v4', { protocolVersion: 4 });
  await subscribe(v4, [{ topic: 'exp/#', qos: 1 }]);

  const pub = await client(t, tb, 'expiry-pub');
  pub.send(publishPacket('exp/short', 'short', 1, { messageId: 1, properties: { messageExpiryInterval: 1 } }));
  pub.send(publishPacket('exp/long', 'long', 1, { messageId: 2, properties: { messageExpiryInterval: 60 } }));
  pub.send(publishPacket('exp/never', 'never', 1, { messageId: 3 }));
  for (let i = 0; i < 3; i++) await pub.next('puback');
  // The broker had them by now: their expiry counts from no later than this.
  const ackedAt = Date.now();

  const now = [await live.next('publish'), await live.next('publish'), await live.next('publish')];
  t.same(now.map((p) => [p.topic, p.properties?.messageExpiryInterval]), [['exp/short', 1], ['exp/long', 60], ['exp/never', undefined]], 'delivered at once: the full intervals');
  const v4Got = [await v4.next('publish'), await v4.next('publish'), await v4.next('publish')];
  t.same(v4Got.map((p) => p.topic), ['exp/short', 'exp/long', 'exp/never'], 'a 3.1.1 subscriber gets them too, without the property');

  await until(ackedAt, 1000);
  const back = await client(t, tb, 'expiry-away', { clean: false, properties: { sessionExpiryInterval: 300 } });
  const queued = [await back.next('publish'), await back.next('publish')];
  t.same(queued.map((p) => p.topic), ['exp/long', 'exp/never'], 'the expired message is not delivered from the queue');
  const remaining = queued[0]?.properties?.messageExpiryInterval ?? 0;
  t.ok(remaining <= 59 && remaining > 0, `the interval left is forwarded: ${remaining} s of 60 after waiting over a second`);
  t.equal(tb.broker.metrics.publishExpired, 1, 'counted as expired');
});

t.test('Message Expiry Interval of a retained message: counted down for a later subscriber, gone once expired', async (t) => {
  const tb = await brokerFor(t);
  const pub = await client(t, tb, 'retain-exp-pub');
  pub.send(publishPacket('rexp/short', 'short', 1, { messageId: 1, retain: true, properties: { messageExpiryInterval: 1 } }));
  pub.send(publishPacket('rexp/long', 'long', 1, { messageId: 2, retain: true, properties: { messageExpiryInterval: 60 } }));
  await pub.next('puback');
  await pub.next('puback');
  const ackedAt = Date.now();
  t.equal(tb.broker.retained.size, 2, 'both retained');
  await until(ackedAt, 1000);

  const sub = await client(t, tb, 'retain-exp-sub');
  await subscribe(sub, [{ topic: 'rexp/#', qos: 1 }]);
  const got = await sub.next('publish');
  t.equal(got.topic, 'rexp/long', 'only the message that has not expired');
  const remaining = got.properties?.messageExpiryInterval ?? 0;
  t.ok(remaining <= 59 && remaining > 0, `with the interval left: ${remaining} s`);
  t.same(await sub.collect('publish', 200), [], 'nothing else');
  t.equal(tb.broker.retained.get('rexp/short'), undefined, 'the expired one is gone from the retained store');
});

t.test('an in-process publisher’s Message Expiry Interval counts too', async (t) => {
  const tb = await brokerFor(t);
  tb.broker.context('test').publish({ topic: 'inproc/exp', payload: Buffer.from('short'), qos: 1, retain: true, properties: { messageExpiryInterval: 1 } });
  const publishedAt = Date.now();
  const early = await client(t, tb, 'inproc-early');
  await subscribe(early, [{ topic: 'inproc/#', qos: 1 }]);
  const got = await early.next('publish');
  t.equal(got.properties?.messageExpiryInterval, 1, 'forwarded with its interval');
  await until(publishedAt, 1000);
  const late = await client(t, tb, 'inproc-late');
  await subscribe(late, [{ topic: 'inproc/#', qos: 1 }]);
  t.same(await late.collect('publish', 200), [], 'expired a second later');
});

/** A watcher of `wills/#` and a client with a will on `wills/<clientId>` and the given CONNECT. */
async function willSetup(t: Test, tb: TestBroker, clientId: string, connect: Partial<IConnectPacket>, willProperties: NonNullable<IConnectPacket['will']>['properties'] = {}) {
  const watcher = await client(t, tb, `watch-${clientId}`);
  await subscribe(watcher, [{ topic: 'wills/#', qos: 0 }]);
  const withWill = await client(t, tb, clientId, {
    will: { topic: `wills/${clientId}`, payload: Buffer.from(`${clientId} lost`), qos: 0, retain: false, properties: willProperties },
    ...connect,
  });
  return { watcher, client: withWill };
}

t.test('Will Delay Interval: the will waits, then goes out; its properties pass through [MQTT-3.1.2-8] [MQTT-3.1.3-10]', async (t) => {
  const tb = await brokerFor(t);
  const { watcher, client } = await willSetup(t, tb, 'delayed', { clean: false, properties: { sessionExpiryInterval: 60 } }, { willDelayInterval: 1, contentType: 'text/plain', userProperties: { why: 'lost' } });
  const closedAt = Date.now();
  client.destroy();
  await waitFor(() => tb.broker.delayedWills.size === 1, 3000, 'the will to wait');
  t.same(await watcher.collect('publish', 200), [], 'not published at once');
  const will = await watcher.next('publish', 5000);
  t.ok(Date.now() - closedAt >= 1000, 'published once the second of delay had passed');
  t.equal(will.topic, 'wills/delayed');
  t.same(will.properties, { contentType: 'text/plain', userProperties: { why: 'lost' } }, 'with its properties (the delay is not one of them)');
});

t.test('a session resumed within the Will Delay Interval suppresses the will; Clean Start publishes it at once [MQTT-3.1.3-9]', async (t) => {
  const tb = await brokerFor(t);
  const resumed = await willSetup(t, tb, 'resumes', { clean: false, properties: { sessionExpiryInterval: 60 } }, { willDelayInterval: 30 });
  resumed.client.destroy();
  await waitFor(() => tb.broker.delayedWills.size === 1, 3000, 'the will to wait');
  const again = await open(t, tb, { clientId: 'resumes', clean: false, properties: { sessionExpiryInterval: 60 } });
  t.equal(again.connack.sessionPresent, true, 'session resumed');
  t.equal(tb.broker.delayedWills.size, 0, 'the waiting will is dropped');
  t.same(await resumed.watcher.collect('publish', 200), [], 'and never published');

  // Taken over by a connection that resumes the session: the old connection's will is suppressed too.
  const takeover = await client(t, tb, 'resumes', { clean: false, properties: { sessionExpiryInterval: 60 }, will: { topic: 'wills/resumes', payload: Buffer.from('x'), qos: 0, retain: false, properties: { willDelayInterval: 30 } } });
  t.equal((await again.client.next('disconnect')).reasonCode, 0x8e, 'the earlier connection is taken over');
  t.equal(tb.broker.delayedWills.size, 0, 'its will is not waiting');
  t.same(await resumed.watcher.collect('publish', 200), [], 'nor published');
  t.notOk(takeover.closed);

  const cleaned = await willSetup(t, tb, 'cleans', { clean: false, properties: { sessionExpiryInterval: 60 } }, { willDelayInterval: 30 });
  cleaned.client.destroy();
  await waitFor(() => tb.broker.delayedWills.size === 1, 3000, 'the will to wait');
  const fresh = await client(t, tb, 'cleans', { clean: true });
  t.equal((await cleaned.watcher.next('publish')).topic, 'wills/cleans', 'Clean Start ends the session, and the will goes out with it');
  t.notOk(fresh.closed);
});

t.test('the will goes out when the session ends before its delay: session expiry, or none at all', async (t) => {
  const tb = await brokerFor(t);
  const expiring = await willSetup(t, tb, 'expires-first', { clean: false, properties: { sessionExpiryInterval: 1 } }, { willDelayInterval: 600 });
  expiring.client.destroy();
  t.equal((await expiring.watcher.next('publish', 5000)).topic, 'wills/expires-first', 'published when the 1 s session expired, not after 600 s');
  t.notOk(tb.broker.sessions.has('expires-first'), 'the session is gone');

  const noSession = await willSetup(t, tb, 'no-session', { clean: true }, { willDelayInterval: 600 });
  noSession.client.destroy();
  t.equal((await noSession.watcher.next('publish')).topic, 'wills/no-session', 'Session Expiry Interval 0: the session ends with the connection, the will goes out at once');

  const normal = await willSetup(t, tb, 'says-bye', { clean: false, properties: { sessionExpiryInterval: 60 } }, { willDelayInterval: 1 });
  normal.client.send({ cmd: 'disconnect', reasonCode: 0 });
  await normal.client.waitClosed();
  t.equal(tb.broker.delayedWills.size, 0, 'DISCONNECT 0x00: no will waits [MQTT-3.1.2-10]');
});

t.test("a will's Message Expiry Interval counts from its publication, not from CONNECT", async (t) => {
  const tb = await brokerFor(t);
  const c = await client(t, tb, 'will-expiry', { will: { topic: 'wills/retained', payload: Buffer.from('bye'), qos: 1, retain: true, properties: { messageExpiryInterval: 1 } } });
  // Longer than the interval between CONNECT and the will's publication.
  await until(Date.now(), 1000);
  c.destroy();
  await waitFor(() => tb.broker.retained.get('wills/retained') !== undefined, 3000, 'the will to be published');
  const publishedAt = Date.now();
  const reader = await client(t, tb, 'will-reader');
  await subscribe(reader, [{ topic: 'wills/#', qos: 1 }]);
  const will = await reader.next('publish');
  t.equal(String(will.payload), 'bye', 'the retained will is there after publication');
  t.equal(will.properties?.messageExpiryInterval, 1, 'with its interval counted from the publication');
  await until(publishedAt, 1000);
  const late = await client(t, tb, 'will-late-reader');
  await subscribe(late, [{ topic: 'wills/#', qos: 1 }]);
  t.same(await late.collect('publish', 200), [], 'a second after the publication it has expired');
});
