/**
 * Persistent sessions (MQTT 3.1.1 clean session 0, section 3.1.2.4) survive a restart of the real
 * gateway process: subscriptions, messages queued for an absent client, outgoing messages in
 * flight (PUBLISH not acknowledged, or PUBREL not completed) and incoming QoS 2 packet ids held
 * until PUBREL. Both a graceful stop (SIGTERM writes what is pending) and `kill -9` (what was
 * acknowledged is committed: "acknowledged means durable") are covered. Clients are real MQTT
 * clients over TCP: mqtt.js where the client's own behaviour is the point, RawClient where the
 * test needs the exact packets (DUP flags, withheld acknowledgements, re-sent packet ids).
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type MqttClient } from 'mqtt';
import type { IConnackPacket, IPublishPacket, Packet } from 'mqtt-packet';
import { waitFor } from '../helpers/broker';
import { within } from '../helpers/mqtt-client';
import { startGatewayProcess } from '../helpers/gateway';
import { freePort, type Running } from '../helpers/processes';
import { RawClient } from '../helpers/raw-client';

const dir = mkdtempSync(join(tmpdir(), 'edgeway-sessions-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** storage.flushInterval of every gateway here: short, so that the commit windows are short. */
const FLUSH = 20;
/**
 * How long a test waits for a change that no acknowledgement covers (a subscriber's PUBREC, a
 * message delivered but not acknowledged, a session deleted by clean session 1) to be committed
 * before it kills the gateway. Five flush intervals: the commit is scheduled at the change and
 * runs one interval later; the rest is slack for a loaded machine.
 */
const COMMIT_WINDOW = 5 * FLUSH;
/** Stated, not left to the default, because tests 3 and 4 count on the window size. */
const MAX_INFLIGHT = 20;

async function startGateway(t: Test, name: string, port: number, flushInterval = FLUSH): Promise<Running> {
  const config = join(dir, `${name}.yaml`);
  writeFileSync(
    config,
    `listeners:\n  - protocol: mqtt\n    host: 127.0.0.1\n    port: ${port}\nsys:\n  interval: 0\nlimits:\n  maxInflight: ${MAX_INFLIGHT}\nstorage:\n  path: ${join(dir, `${name}.db`)}\n  flushInterval: ${flushInterval}\n`,
  );
  return startGatewayProcess(t, config, { cwd: dir });
}

/** The `persistent sessions restored` line of a gateway's start, as [count, messages]. */
function restored(gw: Running): [number, number] | null {
  const m = /persistent sessions restored count=(\d+) messages=(\d+)/.exec(gw.stdout);
  return m === null ? null : [Number(m[1]), Number(m[2])];
}

async function stopGracefully(t: Test, gw: Running): Promise<void> {
  process.kill(gw.child.pid as number, 'SIGTERM');
  t.same(await gw.exited, { code: 0, signal: null }, 'SIGTERM: the gateway exits with code 0');
}

