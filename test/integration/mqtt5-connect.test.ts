import t from 'tap';
import type { IDisconnectPacket } from 'mqtt-packet';
import { waitFor } from '../helpers/broker';
import { mqttClient, within } from '../helpers/mqtt-client';
import { brokerFor, client, leaveSession, open, publishPacket, subscribe } from '../helpers/mqtt5';
import { RawClient } from '../helpers/raw-client';

/**
 * MQTT 5 connections (MQTT 5.0 sections 3.1, 3.2, 3.14, 3.15, 4.12): CONNECT and CONNACK with
 * the server's limits, Assigned Client Identifier, Clean Start, Session Expiry Interval (also
 * changed at DISCONNECT, and enforced), server DISCONNECT with reason codes, Request Problem
 * Information, and enhanced authentication. Real TCP against an in-process broker, with
 * RawClient where the exact packets matter and mqtt.js (protocolVersion 5) beside it.
 */

/** The DISCONNECT the server sends before it closes the connection. */
async function serverDisconnect(client: RawClient): Promise<IDisconnectPacket> {
  const disconnect = await client.next('disconnect');
  await client.waitClosed();
  return disconnect;
}

t.test('MQTT 5 CONNECT is accepted; CONNACK announces the server limits [MQTT-3.1.4-5] [MQTT-3.2.2-3]', async (t) => {
  const tb = await brokerFor(t, { limits: { maxPacketSize: 65_536 } });
  const { client: c, connack } = await open(t, tb, { clientId: 'v5-limits' });
  t.equal(connack.reasonCode, 0, 'reason code 0x00 (success)');
  t.equal(connack.sessionPresent, false, 'no session: session present 0');
  t.same(
    connack.properties,
    { maximumPacketSize: 65_536, topicAliasMaximum: 10, retainAvailable: true, wildcardSubscriptionAvailable: true, subscriptionIdentifiersAvailable: true, sharedSubscriptionAvailable: true },
    'Maximum Packet Size, Topic Alias Maximum and the feature flags; Maximum QoS 2 and Receive Maximum 65,535 are the defaults, so absent',
  );
  t.equal(tb.broker.clients.get('v5-limits')?.protocolVersion, 5, 'the broker knows the client as MQTT 5');

  // The client works: a subscription and a message round trip.
  t.same(await subscribe(c, [{ topic: 'v5/echo', qos: 1 }]), [1], 'SUBACK grants QoS 1');
  c.send(publishPacket('v5/echo', 'hi', 1, { messageId: 7 }));
  const puback = await c.next('puback');
  t.equal(puback.reasonCode, 0, 'PUBACK 0x00: a subscriber took it');
  const pub = await c.next('publish');
  t.equal(pub.payload.toString(), 'hi', 'routed back at QoS 1');

  const small = await brokerFor(t, { limits: { receiveMaximum: 10 } });
  const limited = await open(t, small, { clientId: 'v5-rm' });
  t.equal(limited.connack.properties?.receiveMaximum, 10, 'a configured limits.receiveMaximum is announced as Receive Maximum');
});

t.test('mqtt.js with protocolVersion 5 connects and exchanges messages', async (t) => {
  const tb = await brokerFor(t);
  const c = await mqttClient(t, tb, { protocolVersion: 5, clientId: 'mqttjs-v5' });
  await within(c.subscribeAsync('v5/js', { qos: 2 }), 'subscribe');
  const received = new Promise<string>((resolve) => c.once('message', (_topic, payload) => resolve(payload.toString())));
  await within(c.publishAsync('v5/js', 'from mqtt.js', { qos: 2 }), 'publish at QoS 2');
  t.equal(await within(received, 'message'), 'from mqtt.js', 'message delivered at QoS 2');
});

