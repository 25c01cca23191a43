import t, { type Test } from 'tap';
import type { IConnackPacket, IConnectPacket } from 'mqtt-packet';
import { startBroker, waitFor, type TestBroker } from '../helpers/broker';
import { mqttClient, within } from '../helpers/mqtt-client';
import { RawClient } from '../helpers/raw-client';

/**
 * CONNECT / CONNACK, connection life cycle, session takeover and keepalive (MQTT 3.1.1 sections
 * 3.1, 3.2, 3.12, 4.1), over real TCP against an in-process broker.
 */

async function setup(t: Test, config: Record<string, unknown> = {}): Promise<TestBroker> {
  const tb = await startBroker(config);
  t.teardown(() => tb.stop());
  return tb;
}

/** Opens a raw socket (closed at teardown). */
async function rawSocket(t: Test, port: number, protocolVersion = 4): Promise<RawClient> {
  const c = await RawClient.connectSocket(port, protocolVersion);
  t.teardown(() => c.destroy());
  return c;
}

/** Sends CONNECT on a new raw socket and returns the client with the CONNACK it got (accepted or not). */
async function rawConnect(t: Test, port: number, connect: Partial<IConnectPacket> = {}): Promise<{ client: RawClient; connack: IConnackPacket }> {
  const client = await rawSocket(t, port, connect.protocolVersion ?? 4);
  client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: '', keepalive: 0, ...connect });
  const connack = await client.next('connack');
  return { client, connack };
}


/** Subscribes `client` to `topic`, publishes to it and checks that the message comes back. */
async function assertRoundTrip(t: Test, client: RawClient, topic: string, payload: string): Promise<void> {
  client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 0 }] });
  const suback = await client.next('suback');
  t.same(suback.granted, [0], 'subscribed');
  client.send({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 0, dup: false, retain: false });
  const pub = await client.next('publish');
  t.equal(pub.topic, topic);
  t.equal(pub.payload.toString(), payload, 'message routed back to the client');
}

t.test('CONNACK 0: a valid CONNECT is accepted, sessionPresent 0 for a clean session [MQTT-3.2.2-1]', async (t) => {
  const tb = await setup(t);
  const { client, connack } = await rawConnect(t, tb.port, { clientId: 'accepted-1', clean: true });
  t.equal(connack.returnCode, 0, 'return code 0 (accepted)');
  t.equal(connack.sessionPresent, false, 'sessionPresent 0 with clean session 1');
  t.ok(tb.broker.clients.has('accepted-1'), 'broker knows the client');
  await assertRoundTrip(t, client, 'connect/accepted', 'hello');

  // The mqtt.js client connects too and sees the same result.
  const mq = await mqttClient(t, tb, { clientId: 'accepted-mqttjs' });
  t.ok(mq.connected, 'mqtt.js client connected');
  t.ok(tb.broker.clients.has('accepted-mqttjs'));
});

t.test('CONNACK 1: unsupported protocol level 6 is refused and closed [MQTT-3.1.2-2]', async (t) => {
  const tb = await setup(t);
  const client = await rawSocket(t, tb.port);
  // CONNECT, protocol name "MQTT", level 6, flags: clean session, keepalive 60, client id "abc".
  const body = [0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x06, 0x02, 0x00, 0x3c, 0x00, 0x03, 0x61, 0x62, 0x63];
  client.sendBytes([0x10, body.length, ...body]);
  const connack = await client.next('connack');
  t.equal(connack.returnCode, 1, 'return code 1 (unacceptable protocol version)');
  t.equal(connack.sessionPresent, false);
  await client.waitClosed();
  t.equal(tb.broker.clients.size, 0, 'no client registered');
});