/** `kill -9` of the gateway this test started (by its PID). */
async function killHard(t: Test, gw: Running): Promise<void> {
  process.kill(gw.child.pid as number, 'SIGKILL');
  t.same(await gw.exited, { code: null, signal: 'SIGKILL' }, 'the gateway was killed with SIGKILL');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- mqtt.js clients ----

interface Delivery {
  readonly topic: string;
  readonly payload: string;
  readonly qos: number;
}

interface MqttSession {
  readonly client: MqttClient;
  readonly connack: IConnackPacket;
  /** Every PUBLISH as it came off the wire, in order (mqtt.js 'packetreceive'). */
  readonly wire: (Delivery & { readonly dup: boolean })[];
  /** Every message mqtt.js handed to the application ('message'): QoS 2 ones at PUBREL. */
  readonly messages: Delivery[];
}

/**
 * An mqtt.js client (no reconnects, ended when the test ends). `connect`, not `connectAsync`:
 * a resumed session's messages follow CONNACK at once, and the listeners must be attached before
 * the first of them is handled (a handler attached after `await connectAsync(...)` can miss them).
 */
async function mqttSession(t: Test, port: number, clientId: string, clean: boolean): Promise<MqttSession> {
  const client = connect(`mqtt://127.0.0.1:${port}`, { clientId, clean, reconnectPeriod: 0, connectTimeout: 3000 });
  const wire: MqttSession['wire'] = [];
  const messages: Delivery[] = [];
  client.on('packetreceive', (p: Packet) => {
    if (p.cmd === 'publish') wire.push({ topic: p.topic, payload: String(p.payload), qos: p.qos, dup: p.dup });
  });
  client.on('message', (topic, payload, p) => messages.push({ topic, payload: String(payload), qos: p.qos }));
  client.on('error', () => undefined); // a gateway killed under it
  t.teardown(() => within(client.endAsync(true), 'mqtt.js end').catch(() => undefined));
  const connack = await within(
    new Promise<IConnackPacket>((resolve, reject) => {
      client.once('connect', resolve);
      client.once('error', reject);
      client.once('close', () => reject(new Error(`${clientId}: connection closed before CONNACK`)));
    }),
    `CONNACK for ${clientId}`,
  );
  return { client, connack, wire, messages };
}

const key = (d: Delivery) => `${d.topic} ${d.payload} qos=${d.qos}`;

// ---- RawClient sessions ----

/** A RawClient with the CONNACK's session present flag (RawClient.connect keeps it to itself). */
async function rawSession(t: Test, port: number, clientId: string, clean: boolean): Promise<{ raw: RawClient; sessionPresent: boolean }> {
  const raw = await RawClient.connectSocket(port);
  t.teardown(() => raw.destroy());
  raw.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean, clientId, keepalive: 0 });
  const connack = await raw.next('connack');
  if (connack.returnCode !== 0) throw new Error(`${clientId}: CONNACK refused with ${connack.returnCode}`);
  return { raw, sessionPresent: connack.sessionPresent };
}

/** Publishes at QoS 1 with a RawClient and waits for every PUBACK (the messages are then durable). */
async function publishQos1(t: Test, port: number, clientId: string, messages: [string, string][]): Promise<void> {
  const { raw } = await rawSession(t, port, clientId, true);
  messages.forEach(([topic, payload], i) => raw.send({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, messageId: i + 1, retain: false, dup: false }));
  const acked: number[] = [];
  for (let i = 0; i < messages.length; i++) acked.push((await raw.next('puback')).messageId ?? 0);
  t.same(acked, messages.map((_, i) => i + 1), `${clientId}: every message PUBACKed, in order`);
  raw.disconnect();
}

/** Publishes one QoS 2 message with a RawClient through the whole PUBLISH/PUBREC/PUBREL/PUBCOMP exchange. */
async function publishQos2(raw: RawClient, topic: string, payload: string, messageId: number): Promise<void> {
  raw.send({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 2, messageId, retain: false, dup: false });
  await raw.next('pubrec');
  raw.send({ cmd: 'pubrel', messageId });
  await raw.next('pubcomp');
}

const payloads = (ps: IPublishPacket[]) => ps.map((p) => String(p.payload));

// ---- 1 and 2: queued messages and subscriptions ----

/**
 * A subscriber with clean session 0 subscribes (s/# at QoS 1, q2/# at QoS 2) and leaves; a
 * publisher sends 200 QoS 1 messages with a QoS 2 one after every 25th; `stop` ends the gateway;
 * a new gateway on the same database must give the subscriber everything, once, in order.
 */
