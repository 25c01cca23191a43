import t, { type Test } from 'tap';
import type { IPublishPacket, ISubscription } from 'mqtt-packet';
import { waitFor, type TestBroker } from '../helpers/broker';
import { mqttClient, within } from '../helpers/mqtt-client';
import { brokerFor, client, publishPacket, subscribe } from '../helpers/mqtt5';
import { RawClient } from '../helpers/raw-client';

/**
 * MQTT 5 subscriptions (MQTT 5.0 sections 3.8.3, 3.3.4, 4.8.2): No Local, Retain As Published,
 * Retain Handling, Subscription Identifiers, and shared subscriptions — round-robin among the
 * group's members, for 3.1.1 clients too, with the messages of a member that leaves handed to
 * the others.
 */





/** Publishes with a fresh 3.1.1 client and waits until the broker has handled every message (PINGRESP). */
let publishers = 0;
async function publishAll(t: Test, tb: TestBroker, messages: IPublishPacket[]): Promise<void> {
  const pub = await client(t, tb, `pub-${++publishers}`, { protocolVersion: 4 });
  for (const m of messages) pub.send(m);
  pub.send({ cmd: 'pingreq' });
  await pub.next('pingresp');
}

const payloads = (ps: IPublishPacket[]) => ps.map((p) => String(p.payload));

t.test('No Local: a client does not get its own messages on that subscription [MQTT-3.8.3-3]', async (t) => {
  const tb = await brokerFor(t);
  const self = await client(t, tb, 'no-local');
  t.same(await subscribe(self, [{ topic: 'nl/#', qos: 0, nl: true }]), [0]);
  self.send(publishPacket('nl/a', 'mine'));
  await publishAll(t, tb, [publishPacket('nl/a', 'theirs')]);
  t.same(payloads([await self.next('publish')]), ['theirs'], 'another client’s message arrives');
  t.same(await self.collect('publish', 200), [], 'its own does not');

  // An overlapping subscription without No Local still delivers it, once.
  t.same(await subscribe(self, [{ topic: 'nl/a', qos: 0 }]), [0]);
  self.send(publishPacket('nl/a', 'mine again'));
  t.same(payloads([await self.next('publish')]), ['mine again'], 'through the other subscription');
  t.same(await self.collect('publish', 200), [], 'once');
});

t.test('Retain As Published: the RETAIN flag of a forwarded message as published, or 0 [MQTT-3.3.1-12] [MQTT-3.3.1-13]', async (t) => {
  const tb = await brokerFor(t);
  const keeps = await client(t, tb, 'rap-1');
  await subscribe(keeps, [{ topic: 'rap/#', qos: 0, rap: true }]);
  const clears = await client(t, tb, 'rap-0');
  await subscribe(clears, [{ topic: 'rap/#', qos: 0 }]);
  const v4 = await client(t, tb, 'rap-v4', { protocolVersion: 4 });
  await subscribe(v4, [{ topic: 'rap/#', qos: 1 }]);
  await publishAll(t, tb, [publishPacket('rap/x', 'retained', 1, { messageId: 1, retain: true }), publishPacket('rap/y', 'plain', 0)]);
  t.same((await keeps.next('publish')).retain, true, 'Retain As Published 1: retained as published');
  t.same((await keeps.next('publish')).retain, false, 'and not retained as published');
  t.same((await clears.next('publish')).retain, false, 'Retain As Published 0: flag 0');
  t.same((await v4.next('publish')).retain, false, '3.1.1: flag 0 for a live message');
});

t.test('Retain Handling 0, 1 and 2 [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11]', async (t) => {
  const tb = await brokerFor(t);
  await publishAll(t, tb, [publishPacket('rh/kept', 'stored', 1, { messageId: 1, retain: true })]);
  const c = await client(t, tb, 'rh');
  const retainedAfter = async (subscription: ISubscription): Promise<string[]> => {
    await subscribe(c, [subscription]);
    return payloads(await c.collect('publish', 150));
  };
  t.same(await retainedAfter({ topic: 'rh/#', qos: 0, rh: 1 }), ['stored'], '1, new subscription: sent');
  t.same(await retainedAfter({ topic: 'rh/#', qos: 0, rh: 1 }), [], '1, existing subscription: not sent');
  t.same(await retainedAfter({ topic: 'rh/#', qos: 0, rh: 0 }), ['stored'], '0: sent, new or not');
  t.same(await retainedAfter({ topic: 'rh/+', qos: 0, rh: 2 }), [], '2: never sent');
});

