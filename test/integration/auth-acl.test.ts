/**
 * The ACL enforced by the broker (issue 8 part 3), on a whole gateway over real TCP, for MQTT
 * 3.1.1 and 5: SUBACK codes, PUBACK/PUBREC 0x87, messages not delivered, a `#` subscriber that
 * gets only what it may read, retained messages filtered, wills, `%u` and `%c`, anonymous rules,
 * a Mosquitto ACL file as it is, and SIGHUP reloads of the rules.
 */
import t, { type Test } from 'tap';
import { writeFileSync } from 'node:fs';
import type { MqttClient } from 'mqtt';
import { authGateway, passwordLines, type AuthGateway } from '../helpers/auth';
import { waitFor } from '../helpers/broker';
import { client, publishPacket, subscribe } from '../helpers/mqtt5';
import { mqttClient, within } from '../helpers/mqtt-client';

const ACL = `# Mosquitto syntax: anonymous rules first
topic read public/#

user alice
topic readwrite plant/#
topic deny plant/secret
topic read $SYS/broker/publish/#

user admin
topic readwrite #

pattern readwrite users/%u/#
pattern write devices/%c/up
`;

const USERS = { alice: 'alice-pw', bob: 'bob-pw', admin: 'admin-pw' };

async function setup(t: Test, options: { allowAnonymous?: boolean } = {}): Promise<AuthGateway> {
  return authGateway(t, { passwd: await passwordLines(USERS), acl: ACL }, options);
}

/** Everything `c` receives, as `topic=payload` (retained ones as `topic=payload (retained)`). */
function inbox(c: MqttClient): string[] {
  const got: string[] = [];
  c.on('message', (topic, payload, packet) => got.push(`${topic}=${payload.toString()}${packet.retain ? ' (retained)' : ''}`));
  return got;
}

async function login(t: Test, g: AuthGateway, user: keyof typeof USERS, protocolVersion: 4 | 5 = 4, clientId?: string): Promise<MqttClient> {
  return mqttClient(t, g.tb, { username: user, password: USERS[user], protocolVersion, ...(clientId === undefined ? {} : { clientId }) });
}

t.test('SUBSCRIBE: denied filters get 0x80 (3.1.1) or 0x87 (MQTT 5), each filter on its own', async (t) => {
  const g = await setup(t);
  const filters = ['plant/#', 'other/#', 'users/alice/#', 'users/bob/#', 'plant/secret', '#'];
  const v5 = await client(t, g.tb, 'alice5', { username: 'alice', password: Buffer.from(USERS.alice) });
  t.same(await subscribe(v5, filters.map((topic) => ({ topic, qos: 1 as const }))), [1, 0x87, 1, 0x87, 0x87, 1]);
  const v4 = await client(t, g.tb, 'alice4', { protocolVersion: 4, username: 'alice', password: Buffer.from(USERS.alice) });
  t.same(await subscribe(v4, filters.map((topic) => ({ topic, qos: 1 as const }))), [1, 0x80, 1, 0x80, 0x80, 1]);
  t.equal(g.gateway.broker.metrics.denied.subscribe, 6);
});

t.test('PUBLISH: MQTT 5 gets 0x87 for QoS 1 and 2; 3.1.1 is acknowledged; neither is delivered', async (t) => {
  const g = await setup(t);
  const admin = await login(t, g, 'admin');
  const seen = inbox(admin);
  await within(admin.subscribeAsync('#', { qos: 2 }), 'subscribe');

  const v5 = await client(t, g.tb, 'alice5', { username: 'alice', password: Buffer.from(USERS.alice) });
  v5.send(publishPacket('other/x', 'v5-q1', 1, { messageId: 1 }));
  t.equal((await v5.next('puback')).reasonCode, 0x87, 'PUBACK 0x87 Not authorized');
  v5.send(publishPacket('plant/secret', 'v5-q2', 2, { messageId: 2 }));
  t.equal((await v5.next('pubrec')).reasonCode, 0x87, 'PUBREC 0x87 ends the QoS 2 exchange');
  v5.send(publishPacket('other/x', 'v5-q0', 0));

  const v4 = await client(t, g.tb, 'alice4', { protocolVersion: 4, username: 'alice', password: Buffer.from(USERS.alice) });
  v4.send(publishPacket('other/x', 'v4-q1', 1, { messageId: 3 }));
  t.equal((await v4.next('puback')).messageId, 3, '3.1.1 QoS 1: acknowledged all the same (as Mosquitto), so it is not re-sent');
  v4.send(publishPacket('other/x', 'v4-q2', 2, { messageId: 4 }));
  t.equal((await v4.next('pubrec')).messageId, 4);
  v4.send({ cmd: 'pubrel', messageId: 4 });
  t.equal((await v4.next('pubcomp')).messageId, 4, '3.1.1 QoS 2: the exchange completes');

  // Allowed ones arrive after the refused ones on the same connection: once they are in, the refused ones would have been too.
  v5.send(publishPacket('plant/ok', 'v5-allowed', 1, { messageId: 5 }));
  t.equal((await v5.next('puback')).reasonCode ?? 0, 0, 'an allowed one is acknowledged with success');
  v4.send(publishPacket('plant/ok', 'v4-allowed', 0));
  await waitFor(() => seen.includes('plant/ok=v5-allowed') && seen.includes('plant/ok=v4-allowed'), 3000, 'the allowed messages');
  t.same(seen, ['plant/ok=v5-allowed', 'plant/ok=v4-allowed'], 'nothing refused reached the subscriber');
  t.equal(g.gateway.broker.metrics.denied.publish, 5);
});