async function queuedAcrossRestart(t: Test, name: string, stop: (t: Test, gw: Running) => Promise<void>): Promise<void> {
  const port = await freePort();
  const first = await startGateway(t, name, port);
  const clientId = `sub-${name}`;
  const sub = await mqttSession(t, port, clientId, false);
  t.equal(sub.connack.sessionPresent, false, 'first connection: no session yet');
  const granted = await within(sub.client.subscribeAsync({ 's/#': { qos: 1 }, 'q2/#': { qos: 2 } }), 'SUBACK');
  t.same(granted.map((g) => [g.topic, g.qos]), [['s/#', 1], ['q2/#', 2]], 'both subscriptions granted');
  await within(sub.client.endAsync(), 'subscriber DISCONNECT');

  const pub = await mqttSession(t, port, `pub-${name}`, true);
  // The order the gateway received them in is the order they went out on the wire.
  const sent: Delivery[] = [];
  pub.client.on('packetsend', (p: Packet) => {
    if (p.cmd === 'publish') sent.push({ topic: p.topic, payload: String(p.payload), qos: p.qos });
  });
  const publishes: Promise<unknown>[] = [];
  for (let i = 0; i < 200; i++) {
    publishes.push(pub.client.publishAsync(`s/${i}`, `m${i}`, { qos: 1 }));
    if (i % 25 === 24) publishes.push(pub.client.publishAsync(`q2/${i}`, `x${i}`, { qos: 2 }));
  }
  // Resolved by each PUBACK (QoS 1) or PUBCOMP (QoS 2). For `kill -9` nothing more is awaited:
  // an acknowledged message is a committed one.
  await within(Promise.all(publishes), 'the PUBACKs and PUBCOMPs of 208 messages', 10_000);
  await stop(t, first);
  t.equal(sent.length, 208, 'the publisher sent 200 QoS 1 and 8 QoS 2 messages');

  const second = await startGateway(t, name, port);
  t.same(restored(second), [1, 208], 'the gateway restored one session with 208 messages');
  const back = await mqttSession(t, port, clientId, false);
  t.equal(back.connack.sessionPresent, true, 'reconnected with clean session 0: session present');
  await waitFor(() => back.messages.length >= sent.length, 8000, 'the queued messages');
  t.same(back.wire.map(key), sent.map(key), 'every queued message arrives once, in publish order, at its QoS');
  t.equal(back.wire.filter((p) => p.dup).length, 0, 'never sent before: no DUP flag');
  t.same(back.messages.map(key).sort(), sent.map(key).sort(), 'and each is handed to the application once');

  // The subscriptions themselves survived, not only the queue.
  const later = await mqttSession(t, port, `pub-${name}-later`, true);
  await within(later.client.publishAsync('s/after', 'after-1', { qos: 1 }), 'PUBACK');
  await within(later.client.publishAsync('q2/after', 'after-2', { qos: 2 }), 'PUBCOMP');
  await waitFor(() => back.messages.length >= sent.length + 2, 3000, 'the messages published after the restart');
  t.same(
    back.wire.slice(sent.length).map(key),
    ['s/after after-1 qos=1', 'q2/after after-2 qos=2'],
    'both subscriptions still route new messages, each at its QoS',
  );
  t.equal(back.messages.length, sent.length + 2, 'nothing else arrived');
}

t.test('graceful restart: a clean-session-0 subscriber gets every message queued while it was away', (t) =>
  queuedAcrossRestart(t, 'graceful', stopGracefully),
);

t.test('kill -9 right after the last acknowledgement: every queued message is still there', (t) => queuedAcrossRestart(t, 'killed', killHard));

// ---- 3: outgoing QoS 1 in flight ----