t.test('Subscription Identifiers: every matching one in the one copy of a message [MQTT-3.3.4-3] [MQTT-3.3.4-4]', async (t) => {
  const tb = await brokerFor(t);
  await publishAll(t, tb, [publishPacket('sid/r', 'retained', 1, { messageId: 1, retain: true })]);
  const c = await client(t, tb, 'sid');
  t.same(await subscribe(c, [{ topic: 'sid/#', qos: 1 }], 5), [1]);
  const retained = await c.next('publish');
  t.equal(retained.properties?.subscriptionIdentifier, 5, 'a retained message sent on SUBSCRIBE carries the new subscription’s identifier');
  c.send({ cmd: 'puback', messageId: retained.messageId ?? 0 });
  t.same(await subscribe(c, [{ topic: 'sid/+/x', qos: 0 }, { topic: 'sid/none', qos: 0 }], 7), [0, 0]);
  await publishAll(t, tb, [publishPacket('sid/a/x', 'both', 1, { messageId: 2 }), publishPacket('sid/b', 'one', 0)]);
  const both = await c.next('publish');
  t.equal(String(both.payload), 'both');
  t.same([both.properties?.subscriptionIdentifier].flat().sort(), [5, 7], 'a message matching both: one PUBLISH with both identifiers');
  t.equal(both.qos, 1, 'at the higher QoS of the two');
  c.send({ cmd: 'puback', messageId: both.messageId ?? 0 });
  const one = await c.next('publish');
  t.equal(one.properties?.subscriptionIdentifier, 5, 'a message matching one: its identifier only');
  t.same(await c.collect('publish', 150), [], 'one copy each');

  // Queued while away, the identifiers come along.
  const away = await client(t, tb, 'sid-away', { clean: false, properties: { sessionExpiryInterval: 60 } });
  await subscribe(away, [{ topic: 'sid/q', qos: 1 }], 9);
  away.disconnect();
  await waitFor(() => tb.broker.sessions.get('sid-away')?.owner === null, 3000, 'the client to leave');
  await publishAll(t, tb, [publishPacket('sid/q', 'queued', 1, { messageId: 3 })]);
  const back = await client(t, tb, 'sid-away', { clean: false, properties: { sessionExpiryInterval: 60 } });
  t.equal((await back.next('publish')).properties?.subscriptionIdentifier, 9, 'a queued message keeps its identifier');

  // mqtt.js sees them.
  const js = await mqttClient(t, tb, { protocolVersion: 5, clientId: 'sid-js' });
  const got = new Promise<IPublishPacket>((resolve) => js.once('message', (_t, _p, packet) => resolve(packet)));
  await within(js.subscribeAsync('sid/js', { qos: 0, properties: { subscriptionIdentifier: 42 } }), 'mqtt.js subscribe');
  await publishAll(t, tb, [publishPacket('sid/js', 'js')]);
  t.equal((await within(got, 'mqtt.js message')).properties?.subscriptionIdentifier, 42, 'mqtt.js gets the identifier');
});

t.test('shared subscriptions: each message to one member, in turn, 3.1.1 and MQTT 5 alike [MQTT-4.8.2-3]', async (t) => {
  const tb = await brokerFor(t);
  const members = [await client(t, tb, 'share-a'), await client(t, tb, 'share-b', { protocolVersion: 4 }), await client(t, tb, 'share-c')];
  for (const m of members) t.same(await subscribe(m, [{ topic: '$share/workers/jobs/#', qos: 1 }]), [1], 'granted');
  const plain = await client(t, tb, 'not-shared');
  await subscribe(plain, [{ topic: 'jobs/#', qos: 0 }]);
  // One member also has an ordinary subscription: it gets those copies besides its share.
  await subscribe(members[2] as RawClient, [{ topic: 'jobs/#', qos: 0 }]);

  await publishAll(t, tb, Array.from({ length: 30 }, (_, i) => publishPacket(`jobs/${i}`, `job ${i}`, 1, { messageId: i + 1 })));
  const shares: string[][] = [];
  for (const [i, m] of members.entries()) {
    const own: string[] = [];
    const extra = i === 2 ? 30 : 0;
    for (let n = 0; n < 10 + extra; n++) {
      const p = await m.next('publish');
      if (p.qos === 1) {
        own.push(String(p.payload));
        m.send({ cmd: 'puback', messageId: p.messageId ?? 0 });
      }
    }
    shares.push(own);
    t.same(await m.collect('publish', 100), [], `member ${i}: nothing more`);
  }
  t.same(shares.map((s) => s.length), [10, 10, 10], 'fair: ten each, round-robin');
  t.same(shares.flat().sort(), Array.from({ length: 30 }, (_, i) => `job ${i}`).sort(), 'every job once, to exactly one member');
  const all: IPublishPacket[] = [];
  for (let i = 0; i < 30; i++) all.push(await plain.next('publish'));
  t.equal(all.length, 30, 'a non-shared subscriber gets all 30');
});