t.test('CONNACK 1: a protocol name that does not match the level is refused and closed [MQTT-3.1.2-1] [MQTT-3.1.2-2]', async (t) => {
  const tb = await setup(t);
  // "MQTT" is 3.1.1's name, and level 3 is not supported under it; "MQIsdp" is 3.1's name, used
  // with level 4. Both get CONNACK 0x01 and a close (as with Mosquitto).
  for (const [name, level] of [
    ['MQTT', 3],
    ['MQIsdp', 4],
  ] as const) {
    const client = await rawSocket(t, tb.port);
    const nameBytes = [...Buffer.from(name)];
    const body = [0x00, nameBytes.length, ...nameBytes, level, 0x02, 0x00, 0x3c, 0x00, 0x03, 0x61, 0x62, 0x63];
    client.sendBytes([0x10, body.length, ...body]);
    const connack = await client.next('connack');
    t.equal(connack.returnCode, 1, `${name} level ${level}: return code 1 (unacceptable protocol version)`);
    await client.waitClosed();
  }
  t.equal(tb.broker.clients.size, 0, 'no client registered');

  // The matching pair for 3.1 is accepted.
  const client = await rawSocket(t, tb.port);
  const body = [0x00, 0x06, ...Buffer.from('MQIsdp'), 0x03, 0x02, 0x00, 0x3c, 0x00, 0x03, 0x61, 0x62, 0x63];
  client.sendBytes([0x10, body.length, ...body]);
  t.equal((await client.next('connack')).returnCode, 0, 'MQIsdp level 3 (MQTT 3.1) is accepted');
});

t.test('CONNACK 2: empty client id with clean session 0 is refused [MQTT-3.1.3-8]', async (t) => {
  const tb = await setup(t);
  const client = await rawSocket(t, tb.port);
  // Raw bytes, as mqtt-packet refuses to encode this: CONNECT "MQTT" level 4, flags 0 (clean
  // session 0), keepalive 0, zero-length client id.
  const body = [0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00];
  client.sendBytes([0x10, body.length, ...body]);
  const connack = await client.next('connack');
  t.equal(connack.returnCode, 2, 'return code 2 (identifier rejected)');
  t.equal(connack.sessionPresent, false, 'sessionPresent 0 on a refusal [MQTT-3.2.2-4]');
  await client.waitClosed();
  t.equal(tb.broker.clients.size, 0, 'no client registered');
  t.equal(tb.broker.sessions.size, 0, 'no session created');
});

t.test('empty client id with clean session 1 gets an assigned id and works [MQTT-3.1.3-6]', async (t) => {
  const tb = await setup(t);
  const a = await rawConnect(t, tb.port, { clientId: '', clean: true });
  const b = await rawConnect(t, tb.port, { clientId: '', clean: true });
  t.equal(a.connack.returnCode, 0, 'first accepted');
  t.equal(b.connack.returnCode, 0, 'second accepted');
  const ids = [...tb.broker.clients.keys()];
  t.equal(ids.length, 2, 'two distinct clients (neither took the other over)');
  for (const id of ids) t.ok(id.length > 0, `assigned id ${JSON.stringify(id)} is not empty`);
  t.not(ids[0], ids[1], 'assigned ids are unique');
  t.notOk(a.client.closed, 'first client still open');
  await assertRoundTrip(t, a.client, 'connect/assigned/a', 'from a');
  await assertRoundTrip(t, b.client, 'connect/assigned/b', 'from b');
});

t.test('MQTT 5 CONNECT under 3.1\'s protocol name gets reason 0x84 in a v5-format CONNACK [MQTT-3.1.2-1]', async (t) => {
  const tb = await setup(t);
  const client = await rawSocket(t, tb.port, 5);
  const bytes: Buffer[] = [];
  client.socket.on('data', (chunk: Buffer) => bytes.push(chunk));
  client.send({ cmd: 'connect', protocolId: 'MQIsdp', protocolVersion: 5, clean: true, clientId: 'v5-client', keepalive: 30 });
  const connack = await client.next('connack');
  t.equal(connack.reasonCode, 0x84, 'reason code 0x84 (unsupported protocol version)');
  t.equal(connack.sessionPresent, false);
  await client.waitClosed();
  // v5 CONNACK: flags, reason code and a property length (0); a 3.1.1 one would be 20 02 00 01.
  t.same([...Buffer.concat(bytes)], [0x20, 0x03, 0x00, 0x84, 0x00], 'exact v5 CONNACK bytes, then close');
  t.equal(tb.broker.clients.size, 0);
});

t.test('a first packet other than CONNECT closes the connection [MQTT-3.1.0-1]', async (t) => {
  const tb = await setup(t);
  const first: { name: string; send: (c: RawClient) => void }[] = [
    { name: 'PINGREQ', send: (c) => c.send({ cmd: 'pingreq' }) },
    { name: 'SUBSCRIBE', send: (c) => c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'x', qos: 0 }] }) },
    { name: 'PUBLISH', send: (c) => c.send({ cmd: 'publish', topic: 'x', payload: Buffer.from('p'), qos: 0, dup: false, retain: false }) },
  ];
  for (const { name, send } of first) {
    const client = await rawSocket(t, tb.port);
    send(client);
    await client.waitClosed();
    t.same(client.received, [], `${name} first: closed without any answer`);
  }
  t.equal(tb.broker.clients.size, 0);
});