t.test('messages sent but not PUBACKed before a kill -9 are re-sent with DUP, in order, with their packet ids', async (t) => {
  const port = await freePort();
  const first = await startGateway(t, 'inflight', port);
  const { raw: sub } = await rawSession(t, port, 'sub-inflight', false);
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 's/#', qos: 1 }] });
  t.same((await sub.next('suback')).granted, [1], 'subscribed at QoS 1');

  // Five more than the inflight window: 20 go out, 5 wait in the queue.
  const total = MAX_INFLIGHT + 5;
  const messages: [string, string][] = Array.from({ length: total }, (_, i) => [`s/${i}`, `m${i}`]);
  await publishQos1(t, port, 'pub-inflight', messages);
  const delivered: IPublishPacket[] = [];
  for (let i = 0; i < MAX_INFLIGHT; i++) delivered.push(await sub.next('publish'));
  t.same(payloads(delivered), messages.slice(0, MAX_INFLIGHT).map(([, p]) => p), 'the first 20 delivered, in order');
  t.ok(delivered.every((p) => p.qos === 1 && !p.dup), 'at QoS 1, without DUP');
  const ids = delivered.map((p) => p.messageId);
  t.equal(new Set(ids).size, MAX_INFLIGHT, 'with distinct packet ids');
  // Not PUBACKed. Nothing in the protocol acknowledges the sending side of a delivery, so no
  // event tells the test that the inflight state is committed (today the publisher's PUBACKs
  // happen to cover it, as the rows are recorded in the same turn; the contract does not say so):
  // wait a commit window (during which no 21st message may arrive: the window is full).
  t.same(await sub.collect('publish', COMMIT_WINDOW), [], 'no more than maxInflight unacknowledged');
  await killHard(t, first);

  // A flush interval longer than the rest of this life: nothing below waits for a commit (the
  // subscriber's PUBACKs are answered by nothing), so only the flush at SIGTERM can write the
  // acknowledgements, and the third start checks that it did.
  const second = await startGateway(t, 'inflight', port, 10_000);
  t.same(restored(second), [1, total], `the gateway restored one session with ${total} messages`);
  const { raw: back, sessionPresent } = await rawSession(t, port, 'sub-inflight', false);
  t.equal(sessionPresent, true, 'session present');
  const resent: IPublishPacket[] = [];
  for (let i = 0; i < MAX_INFLIGHT; i++) resent.push(await back.next('publish'));
  t.same(payloads(resent), payloads(delivered), 'the 20 unacknowledged messages again, in the same order [MQTT-4.4.0-1]');
  t.same(resent.map((p) => p.messageId), ids, 'with their original packet ids [MQTT-4.4.0-1]');
  t.same(resent.map((p) => [p.dup, p.qos]), resent.map(() => [true, 1]), 'all with DUP=1 at QoS 1 [MQTT-3.3.1-1]');
  t.same(await back.collect('publish', 100), [], 'the queued 5 wait for free inflight slots');

  for (const id of ids) back.send({ cmd: 'puback', messageId: id });
  const rest: IPublishPacket[] = [];
  for (let i = MAX_INFLIGHT; i < total; i++) rest.push(await back.next('publish'));
  t.same(payloads(rest), messages.slice(MAX_INFLIGHT).map(([, p]) => p), 'then the 5 queued ones, in order');
  t.ok(rest.every((p) => !p.dup), 'sent for the first time: no DUP');
  for (const p of rest) back.send({ cmd: 'puback', messageId: p.messageId });
  // A PINGRESP comes after the PUBACKs were handled (packets of one connection are handled in order).
  back.send({ cmd: 'pingreq' });
  await back.next('pingresp');
  back.disconnect();
  await back.waitClosed();

  const { raw: again, sessionPresent: present } = await rawSession(t, port, 'sub-inflight', false);
  t.equal(present, true, 'reconnected once more: session present');
  t.same(await again.collect('publish', 300), [], 'nothing is re-sent: every message was acknowledged');
  again.disconnect();
  await again.waitClosed();
  await stopGracefully(t, second);
  const third = await startGateway(t, 'inflight', port);
  t.same(restored(third), [1, 0], 'SIGTERM wrote the pending acknowledgements: the session is stored with no message');
});

// ---- 4: outgoing QoS 2 in pubrel state ----

