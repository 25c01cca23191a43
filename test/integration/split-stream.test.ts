import t from 'tap';
import { generate, type IPublishPacket } from 'mqtt-packet';
import { startBroker, waitFor } from '../helpers/broker';
import { RawClient } from '../helpers/raw-client';

/**
 * The broker decodes common packets on a fast path and keeps split packets between reads. A
 * publisher whose stream arrives in pieces of every size must have every message delivered once,
 * in order, intact — and its QoS 1/2 handshakes answered.
 */
t.test('a publish stream written in pieces of many sizes is delivered whole and in order', async (t) => {
  const tb = await startBroker();
  t.teardown(() => tb.stop());
  const sub = await RawClient.connect(tb.port, { clientId: 'split-sub' });
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'split/#', qos: 0 }] });
  await sub.next('suback');

  for (const piece of [1, 3, 7, 64, 333, 4096]) {
    const pub = await RawClient.connect(tb.port, { clientId: `split-pub-${piece}` });
    const count = 200;
    const packets: Buffer[] = [];
    for (let i = 0; i < count; i++) {
      const qos = (i % 3) as 0 | 1 | 2;
      const payload = Buffer.alloc(i % 5 === 0 ? 5000 : 10 + (i % 50), i % 251);
      packets.push(generate({ cmd: 'publish', topic: `split/${piece}/${i}`, payload, qos, messageId: qos > 0 ? i + 1 : undefined, retain: false, dup: false }));
      if (i % 10 === 0) packets.push(generate({ cmd: 'pingreq' }));
    }
    const bytes = Buffer.concat(packets);
    for (let offset = 0; offset < bytes.length; offset += piece) {
      pub.sendBytes(bytes.subarray(offset, offset + piece));
      // Yield now and then so the pieces really arrive in separate reads.
      if ((offset / piece) % 16 === 0) await new Promise((r) => setImmediate(r));
    }
    // QoS 2: release every message so the handshake completes.
    const received: IPublishPacket[] = [];
    await waitFor(() => {
      for (let p = sub.received.findIndex((x) => x.cmd === 'publish'); p >= 0; p = sub.received.findIndex((x) => x.cmd === 'publish')) {
        received.push(sub.received.splice(p, 1)[0] as IPublishPacket);
      }
      return received.length >= count;
    }, 10_000, `${count} messages for piece size ${piece}`);
    t.same(
      received.map((m) => m.topic),
      Array.from({ length: count }, (_, i) => `split/${piece}/${i}`),
      `piece size ${piece}: every message once, in order`,
    );
    t.ok(
      received.every((m, i) => Buffer.from(m.payload).equals(Buffer.alloc(i % 5 === 0 ? 5000 : 10 + (i % 50), i % 251))),
      `piece size ${piece}: payloads intact`,
    );
    const expectedAcks = Math.ceil((count - 1) / 3) + Math.ceil((count - 2) / 3) + count / 10;
    await waitFor(() => pub.received.length >= expectedAcks, 5000, 'acknowledgements and PINGRESPs');
    const acks = pub.received.filter((p) => p.cmd === 'puback').length;
    const recs = pub.received.filter((p) => p.cmd === 'pubrec').length;
    const pongs = pub.received.filter((p) => p.cmd === 'pingresp').length;
    t.equal(acks, Math.ceil((count - 1) / 3), `piece size ${piece}: every QoS 1 PUBLISH acknowledged`);
    t.equal(recs, Math.ceil((count - 2) / 3), `piece size ${piece}: every QoS 2 PUBLISH received`);
    t.equal(pongs, count / 10, `piece size ${piece}: every PINGREQ answered`);
    pub.disconnect();
  }
  sub.disconnect();
});