t.test('a second CONNECT is a protocol violation and closes the connection [MQTT-3.1.0-2]', async (t) => {
  const tb = await setup(t);
  const { client, connack } = await rawConnect(t, tb.port, { clientId: 'twice' });
  t.equal(connack.returnCode, 0);
  client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'twice', keepalive: 0 });
  await client.waitClosed();
  t.same(client.received, [], 'no second CONNACK');
  await waitFor(() => !tb.broker.clients.has('twice'), 2000, 'the client to be unregistered');
  t.pass('client unregistered');
});

t.test('session takeover closes the old connection; the new one works [MQTT-3.1.4-2]', async (t) => {
  const tb = await setup(t);
  const { client: old, connack } = await rawConnect(t, tb.port, { clientId: 'takeover' });
  t.equal(connack.returnCode, 0);
  const fresh = await mqttClient(t, tb, { clientId: 'takeover' });
  await old.waitClosed();
  t.ok(old.closed, 'old connection closed by the broker');
  t.ok(fresh.connected, 'new connection still connected');
  t.equal(tb.broker.clients.size, 1, 'one client registered for the id');

  const got: string[] = [];
  fresh.on('message', (topic, payload) => got.push(`${topic}=${payload.toString()}`));
  await within(fresh.subscribeAsync('takeover/t', { qos: 1 }), 'SUBACK');
  await within(fresh.publishAsync('takeover/t', 'still works', { qos: 1 }), 'PUBACK');
  await waitFor(() => got.length >= 1, 3000, 'the message on the new connection');
  t.same(got, ['takeover/t=still works']);
  t.ok(fresh.connected, 'new connection not closed by the takeover');
});

t.test('takeover of a persistent session: the new connection gets the session and its unacknowledged messages [MQTT-3.1.4-2]', async (t) => {
  const tb = await setup(t);
  const { client: old } = await rawConnect(t, tb.port, { clientId: 'heir', clean: false });
  old.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'heir/#', qos: 1 }] });
  await old.next('suback');
  const pub = await mqttClient(t, tb, { clientId: 'heir-pub' });
  await within(pub.publishAsync('heir/x', 'unacked', { qos: 1 }), 'PUBACK');
  const first = await old.next('publish');
  t.equal(first.payload.toString(), 'unacked');

  // The old connection is still open (never acknowledged): the new one takes it over at once.
  const { client: heir, connack } = await rawConnect(t, tb.port, { clientId: 'heir', clean: false });
  t.equal(connack.sessionPresent, true, 'the session survives the takeover');
  await old.waitClosed();
  const again = await heir.next('publish');
  t.match(again, { topic: 'heir/x', qos: 1, dup: true, messageId: first.messageId }, 'unacknowledged message re-sent with DUP');
  heir.send({ cmd: 'puback', messageId: again.messageId });
  await within(pub.publishAsync('heir/y', 'live', { qos: 1 }), 'PUBACK');
  const live = await heir.next('publish');
  t.equal(live.payload.toString(), 'live', 'the subscription carried over');
  t.equal(live.dup, false);
});

t.test('sessionPresent reflects a stored session [MQTT-3.2.2-1] [MQTT-3.2.2-2]', async (t) => {
  const tb = await setup(t);
  const connect = async (clean: boolean): Promise<boolean> => {
    const { client, connack } = await rawConnect(t, tb.port, { clientId: 'sp', clean });
    t.equal(connack.returnCode, 0);
    client.disconnect();
    await client.waitClosed();
    await waitFor(() => !tb.broker.clients.has('sp'), 2000, 'the client to be unregistered');
    return connack.sessionPresent;
  };
  t.equal(await connect(false), false, 'first persistent connect: no session yet');
  t.equal(await connect(false), true, 'persistent reconnect: session present [MQTT-3.2.2-2]');
  t.equal(await connect(true), false, 'clean session: sessionPresent 0 [MQTT-3.2.2-1]');
  t.equal(await connect(false), false, 'the clean session discarded the stored one');
  t.equal(await connect(false), true, 'and a new persistent session is present again');
});