t.test('an empty client identifier gets an Assigned Client Identifier, with Clean Start 0 too [MQTT-3.1.3-6] [MQTT-3.1.3-7] [MQTT-3.2.2-16]', async (t) => {
  const tb = await brokerFor(t);
  const a = await open(t, tb, { clientId: '', clean: true });
  // Raw bytes, as mqtt-packet refuses to encode an empty id with Clean Start 0 (3.1.1's rule):
  // CONNECT "MQTT" level 5, flags 0, keepalive 0, properties: Session Expiry Interval 60, id "".
  const raw = await RawClient.connectSocket(tb.port, 5);
  t.teardown(() => raw.destroy());
  const body = [0x00, 0x04, ...Buffer.from('MQTT'), 0x05, 0x00, 0x00, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x00];
  raw.sendBytes([0x10, body.length, ...body]);
  const b = { client: raw, connack: await raw.next('connack') };
  const ids = [a.connack.properties?.assignedClientIdentifier, b.connack.properties?.assignedClientIdentifier];
  t.equal(a.connack.reasonCode, 0, 'Clean Start 1 accepted');
  t.equal(b.connack.reasonCode, 0, 'Clean Start 0 accepted (3.1.1 would refuse it)');
  for (const id of ids) t.ok(typeof id === 'string' && id.length > 0 && tb.broker.clients.has(id), `assigned id ${JSON.stringify(id)} is the client's id in the broker`);
  t.not(ids[0], ids[1], 'each client gets its own');

  // The assigned id names a session that can be resumed.
  b.client.disconnect();
  await waitFor(() => !tb.broker.clients.has(ids[1] as string), 3000, 'the client to leave');
  const again = await open(t, tb, { clientId: ids[1] as string, clean: false, properties: { sessionExpiryInterval: 60 } });
  t.equal(again.connack.sessionPresent, true, 'the session of the assigned id is resumed');
  t.equal(again.connack.properties?.assignedClientIdentifier, undefined, 'no Assigned Client Identifier when the client named itself');
});

t.test('Session Expiry Interval 0 (the default): the session ends with the connection', async (t) => {
  const tb = await brokerFor(t);
  const c = await client(t, tb, 'expiry-0', { clean: false });
  await subscribe(c, [{ topic: 'e0/#', qos: 1 }]);
  c.disconnect();
  await waitFor(() => !tb.broker.sessions.has('expiry-0'), 3000, 'the session to end');
  const again = await open(t, tb, { clientId: 'expiry-0', clean: false });
  t.equal(again.connack.sessionPresent, false, 'nothing to resume [MQTT-3.2.2-3]');
});

t.test('Session Expiry Interval > 0 keeps the session; Clean Start 0 resumes it with what was queued [MQTT-3.1.2-5] [MQTT-3.1.2-23] [MQTT-3.2.2-3]', async (t) => {
  const tb = await brokerFor(t);
  await leaveSession(t, tb, 'keeper', 'keep/#', 300);

  // A 3.1.1 publisher sends while the MQTT 5 subscriber is away.
  const pub = await client(t, tb, 'v4-pub', { protocolVersion: 4 });
  pub.send({ cmd: 'publish', topic: 'keep/a', payload: Buffer.from('queued'), qos: 1, messageId: 1, dup: false, retain: false });
  t.equal((await pub.next('puback')).messageId, 1, '3.1.1 PUBACK');

  const back = await open(t, tb, { clientId: 'keeper', clean: false, properties: { sessionExpiryInterval: 300 } });
  t.equal(back.connack.sessionPresent, true, 'session present 1');
  const queued = await back.client.next('publish');
  t.equal(queued.payload.toString(), 'queued', 'the queued message is delivered on resume');
  t.equal(queued.qos, 1);
});

t.test('Clean Start 1 discards an existing session [MQTT-3.1.2-4] [MQTT-3.2.2-2]', async (t) => {
  const tb = await brokerFor(t);
  await leaveSession(t, tb, 'cleaned', 'clean/#', 300);
  const { connack } = await open(t, tb, { clientId: 'cleaned', clean: true, properties: { sessionExpiryInterval: 300 } });
  t.equal(connack.sessionPresent, false, 'session present 0');
  t.equal(tb.broker.sessions.get('cleaned')?.subscriptions.size, 0, 'the old subscriptions are gone');
});

t.test('an offline session is discarded once its Session Expiry Interval has passed [MQTT-4.1.0-2]', async (t) => {
  const tb = await brokerFor(t);
  await leaveSession(t, tb, 'short-lived', 'short/#', 1);
  t.ok(tb.broker.sessions.has('short-lived'), 'kept right after the client left');
  await waitFor(() => !tb.broker.sessions.has('short-lived'), 5000, 'the session to expire');
  t.equal(tb.broker.subscriptions.size, 0, 'its subscription went with it');
  const { connack } = await open(t, tb, { clientId: 'short-lived', clean: false, properties: { sessionExpiryInterval: 1 } });
  t.equal(connack.sessionPresent, false, 'nothing to resume');
});