t.test('delivery: a # subscriber gets only what it may read; retained messages are filtered too', async (t) => {
  const g = await setup(t);
  const admin = await login(t, g, 'admin');
  // Retained before anyone subscribes: one readable by alice, one denied to her, one outside her rules.
  await within(admin.publishAsync('plant/open', 'r1', { qos: 1, retain: true }), 'publish');
  await within(admin.publishAsync('plant/secret', 'r2', { qos: 1, retain: true }), 'publish');
  await within(admin.publishAsync('other/thing', 'r3', { qos: 1, retain: true }), 'publish');

  for (const protocolVersion of [4, 5] as const) {
    const alice = await login(t, g, 'alice', protocolVersion, `alice-v${protocolVersion}`);
    const got = inbox(alice);
    await within(alice.subscribeAsync('#', { qos: 1 }), 'subscribe #');
    for (const [topic, payload] of [
      ['plant/secret', 'denied'],
      ['other/thing', 'outside'],
      ['users/bob/inbox', 'bob only'],
      ['users/alice/inbox', 'pattern %u'],
      ['plant/live', 'allowed'],
    ]) {
      await within(admin.publishAsync(topic as string, payload as string, { qos: 1 }), 'publish');
    }
    await waitFor(() => got.includes('plant/live=allowed'), 3000, 'the last allowed message');
    t.same(got.sort(), ['plant/live=allowed', 'plant/open=r1 (retained)', 'users/alice/inbox=pattern %u'], `MQTT ${protocolVersion}: only what alice may read`);
    await alice.endAsync();
  }
  t.ok(g.gateway.broker.metrics.denied.read >= 8, 'the deliveries refused are counted');
});

t.test('shared subscriptions: a message a member may not read goes to a member that may; dropped only when none may', async (t) => {
  const g = await setup(t);
  const admin = await login(t, g, 'admin', 5, 'admin-member');
  const alice = await login(t, g, 'alice', 5, 'alice-member');
  const adminGot = inbox(admin);
  const aliceGot = inbox(alice);
  await within(admin.subscribeAsync('$share/g/plant/#', { qos: 1 }), 'admin joins');
  await within(alice.subscribeAsync('$share/g/plant/#', { qos: 1 }), 'alice joins');
  const publisher = await login(t, g, 'admin', 4, 'publisher');
  // Round-robin would hand every other message to alice, who may not read plant/secret.
  for (let i = 0; i < 10; i++) await within(publisher.publishAsync('plant/secret', `s${i}`, { qos: 1 }), 'publish');
  for (let i = 0; i < 10; i++) await within(publisher.publishAsync('plant/open', `o${i}`, { qos: 1 }), 'publish');
  await waitFor(() => adminGot.length + aliceGot.length >= 20, 3000, 'all 20 messages delivered');
  const secret = Array.from({ length: 10 }, (_, i) => `plant/secret=s${i}`);
  t.same(adminGot.filter((m) => m.startsWith('plant/secret')), secret, 'every plant/secret message went to the member that may read it, in order');
  t.same(aliceGot.filter((m) => m.startsWith('plant/secret')), [], 'none to the member that may not');
  t.same([...adminGot, ...aliceGot].filter((m) => m.startsWith('plant/open')).sort(), Array.from({ length: 10 }, (_, i) => `plant/open=o${i}`).sort(), 'plant/open: each message to one member');
  t.ok(aliceGot.some((m) => m.startsWith('plant/open')), 'alice still takes her turn with what she may read');
  t.equal(g.gateway.broker.metrics.denied.read, 0, 'nothing refused: a member took every message');

  await admin.unsubscribeAsync('$share/g/plant/#');
  await within(publisher.publishAsync('plant/secret', 'nobody', { qos: 1 }), 'publish');
  await within(publisher.publishAsync('plant/open', 'last', { qos: 1 }), 'publish');
  await waitFor(() => aliceGot.includes('plant/open=last'), 3000, 'the last message');
  t.notOk(aliceGot.includes('plant/secret=nobody'), 'no member may read it: dropped');
  t.equal(g.gateway.broker.metrics.denied.read, 1, 'and counted once');
});