t.test('shared subscriptions: the messages a member that leaves was not sent, or did not acknowledge at QoS 1, go to the others', async (t) => {
  const tb = await brokerFor(t, { limits: { maxInflight: 2 } });
  const quitter = await client(t, tb, 'quitter', { clean: false, properties: { sessionExpiryInterval: 60 } });
  await subscribe(quitter, [{ topic: '$share/g/work/#', qos: 2 }]);
  const stayer = await client(t, tb, 'stayer');
  await subscribe(stayer, [{ topic: '$share/g/work/#', qos: 2 }]);

  // Eight QoS 1 messages and one QoS 2: the quitter gets every other one, acknowledges none.
  const messages = [...Array.from({ length: 8 }, (_, i) => publishPacket(`work/${i}`, `w${i}`, 1, { messageId: i + 1 })), publishPacket('work/q2', 'exactly once', 2, { messageId: 9 })];
  await publishAll(t, tb, messages);
  const quitterGot = payloads([await quitter.next('publish'), await quitter.next('publish')]);
  t.equal(tb.broker.sessions.get('quitter')?.inflight.size, 2, 'the quitter holds two unacknowledged (maxInflight 2)');
  const queuedForQuitter = tb.broker.sessions.get('quitter')?.queue.length ?? 0;
  t.ok(queuedForQuitter > 0, `and ${queuedForQuitter} more wait in its queue`);

  const stayerGot: string[] = [];
  const drain = async (count: number) => {
    for (let i = 0; i < count; i++) {
      const p = await stayer.next('publish');
      stayerGot.push(String(p.payload));
      if (p.qos === 1) stayer.send({ cmd: 'puback', messageId: p.messageId ?? 0 });
      if (p.qos === 2) stayer.send({ cmd: 'pubrec', messageId: p.messageId ?? 0 });
    }
  };
  await drain(9 - 2 - queuedForQuitter);
  quitter.destroy();
  // Everything the quitter had not acknowledged is handed over.
  await drain(2 + queuedForQuitter);
  t.same(stayerGot.slice().sort(), payloads(messages.map((m) => ({ ...m, cmd: 'publish' }) as IPublishPacket)).sort(), 'the stayer ends up with all nine messages, each once');
  t.same(await stayer.collect('publish', 200), [], 'and no duplicates');
  t.ok(quitterGot.every((p) => stayerGot.includes(p)), 'including the two the quitter had been sent');
  t.equal(tb.broker.sessions.get('quitter')?.queue.length, 0, 'nothing left in the quitter’s session');
});

t.test('shared subscriptions: a QoS 2 message already sent stays with its member when it leaves [MQTT-4.8.2-4]', async (t) => {
  const tb = await brokerFor(t);
  const holder = await client(t, tb, 'holder', { clean: false, properties: { sessionExpiryInterval: 60 } });
  await subscribe(holder, [{ topic: '$share/h/q2', qos: 2 }]);
  const other = await client(t, tb, 'other-member');
  await subscribe(other, [{ topic: '$share/h/q2', qos: 2 }]);
  await publishAll(t, tb, [publishPacket('q2', 'first', 2, { messageId: 1 })]);
  const first = await holder.next('publish');
  t.equal(String(first.payload), 'first', 'the first member got it');
  holder.destroy();
  await waitFor(() => tb.broker.sessions.get('holder')?.owner === null, 3000, 'the member to leave');
  t.same(await other.collect('publish', 200), [], 'not handed to the other member');
  const back = await client(t, tb, 'holder', { clean: false, properties: { sessionExpiryInterval: 60 } });
  const again = await back.next('publish');
  t.same([String(again.payload), again.dup], ['first', true], 'completed with the same member when it returns');
});

t.test('shared subscriptions: invalid filters, No Local, retained messages, leaving the group [MQTT-4.8.2-1] [MQTT-4.8.2-2] [MQTT-3.8.3-4]', async (t) => {
  const tb = await brokerFor(t);
  for (const filter of ['$share/g', '$share//x', '$share/g+/x', '$share/g/a#']) {
    const c = await client(t, tb, `bad-share-${filter.length}`);
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: filter, qos: 0 }] });
    t.equal((await c.next('disconnect')).reasonCode, 0x8f, `${filter}: DISCONNECT 0x8F (topic filter invalid)`);
  }
  const v4 = await client(t, tb, 'bad-share-v4', { protocolVersion: 4 });
  v4.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '$share//x', qos: 0 }] });
  await v4.waitClosed();
  t.pass('3.1.1: the connection is closed');
  const nl = await client(t, tb, 'share-nl');
  nl.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '$share/g/x', qos: 0, nl: true }] });
  t.equal((await nl.next('disconnect')).reasonCode, 0x82, 'No Local on a shared subscription: DISCONNECT 0x82');

  await publishAll(t, tb, [publishPacket('kept/x', 'retained', 1, { messageId: 1, retain: true })]);
  const member = await client(t, tb, 'share-retained');
  await subscribe(member, [{ topic: '$share/r/kept/#', qos: 1 }]);
  t.same(await member.collect('publish', 200), [], 'no retained messages for a shared subscription');
  t.equal(tb.broker.sharedGroups.get('$share/r/kept/#')?.size, 1, 'one member');
  member.send({ cmd: 'unsubscribe', messageId: 2, unsubscriptions: ['$share/r/kept/#'] });
  t.same((await member.next('unsuback')).granted, [0], 'UNSUBACK 0x00');
  t.notOk(tb.broker.sharedGroups.has('$share/r/kept/#'), 'the group is gone with its last member');
  await publishAll(t, tb, [publishPacket('kept/x', 'after', 0)]);
  t.same(await member.collect('publish', 200), [], 'and routes nothing any more');
});