t.test('an outgoing QoS 2 message PUBREC\'d before a kill -9 gets PUBREL after the restart, not PUBLISH', async (t) => {
  const port = await freePort();
  const first = await startGateway(t, 'pubrel', port);
  const { raw: sub } = await rawSession(t, port, 'sub-pubrel', false);
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'q2/#', qos: 2 }] });
  t.same((await sub.next('suback')).granted, [2], 'subscribed at QoS 2');
  const { raw: pub } = await rawSession(t, port, 'pub-pubrel', true);

  await publishQos2(pub, 'q2/a', 'A', 1);
  const a = await sub.next('publish');
  t.same([String(a.payload), a.qos, a.dup], ['A', 2, false], 'A delivered at QoS 2');
  sub.send({ cmd: 'pubrec', messageId: a.messageId });
  t.equal((await sub.next('pubrel')).messageId, a.messageId, 'PUBREL for A; the subscriber withholds PUBCOMP');
  // A second one, not even PUBREC'd: the restart must keep the order of the two.
  await publishQos2(pub, 'q2/b', 'B', 2);
  const b = await sub.next('publish');
  t.same([String(b.payload), b.qos, b.dup], ['B', 2, false], 'B delivered at QoS 2; the subscriber withholds PUBREC');
  t.not(b.messageId, a.messageId, 'with another packet id');
  // The PUBREC changed stored state (A: publish → pubrel) but no acknowledgement waits for it.
  await sleep(COMMIT_WINDOW);
  await killHard(t, first);

  const second = await startGateway(t, 'pubrel', port);
  t.same(restored(second), [1, 2], 'the gateway restored one session with 2 messages');
  const { raw: back, sessionPresent } = await rawSession(t, port, 'sub-pubrel', false);
  t.equal(sessionPresent, true, 'session present');
  const p1 = await back.next();
  const p2 = await back.next();
  t.same(
    [p1, p2].map((p) => (p.cmd === 'publish' ? [p.cmd, p.messageId, String(p.payload), p.qos, p.dup] : [p.cmd, p.messageId])),
    [
      ['pubrel', a.messageId],
      ['publish', b.messageId, 'B', 2, true],
    ],
    'PUBREL for A (not its PUBLISH again), then B re-sent with DUP, in the original order [MQTT-4.4.0-1]',
  );
  t.same(await back.collect('publish', 150), [], 'A is not sent again');

  back.send({ cmd: 'pubcomp', messageId: a.messageId });
  back.send({ cmd: 'pubrec', messageId: b.messageId });
  t.equal((await back.next('pubrel')).messageId, b.messageId, 'B: PUBREC answered by PUBREL');
  back.send({ cmd: 'pubcomp', messageId: b.messageId });
  back.send({ cmd: 'pingreq' });
  await back.next('pingresp');
  back.disconnect();
  await back.waitClosed();
  const { raw: again, sessionPresent: present } = await rawSession(t, port, 'sub-pubrel', false);
  t.equal(present, true, 'reconnected once more: session present');
  await sleep(200);
  t.same(again.received.map((p) => p.cmd), [], 'both deliveries complete: nothing re-sent');
});

// ---- 5: incoming QoS 2 ----