t.test('%c: a device may publish to its own topic only; anonymous clients get the anonymous rules', async (t) => {
  const g = await setup(t, { allowAnonymous: true });
  const admin = await login(t, g, 'admin');
  const seen = inbox(admin);
  await within(admin.subscribeAsync('devices/#', { qos: 1 }), 'subscribe');
  const bob = await login(t, g, 'bob', 5, 'sensor-7');
  await within(bob.publishAsync('devices/sensor-7/up', 'mine', { qos: 1 }), 'own topic');
  const refused = await bob.publishAsync('devices/sensor-8/up', 'not mine', { qos: 1 }).then(
    () => 0,
    (err: { code?: number }) => err.code ?? -1,
  );
  t.equal(refused, 0x87, "another device's topic: 0x87");
  await waitFor(() => seen.length > 0, 3000, 'the allowed message');
  t.same(seen, ['devices/sensor-7/up=mine']);

  const anonymous = await mqttClient(t, g.tb, { clientId: 'visitor' });
  const got = inbox(anonymous);
  // mqtt.js rejects a SUBACK with a failure code; the packet is on the error.
  const granted = await within(anonymous.subscribeAsync(['public/#', 'plant/#'], { qos: 0 }), 'subscribe').then(
    (list) => list.map((g) => g.qos),
    (err: { packet?: { granted?: number[] } }) => err.packet?.granted,
  );
  t.same(granted, [0, 0x80], 'public/# readable; plant/# refused (0x80)');
  await within(anonymous.publishAsync('public/news', 'by anonymous', { qos: 1 }), 'publish');
  await within(admin.publishAsync('public/news', 'by admin', { qos: 1 }), 'publish');
  await waitFor(() => got.includes('public/news=by admin'), 3000, 'the admin message');
  t.same(got, ['public/news=by admin'], 'anonymous may read public/# but not write it');
});

t.test('wills: one to a topic its client may not write is dropped when it would be published', async (t) => {
  const g = await setup(t);
  const admin = await login(t, g, 'admin');
  const seen = inbox(admin);
  await within(admin.subscribeAsync('#', { qos: 1 }), 'subscribe');
  const denied = await client(t, g.tb, 'will-denied', { protocolVersion: 5, username: 'alice', password: Buffer.from(USERS.alice), will: { topic: 'other/will', payload: Buffer.from('denied'), qos: 1, retain: false } });
  const allowed = await client(t, g.tb, 'will-allowed', { protocolVersion: 4, username: 'alice', password: Buffer.from(USERS.alice), will: { topic: 'plant/will', payload: Buffer.from('allowed'), qos: 1, retain: false } });
  denied.destroy();
  await waitFor(() => g.gateway.broker.metrics.denied.publish === 1, 3000, 'the denied will');
  allowed.destroy();
  await waitFor(() => seen.includes('plant/will=allowed'), 3000, 'the allowed will');
  t.same(seen, ['plant/will=allowed']);
});

t.test('SIGHUP reload of the ACL: a rule removed denies at once; a broken file keeps the rules in use', async (t) => {
  const g = await setup(t);
  const alice = await login(t, g, 'alice', 5);
  await within(alice.publishAsync('plant/a', '1', { qos: 1 }), 'allowed before');

  writeFileSync(g.aclFile, ACL.replace('topic readwrite plant/#', 'topic read plant/#'));
  const reloaded = await g.gateway.reload(g.config(), () => undefined);
  t.same(reloaded.auth?.problems, []);
  const code = await alice.publishAsync('plant/a', '2', { qos: 1 }).then(
    () => 0,
    (err: { code?: number }) => err.code ?? -1,
  );
  t.equal(code, 0x87, 'write access removed: refused on the same connection');

  writeFileSync(g.aclFile, `${ACL}\ntopic sideways plant/#\n`);
  const broken = await g.gateway.reload(g.config(), () => undefined);
  t.same(broken.auth?.problems, [`${g.aclFile}:15: access must be read, write, readwrite or deny, not "sideways"`]);
  const still = await alice.publishAsync('plant/a', '3', { qos: 1 }).then(
    () => 0,
    (err: { code?: number }) => err.code ?? -1,
  );
  t.equal(still, 0x87, 'the rules in use (read only) stay');
});