t.test('DISCONNECT changes the Session Expiry Interval (section 3.14.2.2.2)', async (t) => {
  const tb = await brokerFor(t);

  const shortened = await client(t, tb, 'to-zero', { clean: false, properties: { sessionExpiryInterval: 300 } });
  shortened.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 0 } });
  await waitFor(() => !tb.broker.sessions.has('to-zero'), 3000, 'the session to end at once');
  t.pass('300 → 0: the session ends with the connection');

  const expiring = await client(t, tb, 'to-one', { clean: false, properties: { sessionExpiryInterval: 300 } });
  expiring.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 1 } });
  await waitFor(() => tb.broker.sessions.get('to-one')?.owner === null, 3000, 'the client to leave');
  t.equal(tb.broker.sessions.get('to-one')?.expiryInterval, 1, '300 → 1: the new interval applies');
  await waitFor(() => !tb.broker.sessions.has('to-one'), 5000, 'the session to expire');

  const zero = await client(t, tb, 'from-zero', { clean: true });
  zero.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 60 } });
  const refused = await serverDisconnect(zero);
  t.equal(refused.reasonCode, 0x82, '0 → 60 is a Protocol Error: DISCONNECT 0x82');
  t.notOk(tb.broker.sessions.has('from-zero'), 'and the session still ends');
});

t.test('DISCONNECT 0x04 (or an error code) publishes the will; DISCONNECT 0x00 discards it [MQTT-3.1.2-10] [MQTT-3.14.4-3]', async (t) => {
  const tb = await brokerFor(t);
  const watcher = await client(t, tb, 'watcher');
  await subscribe(watcher, [{ topic: 'wills/#', qos: 0 }]);
  const will = (name: string) => ({ topic: `wills/${name}`, payload: Buffer.from(`${name} gone`), qos: 0 as const, retain: false });

  const normal = await client(t, tb, 'normal', { will: will('normal') });
  normal.send({ cmd: 'disconnect', reasonCode: 0 });
  await normal.waitClosed();
  const withWill = await client(t, tb, 'with-will', { will: will('with-will') });
  withWill.send({ cmd: 'disconnect', reasonCode: 0x04 });
  await withWill.waitClosed();
  t.equal((await watcher.next('publish')).topic, 'wills/with-will', 'the will of the client that disconnected with 0x04');
  const failing = await client(t, tb, 'failing', { will: will('failing') });
  failing.send({ cmd: 'disconnect', reasonCode: 0x80 });
  await failing.waitClosed();
  t.equal((await watcher.next('publish')).topic, 'wills/failing', 'and of the one that disconnected with 0x80 (unspecified error)');
  t.same(await watcher.collect('publish', 200), [], 'no will from the normal disconnection');
});

t.test('server DISCONNECT reason codes: takeover 0x8E, keepalive 0x8D, shutdown 0x8B [MQTT-3.1.4-3] [MQTT-3.1.2-22]', async (t) => {
  const tb = await brokerFor(t);
  const first = await client(t, tb, 'twice');
  await client(t, tb, 'twice');
  const takenOver = await serverDisconnect(first);
  t.equal(takenOver.reasonCode, 0x8e, 'the first connection gets 0x8E (session taken over)');
  t.equal(takenOver.properties?.reasonString?.includes('taken over'), true, 'with a Reason String');

  const silent = await client(t, tb, 'silent', { keepalive: 1 });
  const timedOut = await serverDisconnect(silent);
  t.equal(timedOut.reasonCode, 0x8d, 'a client silent for 1.5 × keepalive gets 0x8D (keep alive timeout)');

  const staying = await client(t, tb, 'staying');
  const v4 = await client(t, tb, 'v4-staying', { protocolVersion: 4 });
  await tb.stop();
  t.equal((await serverDisconnect(staying)).reasonCode, 0x8b, 'on shutdown an MQTT 5 client gets 0x8B (server shutting down)');
  await v4.waitClosed();
  t.same(v4.received.filter((p) => p.cmd === 'disconnect'), [], 'a 3.1.1 client is just closed: 3.1.1 has no server DISCONNECT');
});