t.test('an incoming QoS 2 message PUBREC\'d before a kill -9 is delivered once; its id is free after PUBREL', async (t) => {
  const port = await freePort();
  const first = await startGateway(t, 'incoming', port);
  const { raw: watcher } = await rawSession(t, port, 'watcher-1', true);
  watcher.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'once/#', qos: 1 }] });
  await watcher.next('suback');
  const { raw: pub } = await rawSession(t, port, 'pub-once', false);
  pub.send({ cmd: 'publish', topic: 'once/x', payload: Buffer.from('first'), qos: 2, messageId: 7, retain: false, dup: false });
  t.equal((await pub.next('pubrec')).messageId, 7, 'PUBREC for id 7');
  // PUBREC means the held id is committed: killed at once, before PUBREL.
  await killHard(t, first);
  // Routed before the PUBREC was released, so already on its way to the watcher.
  t.same(payloads([await watcher.next('publish')]), ['first'], 'the first gateway delivered it once');

  const second = await startGateway(t, 'incoming', port);
  t.same(restored(second), [1, 0], "the publisher's session is restored (with its held id, no message)");
  const { raw: watcher2 } = await rawSession(t, port, 'watcher-2', true);
  watcher2.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'once/#', qos: 1 }] });
  await watcher2.next('suback');
  const { raw: pubBack, sessionPresent } = await rawSession(t, port, 'pub-once', false);
  t.equal(sessionPresent, true, 'the publisher reconnects with clean session 0: session present');
  // The client does not know whether its PUBLISH arrived: it sends it again [MQTT-4.4.0-1].
  pubBack.send({ cmd: 'publish', topic: 'once/x', payload: Buffer.from('first'), qos: 2, messageId: 7, retain: false, dup: true });
  t.equal((await pubBack.next('pubrec')).messageId, 7, 'the re-sent PUBLISH is answered by PUBREC');
  pubBack.send({ cmd: 'pubrel', messageId: 7 });
  t.equal((await pubBack.next('pubcomp')).messageId, 7, 'PUBREL answered by PUBCOMP');
  // Id 7 is released [MQTT-4.3.3-2]: the same id now starts a new message.
  pubBack.send({ cmd: 'publish', topic: 'once/x', payload: Buffer.from('second'), qos: 2, messageId: 7, retain: false, dup: false });
  t.equal((await pubBack.next('pubrec')).messageId, 7, 'the new message with id 7 gets PUBREC');
  pubBack.send({ cmd: 'pubrel', messageId: 7 });
  t.equal((await pubBack.next('pubcomp')).messageId, 7, 'and PUBCOMP');

  // Messages from one publisher reach a subscriber in order, so "second" is the barrier: had the
  // re-sent "first" been routed, it would have arrived before it.
  const got: IPublishPacket[] = [];
  for (;;) {
    const p = await watcher2.next('publish');
    got.push(p);
    watcher2.send({ cmd: 'puback', messageId: p.messageId });
    if (String(p.payload) === 'second' || got.length > 5) break;
  }
  t.same(payloads(got), ['second'], 'the re-sent message is not delivered again; the new one with id 7 is');
  t.same(payloads(await watcher2.collect('publish', 150)), [], 'and nothing else');
});

// ---- 6: clean session 1 ends a stored session ----

t.test('clean session 1 deletes a stored session, also from the database', async (t) => {
  const port = await freePort();
  const first = await startGateway(t, 'clean', port);
  const { raw: sub } = await rawSession(t, port, 'sub-clean', false);
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'c/#', qos: 1 }] });
  await sub.next('suback');
  sub.disconnect();
  await sub.waitClosed();
  await publishQos1(t, port, 'pub-clean-1', [
    ['c/1', 'one'],
    ['c/2', 'two'],
    ['c/3', 'three'],
  ]);
  await stopGracefully(t, first);

  const second = await startGateway(t, 'clean', port);
  // Without this the end of the test would pass for a gateway that stores nothing at all.
  t.same(restored(second), [1, 3], 'the stored session with its 3 messages was restored');
  const { raw: cleanOne, sessionPresent } = await rawSession(t, port, 'sub-clean', true);
  t.equal(sessionPresent, false, 'clean session 1: no session present [MQTT-3.2.2-1]');
  t.same(payloads(await cleanOne.collect('publish', 200)), [], 'the stored messages are discarded, not delivered');
  cleanOne.disconnect();
  await cleanOne.waitClosed();
  await publishQos1(t, port, 'pub-clean-2', [['c/4', 'four']]); // no subscriber any more
  // Neither the deletion nor the DISCONNECT is acknowledged: wait a commit window before kill -9.
  await sleep(COMMIT_WINDOW);
  await killHard(t, second);

  const third = await startGateway(t, 'clean', port);
  t.same(restored(third), [0, 0], 'no session restored');
  const { raw: back, sessionPresent: present } = await rawSession(t, port, 'sub-clean', false);
  t.equal(present, false, 'clean session 0 after the restart: no session present');
  await publishQos1(t, port, 'pub-clean-3', [['c/5', 'five']]);
  t.same(payloads(await back.collect('publish', 200)), [], 'nothing queued, and no subscription left to route to it');
});

