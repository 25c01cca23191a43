import t from 'tap';
import { startBroker, waitFor } from '../helpers/broker';
import { RawClient } from '../helpers/raw-client';

t.test('maxQueuedBytes bounds a session queue by payload size', async (t) => {
  const tb = await startBroker({ limits: { maxQueuedBytes: 2500, maxQueued: 1000 } });
  t.teardown(() => tb.stop());
  const away = await RawClient.connect(tb.port, { clientId: 'away', clean: false });
  away.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'q/#', qos: 1 }] });
  await away.next('suback');
  away.disconnect();
  await waitFor(() => !tb.broker.clients.has('away'), 3000, 'away to leave');

  const pub = await RawClient.connect(tb.port, { clientId: 'pub' });
  for (let i = 0; i < 5; i++) {
    pub.send({ cmd: 'publish', topic: `q/${i}`, payload: Buffer.alloc(1000, 0x61 + i), qos: 1, messageId: i + 1, retain: false, dup: false });
    await pub.next('puback');
  }
  t.equal(tb.broker.sessions.get('away')?.queue.length, 2, 'two 1000-byte messages fit in 2500 bytes');
  t.equal(tb.broker.metrics.limitHits.maxQueued, 3, 'the other three were refused and counted');
  t.equal(tb.broker.metrics.publishDropped, 3, 'and counted as dropped');

  const back = await RawClient.connect(tb.port, { clientId: 'away', clean: false });
  const first = await back.next('publish');
  const second = await back.next('publish');
  t.same([first.topic, second.topic], ['q/0', 'q/1'], 'the oldest messages were kept, in order');
  back.disconnect();
  pub.disconnect();
});

t.test('maxSessions evicts the session offline the longest, and refuses when all are connected', async (t) => {
  const tb = await startBroker({ limits: { maxSessions: 2 } });
  t.teardown(() => tb.stop());
  for (const id of ['old', 'newer']) {
    const c = await RawClient.connect(tb.port, { clientId: id, clean: false });
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `s/${id}`, qos: 1 }] });
    await c.next('suback');
    c.disconnect();
    await waitFor(() => !tb.broker.clients.has(id), 3000, `${id} to leave`);
    await new Promise((r) => setTimeout(r, 5)); // distinct disconnect times
  }
  const third = await RawClient.connect(tb.port, { clientId: 'third', clean: false });
  t.notOk(tb.broker.sessions.has('old'), 'the longest-offline session was evicted');
  t.ok(tb.broker.sessions.has('newer'), 'the more recent one was kept');
  t.equal(tb.broker.metrics.limitHits.maxSessions, 1, 'eviction counted');

  const newer = await RawClient.connect(tb.port, { clientId: 'newer', clean: false });
  // Both sessions now belong to connected clients: a new client id cannot get one.
  const refused = await RawClient.connectSocket(tb.port);
  refused.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'fourth', keepalive: 0 });
  const connack = await refused.next('connack');
  t.equal(connack.returnCode, 3, 'CONNACK 3 (server unavailable) when no session can be evicted');
  await refused.waitClosed();
  t.equal(tb.broker.metrics.limitHits.maxSessions, 2, 'refusal counted');
  third.disconnect();
  newer.disconnect();
});

t.test('maxRetainedBytes bounds the retained store by payload size; replacing frees the old size', async (t) => {
  const tb = await startBroker({ limits: { maxRetainedBytes: 3000 } });
  t.teardown(() => tb.stop());
  const pub = await RawClient.connect(tb.port, { clientId: 'pub' });
  const publish = async (topic: string, size: number, id: number): Promise<void> => {
    pub.send({ cmd: 'publish', topic, payload: Buffer.alloc(size, 0x62), qos: 1, messageId: id, retain: true, dup: false });
    await pub.next('puback');
  };
  await publish('r/a', 1000, 1);
  await publish('r/b', 1500, 2);
  await publish('r/c', 1000, 3); // 3500 > 3000: refused
  t.equal(tb.broker.retained.get('r/c'), undefined, 'over the byte limit: not retained');
  t.equal(tb.broker.metrics.limitHits.maxRetainedBytes, 1, 'counted');
  await publish('r/b', 500, 4); // replaces 1500 with 500 → 1500 in all
  await publish('r/c', 1000, 5); // now fits: 2500
  t.equal(tb.broker.retained.get('r/c')?.payload.length, 1000, 'fits after a replacement freed space');
  t.equal(tb.broker.retained.bytes, 2500, 'byte count follows replacements');
  pub.send({ cmd: 'publish', topic: 'r/a', payload: Buffer.alloc(0), qos: 1, messageId: 6, retain: true, dup: false });
  await pub.next('puback');
  t.equal(tb.broker.retained.bytes, 1500, 'deleting frees its bytes');
  pub.disconnect();
});

t.test('maxConnections holds when connections complete while an asynchronous authentication gate runs', async (t) => {
  const tb = await startBroker({ limits: { maxConnections: 1 } });
  t.teardown(() => tb.stop());
  // Both CONNECTs pass the first check while the gate is pending; only one may complete.
  tb.broker.hooks.authenticate.push(() => new Promise<boolean>((resolve) => setTimeout(() => resolve(true), 50)));
  const a = await RawClient.connectSocket(tb.port);
  const b = await RawClient.connectSocket(tb.port);
  for (const [c, id] of [[a, 'a'], [b, 'b']] as const) {
    c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: id, keepalive: 0 });
  }
  const codes = [(await a.next('connack')).returnCode, (await b.next('connack')).returnCode].sort();
  t.same(codes, [0, 3], 'one accepted, one refused with CONNACK 3');
  t.equal(tb.broker.clients.size, 1, 'one client connected');
  t.equal(tb.broker.metrics.limitHits.maxConnections, 1, 'the refusal is counted');
  a.destroy();
  b.destroy();
});