t.test('protocol violations get DISCONNECT with their reason code before the close [MQTT-4.13.1-1]', async (t) => {
  const tb = await brokerFor(t, { limits: { maxPacketSize: 1024 } });
  const cases: [string, (c: RawClient) => void, number][] = [
    ['a second CONNECT [MQTT-3.1.0-2]', (c) => c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: 'again', keepalive: 0 }), 0x82],
    ['a wildcard in a topic name [MQTT-3.3.2-2]', (c) => c.send({ cmd: 'publish', topic: 'a/+', payload: Buffer.from('x'), qos: 0, dup: false, retain: false }), 0x90],
    ['DUP on QoS 0 [MQTT-3.3.1-2]', (c) => c.send({ cmd: 'publish', topic: 'a', payload: Buffer.from('x'), qos: 0, dup: true, retain: false }), 0x81],
    ['a packet over maxPacketSize', (c) => c.send({ cmd: 'publish', topic: 'a', payload: Buffer.alloc(2000), qos: 0, dup: false, retain: false }), 0x95],
    ['a property PUBLISH does not have (section 2.2.2.2)', (c) => c.send({ cmd: 'publish', topic: 'a', payload: Buffer.from('x'), qos: 0, dup: false, retain: false, properties: { sessionExpiryInterval: 5 } as never }), 0x81],
    ['a Subscription Identifier from a client [MQTT-3.3.4-6]', (c) => c.send({ cmd: 'publish', topic: 'a', payload: Buffer.from('x'), qos: 0, dup: false, retain: false, properties: { subscriptionIdentifier: 3 } }), 0x82],
    ['a property twice (section 2.2.2.2)', (c) => c.send({ cmd: 'publish', topic: 'a', payload: Buffer.from('x'), qos: 0, dup: false, retain: false, properties: { contentType: ['a', 'b'] as never } }), 0x82],
    ['AUTH without an authentication method in CONNECT [MQTT-4.12.0-7]', (c) => c.send({ cmd: 'auth', reasonCode: 0x19, properties: { authenticationMethod: 'x' } }), 0x82],
  ];
  for (const [what, send, reasonCode] of cases) {
    const c = await client(t, tb, `violator-${reasonCode}`);
    send(c);
    const d = await serverDisconnect(c);
    t.equal(d.reasonCode, reasonCode, `${what}: DISCONNECT 0x${reasonCode.toString(16)}`);
    t.ok((d.properties?.reasonString ?? '').length > 0, `${what}: with a Reason String`);
  }
  t.equal(tb.broker.clients.size, 0, 'every violator was disconnected');
});

t.test('Request Problem Information 0: no Reason String on SUBACK or DISCONNECT [MQTT-3.1.2-29]', async (t) => {
  const tb = await brokerFor(t, { limits: { maxSubscriptionsPerClient: 1 } });
  for (const requestProblemInformation of [true, false]) {
    const c = await client(t, tb, `rpi-${requestProblemInformation}`, { properties: { requestProblemInformation } });
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'one', qos: 0 }, { topic: 'two', qos: 0 }] });
    const suback = await c.next('suback');
    t.same(suback.granted, [0, 0x97], 'the second filter is refused with 0x97 (quota exceeded)');
    t.equal(suback.properties?.reasonString !== undefined, requestProblemInformation, `Request Problem Information ${requestProblemInformation}: Reason String ${requestProblemInformation ? 'present' : 'absent'} on SUBACK`);
    c.send({ cmd: 'publish', topic: 'bad/#', payload: Buffer.from('x'), qos: 0, dup: false, retain: false });
    const d = await serverDisconnect(c);
    t.equal(d.reasonCode, 0x90, 'DISCONNECT 0x90 (topic name invalid)');
    t.equal(d.properties?.reasonString !== undefined, requestProblemInformation, `Request Problem Information ${requestProblemInformation}: Reason String ${requestProblemInformation ? 'present' : 'absent'} on DISCONNECT`);
  }
});

t.test('enhanced authentication: an unsupported method gets CONNACK 0x8C [MQTT-4.12.0-1]', async (t) => {
  const tb = await brokerFor(t);
  const { client, connack } = await open(t, tb, { clientId: 'kerberos', properties: { authenticationMethod: 'GSSAPI', authenticationData: Buffer.from('ticket') } });
  t.equal(connack.reasonCode, 0x8c, 'CONNACK 0x8C (bad authentication method)');
  t.equal(connack.sessionPresent, false, 'session present 0 [MQTT-3.2.2-6]');
  await client.waitClosed();
  t.notOk(tb.broker.clients.has('kerberos'), 'not connected');
});

