/**
 * Packets the protocol fuzzer (test/fuzz/, issue 9) found to crash the gateway, each reduced to
 * its minimal bytes and sent over a real socket. Each must close only the offending connection
 * (MQTT 5: after a DISCONNECT with the right reason code), and the broker must go on serving a
 * bystander client connected beforehand.
 */
import t, { type Test } from 'tap';
import { startBroker, type TestBroker } from '../helpers/broker';
import { RawClient } from '../helpers/raw-client';

async function setup(t: Test): Promise<{ tb: TestBroker; bystander: RawClient; connect: (level: 4 | 5) => Promise<RawClient> }> {
  const tb = await startBroker();
  const clients: RawClient[] = [];
  t.teardown(async () => {
    for (const c of clients) c.destroy();
    await tb.stop();
  });
  let n = 0;
  const connect = async (level: 4 | 5): Promise<RawClient> => {
    const c = await RawClient.connect(tb.port, { clientId: `fuzz-regression-${n++}`, protocolVersion: level });
    clients.push(c);
    return c;
  };
  const bystander = await connect(4);
  bystander.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'still/alive', qos: 1 }] });
  await bystander.next('suback');
  return { tb, bystander, connect };
}

/** The bystander still gets a QoS 1 message through the broker. */
async function brokerStillServes(t: Test, connect: (level: 4 | 5) => Promise<RawClient>, bystander: RawClient): Promise<void> {
  const publisher = await connect(4);
  publisher.send({ cmd: 'publish', topic: 'still/alive', payload: Buffer.from('yes'), qos: 1, messageId: 9, retain: false, dup: false });
  t.equal((await publisher.next('puback')).messageId, 9, 'a new publisher is acknowledged');
  const got = await bystander.next('publish');
  t.equal(got.payload.toString(), 'yes', 'the bystander still receives messages');
  bystander.send({ cmd: 'puback', messageId: got.messageId ?? 0 });
}

/** Sends `bytes` after CONNECT and expects the connection closed, MQTT 5 after DISCONNECT `reasonCode`. */
async function expectClosed(t: Test, client: RawClient, bytes: number[], reasonCode: number | null, what: string): Promise<void> {
  client.sendBytes(bytes);
  if (reasonCode !== null) t.equal((await client.next('disconnect')).reasonCode, reasonCode, `${what}: DISCONNECT 0x${reasonCode.toString(16)}`);
  await client.waitClosed();
  t.pass(`${what}: connection closed`);
}

t.test('SUBSCRIBE without a topic filter (crashed encoding an empty SUBACK)', async (t) => {
  const { bystander, connect } = await setup(t);
  // [MQTT-3.8.3-3]: packet identifier only.
  await expectClosed(t, await connect(4), [0x82, 0x02, 0x00, 0x01], null, '3.1.1');
  // MQTT 5: packet identifier and an empty property block.
  await expectClosed(t, await connect(5), [0x82, 0x03, 0x00, 0x01, 0x00], 0x82, 'MQTT 5');
  await brokerStillServes(t, connect, bystander);
});

t.test('UNSUBSCRIBE without a topic filter (crashed encoding an empty MQTT 5 UNSUBACK)', async (t) => {
  const { bystander, connect } = await setup(t);
  await expectClosed(t, await connect(5), [0xa2, 0x03, 0x00, 0x01, 0x00], 0x82, 'MQTT 5');
  await expectClosed(t, await connect(4), [0xa2, 0x02, 0x00, 0x01], null, '3.1.1 [MQTT-3.10.3-2]');
  await brokerStillServes(t, connect, bystander);
});

t.test('a packet identifier missing from its packet (parsed as -1; crashed writing the acknowledgement)', async (t) => {
  const { bystander, connect } = await setup(t);
  // PUBREL and PUBREC of remaining length 0: no packet identifier at all.
  await expectClosed(t, await connect(4), [0x62, 0x00], null, '3.1.1 PUBREL');
  await expectClosed(t, await connect(5), [0x50, 0x00], 0x81, 'MQTT 5 PUBREC');
  // QoS 1 PUBLISH whose remaining length ends after the topic "a".
  await expectClosed(t, await connect(4), [0x32, 0x03, 0x00, 0x01, 0x61], null, '3.1.1 QoS 1 PUBLISH');
  await brokerStillServes(t, connect, bystander);
});

t.test('a field read from beyond its packet: the next packet must not complete it', async (t) => {
  const { bystander, connect } = await setup(t);
  // PUBREL of remaining length 1, followed by a PINGREQ: the identifier would take the PINGREQ's first byte.
  const c = await connect(4);
  await expectClosed(t, c, [0x62, 0x01, 0x00, 0xc0, 0x00], null, 'PUBREL of remaining length 1');
  t.equal(c.received.filter((p) => p.cmd === 'pubcomp' || p.cmd === 'pingresp').length, 0, 'no PUBCOMP nor PINGRESP: nothing of it was taken as a packet');
  await brokerStillServes(t, connect, bystander);
});

t.test('an MQTT 5 string property longer than its packet (parsed as null)', async (t) => {
  const { bystander, connect } = await setup(t);
  // PUBLISH "a", properties: Response Topic (0x08) of length 0xFFFF, which the packet does not hold.
  await expectClosed(t, await connect(5), [0x30, 0x07, 0x00, 0x01, 0x61, 0x03, 0x08, 0xff, 0xff], 0x81, 'Response Topic');
  // Correlation Data (0x09, binary) likewise.
  await expectClosed(t, await connect(5), [0x30, 0x07, 0x00, 0x01, 0x61, 0x03, 0x09, 0xff, 0xff], 0x81, 'Correlation Data');
  await brokerStillServes(t, connect, bystander);
});

t.test('a packet handler that throws costs its connection, not the process (the safety net for bugs not found yet)', async (t) => {
  const { tb, bystander, connect } = await setup(t);
  // A notify hook breaking its "must not throw" contract stands for any handler bug.
  tb.broker.hooks.published.push((message) => {
    if (message.topic === 'boom') throw new Error('hook bug');
  });
  const v4 = await connect(4);
  v4.send({ cmd: 'publish', topic: 'boom', payload: Buffer.from('x'), qos: 0, retain: false, dup: false });
  await v4.waitClosed();
  t.pass('3.1.1: the connection whose packet hit the bug is closed');
  const v5 = await connect(5);
  v5.send({ cmd: 'publish', topic: 'boom', payload: Buffer.from('x'), qos: 1, messageId: 3, retain: false, dup: false, properties: {} });
  t.equal((await v5.next('disconnect')).reasonCode, 0x80, 'MQTT 5: DISCONNECT 0x80 unspecified error');
  await v5.waitClosed();
  t.equal(tb.broker.metrics.handlerErrors, 2, 'counted (edgeway_internal_errors_total)');
  await brokerStillServes(t, connect, bystander);
});