t.test('keepalive: a silent client with keepalive 1 is dropped after about 1.5 s [MQTT-3.1.2-24]', async (t) => {
  const tb = await setup(t);
  const start = Date.now();
  const { client, connack } = await rawConnect(t, tb.port, { clientId: 'silent', keepalive: 1 });
  t.equal(connack.returnCode, 0);
  await client.waitClosed(5000);
  const elapsed = Date.now() - start;
  t.ok(elapsed >= 1000, `not dropped before 1 s (dropped after ${elapsed} ms)`);
  await waitFor(() => !tb.broker.clients.has('silent'), 2000, 'the client to be unregistered');
});

t.test('keepalive: PINGREQ gets PINGRESP and keeps the connection alive [MQTT-3.12.4-1]', async (t) => {
  const tb = await setup(t);
  const { client } = await rawConnect(t, tb.port, { clientId: 'pinger', keepalive: 1 });
  const start = Date.now();
  let pings = 0;
  // 2.2 s of pings every 400 ms: well past the 1.5 s a silent client would get.
  while (Date.now() - start < 2200) {
    client.send({ cmd: 'pingreq' });
    const resp = await client.next('pingresp', 2000);
    t.equal(resp.cmd, 'pingresp');
    pings++;
    await new Promise((r) => setTimeout(r, 400));
  }
  t.ok(pings >= 4, `${pings} PINGREQ/PINGRESP exchanges`);
  t.notOk(client.closed, 'a pinging client is not dropped');
  t.ok(tb.broker.clients.has('pinger'));
});

t.test('a connection that never sends CONNECT is dropped after limits.connectTimeout', async (t) => {
  const tb = await setup(t, { limits: { connectTimeout: 300 } });
  const start = Date.now();
  const idle = await rawSocket(t, tb.port);
  // A client that does connect in time is not affected by the connect timeout.
  const { client: ok } = await rawConnect(t, tb.port, { clientId: 'in-time', keepalive: 0 });
  await idle.waitClosed(3000);
  const elapsed = Date.now() - start;
  t.ok(elapsed >= 200, `not closed early (closed after ${elapsed} ms)`);
  t.same(idle.received, [], 'nothing sent to the idle connection');
  t.equal(tb.broker.connectionCount, 1, 'only the connected client remains');
  t.equal(tb.broker.metrics.limitHits.connectTimeout, 1, 'counted (limitHits.connectTimeout)');

  await waitFor(() => Date.now() - start > 600, 1000, 'past the connect timeout');
  ok.send({ cmd: 'pingreq' });
  await ok.next('pingresp');
  t.notOk(ok.closed, 'the connected client is still open after the connect timeout');
});

t.test('ill-formed UTF-8 in the will topic or the user name closes the connection without CONNACK 0 [MQTT-1.5.3-1]', async (t) => {
  const tb = await setup(t);
  const str = (bytes: number[]): number[] => [0x00, bytes.length, ...bytes];
  const truncated = [0x61, 0xf0, 0x9f, 0x98]; // "a" + a 4-byte sequence cut after 3 bytes: one U+FFFD of 3 bytes
  const cases: [string, number[]][] = [
    // flags 0x06: will flag + clean session; will topic, will payload "x"
    ['will topic', [...str([0x4d, 0x51, 0x54, 0x54]), 0x04, 0x06, 0x00, 0x00, ...str([0x63]), ...str(truncated), ...str([0x78])]],
    // flags 0x82: user name flag + clean session
    ['user name', [...str([0x4d, 0x51, 0x54, 0x54]), 0x04, 0x82, 0x00, 0x00, ...str([0x63]), ...str(truncated)]],
  ];
  for (const [what, body] of cases) {
    const client = await rawSocket(t, tb.port);
    client.sendBytes([0x10, body.length, ...body]);
    await client.waitClosed();
    t.notOk(client.received.some((p) => p.cmd === 'connack' && (p.returnCode ?? 0) === 0), `${what}: not accepted`);
    t.equal(tb.broker.clients.size, 0, `${what}: no client registered`);
  }
  // A valid will topic with a real multi-byte character is still accepted.
  const ok = await rawSocket(t, tb.port);
  const good = [...str([0x4d, 0x51, 0x54, 0x54]), 0x04, 0x06, 0x00, 0x00, ...str([0x63]), ...str([0x61, 0xf0, 0x9f, 0x98, 0x80]), ...str([0x78])];
  ok.sendBytes([0x10, good.length, ...good]);
  const connack = await ok.next('connack');
  t.equal(connack.returnCode, 0, 'a well-formed 4-byte character in the will topic is fine');
});