t.test('MQTT 5 Session Expiry Interval across a restart: an expired session is not restored, a live one is [MQTT-4.1.0-2]', async (t) => {
  const port = await freePort();
  const first = await startGateway(t, 'expiry', port);
  /** An MQTT 5 subscriber with Clean Start 0 and `expiry` seconds, subscribed to `topic` at QoS 1, that leaves. */
  const leave = async (clientId: string, expiry: number, topic: string): Promise<void> => {
    const raw = await RawClient.connect(port, { protocolVersion: 5, clientId, clean: false, properties: { sessionExpiryInterval: expiry } });
    t.teardown(() => raw.destroy());
    raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] });
    await raw.next('suback');
    raw.disconnect();
    await raw.waitClosed();
  };
  const leftAt = Date.now();
  await leave('v5-short', 3, 'short/#');
  await leave('v5-long', 3600, 'long/#');
  await publishQos1(t, port, 'pub-expiry', [
    ['short/1', 'lost with the session'],
    ['long/1', 'kept'],
  ]);
  await stopGracefully(t, first);
  // The short session expires while the gateway is down.
  await sleep(Math.max(0, leftAt + 3000 - Date.now()));

  const second = await startGateway(t, 'expiry', port);
  t.same(restored(second), [1, 1], 'one session restored, with its one message');
  t.match(second.stdout, /persistent sessions restored .*expired=1/, 'the other one had expired and was not restored');
  const short = await RawClient.open(port, { protocolVersion: 5, clientId: 'v5-short', clean: false, properties: { sessionExpiryInterval: 3 } });
  t.teardown(() => short.client.destroy());
  t.equal(short.connack.sessionPresent, false, 'the expired session is not resumed');
  t.same(payloads(await short.client.collect('publish', 200)), [], 'and its queued message is gone');
  const long = await RawClient.open(port, { protocolVersion: 5, clientId: 'v5-long', clean: false, properties: { sessionExpiryInterval: 3600 } });
  t.teardown(() => long.client.destroy());
  t.equal(long.connack.sessionPresent, true, 'the live session is resumed');
  t.equal(String((await long.client.next('publish')).payload), 'kept', 'with its queued message');
});

t.test('a shared subscription of a persistent session survives a restart', async (t) => {
  const port = await freePort();
  const first = await startGateway(t, 'shared', port);
  const member = await RawClient.connect(port, { protocolVersion: 5, clientId: 'shared-member', clean: false, properties: { sessionExpiryInterval: 3600 } });
  t.teardown(() => member.destroy());
  member.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '$share/crew/jobs/#', qos: 1 }] });
  await member.next('suback');
  member.disconnect();
  await member.waitClosed();
  await stopGracefully(t, first);

  await startGateway(t, 'shared', port);
  // The only member is away: a QoS 1 message waits in its session.
  await publishQos1(t, port, 'pub-shared', [['jobs/1', 'for the crew']]);
  const back = await RawClient.open(port, { protocolVersion: 5, clientId: 'shared-member', clean: false, properties: { sessionExpiryInterval: 3600 } });
  t.teardown(() => back.client.destroy());
  t.equal(back.connack.sessionPresent, true, 'session resumed');
  t.equal(String((await back.client.next('publish')).payload), 'for the crew', 'the restored shared subscription routed the message to its member');
});
