import t from 'tap';
import { EdgewayError, type Message } from '../../gateway/broker';
import { startBroker } from '../helpers/broker';
import { RawClient } from '../helpers/raw-client';

t.test('adapter context: in-process publish reaches MQTT subscribers, retained included', async (t) => {
  const tb = await startBroker();
  t.teardown(() => tb.stop());
  const ctx = tb.broker.context('test-adapter');
  const sub = await RawClient.connect(tb.port, { clientId: 'sub' });
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'sensors/#', qos: 1 }] });
  await sub.next('suback');

  ctx.publish({ topic: 'sensors/pty/temp', payload: Buffer.from('21.5'), qos: 1, retain: true });
  const got = await sub.next('publish');
  t.equal(got.topic, 'sensors/pty/temp');
  t.equal(String(got.payload), '21.5');
  t.equal(got.qos, 1, 'delivered at the publisher QoS');
  t.equal(tb.broker.retained.get('sensors/pty/temp')?.payload.toString(), '21.5', 'retained copy kept');
  sub.disconnect();
});

t.test('adapter context: invalid topics are refused with a stable code', async (t) => {
  const tb = await startBroker();
  t.teardown(() => tb.stop());
  const ctx = tb.broker.context('test-adapter');
  for (const topic of ['a/+', 'a/#', '', 'a\u0000b']) {
    t.throws(() => ctx.publish({ topic, payload: Buffer.from('x'), qos: 0, retain: false }), { code: 'EDGEWAY_ERR_INVALID_TOPIC' }, JSON.stringify(topic));
  }
  try {
    ctx.subscribe('a/#/b', () => {});
    t.fail('invalid filter accepted');
  } catch (err) {
    t.ok(err instanceof EdgewayError && err.code === 'EDGEWAY_ERR_INVALID_TOPIC', 'invalid filter refused');
  }
});

t.test('adapter context: in-process subscribe receives client messages until unsubscribed', async (t) => {
  const tb = await startBroker();
  t.teardown(() => tb.stop());
  const ctx = tb.broker.context('test-adapter');
  const seen: Message[] = [];
  const unsubscribe = ctx.subscribe('cmd/+/write', (m) => seen.push(m));
  const throwing = ctx.subscribe('cmd/#', () => {
    throw new Error('adapter bug');
  });
  const pub = await RawClient.connect(tb.port, { clientId: 'pub' });
  pub.send({ cmd: 'publish', topic: 'cmd/arduino/write', payload: Buffer.from('LED=1'), qos: 1, messageId: 5, retain: false, dup: false });
  await pub.next('puback');
  t.equal(seen.length, 1, 'handler called once');
  t.equal(seen[0]?.payload.toString(), 'LED=1');
  t.ok(pub.closed === false, 'a throwing in-process handler does not affect the publisher');

  unsubscribe();
  throwing();
  pub.send({ cmd: 'publish', topic: 'cmd/arduino/write', payload: Buffer.from('LED=0'), qos: 1, messageId: 6, retain: false, dup: false });
  await pub.next('puback');
  t.equal(seen.length, 1, 'no delivery after unsubscribe');
  t.equal(tb.broker.subscriptions.size, 0, 'subscriptions removed from the tree');
  pub.disconnect();
});