t.test('enhanced authentication through the authMethods hook: challenge, success, failure and re-authentication [MQTT-4.12.0-2] [MQTT-4.12.0-5] [MQTT-4.12.1-1]', async (t) => {
  const tb = await brokerFor(t);
  // A toy challenge-response method: the server asks for the reverse of a nonce.
  const steps: string[] = [];
  tb.broker.hooks.authMethods.push({
    method: 'REVERSE',
    step: async (client, data) => {
      const text = data?.toString() ?? '';
      steps.push(`${client.clientId}:${text}`);
      if (text === 'hello') return { outcome: 'continue', data: Buffer.from('nonce-42') };
      if (text === '24-ecnon') return { outcome: 'success', data: Buffer.from('welcome') };
      return { outcome: 'fail' };
    },
  });

  const good = await RawClient.connectSocket(tb.port, 5);
  t.teardown(() => good.destroy());
  good.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: 'reverser', keepalive: 0, properties: { authenticationMethod: 'REVERSE', authenticationData: Buffer.from('hello') } });
  const challenge = await good.next('auth');
  t.equal(challenge.reasonCode, 0x18, 'AUTH 0x18 (continue authentication)');
  t.equal(challenge.properties?.authenticationMethod, 'REVERSE', 'with the method of CONNECT');
  t.equal(challenge.properties?.authenticationData?.toString(), 'nonce-42', 'and the method’s challenge');
  good.send({ cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'REVERSE', authenticationData: Buffer.from('24-ecnon') } });
  const connack = await good.next('connack');
  t.equal(connack.reasonCode, 0, 'CONNACK 0x00 after the right answer');
  t.equal(connack.properties?.authenticationMethod, 'REVERSE', 'CONNACK repeats the method');
  t.equal(connack.properties?.authenticationData?.toString(), 'welcome', 'and carries the method’s last data');

  // Re-authentication on the open connection.
  good.send({ cmd: 'auth', reasonCode: 0x19, properties: { authenticationMethod: 'REVERSE', authenticationData: Buffer.from('hello') } });
  t.equal((await good.next('auth')).reasonCode, 0x18, 're-authentication: challenged again');
  good.send({ cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'REVERSE', authenticationData: Buffer.from('24-ecnon') } });
  const reauthed = await good.next('auth');
  t.equal(reauthed.reasonCode, 0, 're-authentication: AUTH 0x00 (success)');
  good.send({ cmd: 'auth', reasonCode: 0x19, properties: { authenticationMethod: 'REVERSE', authenticationData: Buffer.from('wrong') } });
  t.equal((await serverDisconnect(good)).reasonCode, 0x87, 'a failed re-authentication: DISCONNECT 0x87 [MQTT-4.12.1-2]');

  const bad = await RawClient.connectSocket(tb.port, 5);
  t.teardown(() => bad.destroy());
  bad.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: 'guesser', keepalive: 0, properties: { authenticationMethod: 'REVERSE', authenticationData: Buffer.from('wrong') } });
  const refused = await bad.next('connack');
  t.equal(refused.reasonCode, 0x87, 'a refused client gets CONNACK 0x87 (not authorized) [MQTT-4.12.0-4]');
  await bad.waitClosed();

  const hasty = await RawClient.connectSocket(tb.port, 5);
  t.teardown(() => hasty.destroy());
  hasty.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: 'hasty', keepalive: 0, properties: { authenticationMethod: 'REVERSE', authenticationData: Buffer.from('hello') } });
  t.equal((await hasty.next('auth')).reasonCode, 0x18, 'challenged');
  hasty.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'x', qos: 0 }] });
  t.equal((await hasty.next('connack')).reasonCode, 0x82, 'SUBSCRIBE before CONNACK during enhanced authentication: CONNACK 0x82 [MQTT-3.1.2-30]');
  t.same(steps, ['reverser:hello', 'reverser:24-ecnon', 'reverser:hello', 'reverser:24-ecnon', 'reverser:wrong', 'guesser:wrong', 'hasty:hello'], 'the hook saw every step');
});

t.test('ill-formed UTF-8 in an MQTT 5 property closes the connection, in CONNECT too [MQTT-1.5.4-1]', async (t) => {
  const tb = await brokerFor(t);
  const bad = [0x61, 0xff]; // 0xFF never occurs in UTF-8
  // CONNECT "MQTT" level 5, clean start, keepalive 0, properties: User Property "k" = bad, client id "u".
  const connectProps = [0x26, 0x00, 0x01, 0x6b, 0x00, bad.length, ...bad];
  const connect = [0x00, 0x04, ...Buffer.from('MQTT'), 0x05, 0x02, 0x00, 0x00, connectProps.length, ...connectProps, 0x00, 0x01, 0x75];
  const first = await RawClient.connectSocket(tb.port, 5);
  t.teardown(() => first.destroy());
  first.sendBytes([0x10, connect.length, ...connect]);
  await first.waitClosed();
  t.same(first.received.filter((p) => p.cmd === 'connack' && p.reasonCode === 0), [], 'no CONNACK 0x00: closed');
  t.notOk(tb.broker.clients.has('u'), 'not connected');

  // PUBLISH "t" with a Content Type of bad bytes, from a connected client.
  const c = await client(t, tb, 'utf8');
  const publishProps = [0x03, 0x00, bad.length, ...bad];
  const publish = [0x00, 0x01, 0x74, publishProps.length, ...publishProps, 0x78];
  c.sendBytes([0x30, publish.length, ...publish]);
  t.equal((await serverDisconnect(c)).reasonCode, 0x81, 'PUBLISH: DISCONNECT 0x81 (malformed packet)');
});
