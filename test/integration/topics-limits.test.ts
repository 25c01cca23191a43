/**
 * Topic validation, malformed packets, every limit of the README "Limits" table and $SYS, against
 * a real broker over real TCP. Invalid input must close the offending connection only: a bystander
 * client connected beforehand keeps working, and nothing of the invalid packet is routed.
 */
import t, { type Test } from 'tap';
import type { Packet } from 'mqtt-packet';
import { startBroker, waitFor, type TestBroker } from '../helpers/broker';
import { RawClient, varInt } from '../helpers/raw-client';

type PublishPacket = Extract<Packet, { cmd: 'publish' }>;

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

/** A PUBLISH built byte by byte, so the topic can hold anything (invalid UTF-8 included). */
function publishBytes(topic: Buffer, payload: Buffer, qos: 0 | 1 = 0, packetId = 1): Buffer {
  const variable = Buffer.concat([u16(topic.length), topic, qos > 0 ? u16(packetId) : Buffer.alloc(0)]);
  return Buffer.concat([Buffer.from([0x30 | (qos << 1)]), varInt(variable.length + payload.length), variable, payload]);
}

/** A SUBSCRIBE built byte by byte (one filter, QoS 0). */
function subscribeBytes(filter: Buffer, packetId = 1): Buffer {
  const body = Buffer.concat([u16(packetId), u16(filter.length), filter, Buffer.from([0])]);
  return Buffer.concat([Buffer.from([0x82]), varInt(body.length), body]);
}

const payloadText = (p: PublishPacket): string => (typeof p.payload === 'string' ? p.payload : p.payload.toString('utf8'));

/** Starts a broker and registers its teardown; clients made through `connect` are destroyed too. */
async function setup(t: Test, config: Record<string, unknown> = {}) {
  const tb: TestBroker = await startBroker(config);
  const clients: RawClient[] = [];
  t.teardown(async () => {
    for (const c of clients) c.destroy();
    await tb.stop();
  });
  const track = (c: RawClient): RawClient => {
    clients.push(c);
    return c;
  };
  const connect = async (clientId: string, extra: Partial<Extract<Packet, { cmd: 'connect' }>> = {}) =>
    track(await RawClient.connect(tb.port, { clientId, ...extra }));
  const connectSocket = async () => track(await RawClient.connectSocket(tb.port));
  let packetId = 100;
  const subscribe = async (c: RawClient, topics: string[], qos: 0 | 1 | 2 = 0): Promise<number[]> => {
    const messageId = ++packetId;
    c.send({ cmd: 'subscribe', messageId, subscriptions: topics.map((topic) => ({ topic, qos })) });
    const suback = await c.next('suback');
    if (suback.messageId !== messageId) throw new Error('SUBACK for another packet id');
    return suback.granted as number[];
  };
  /**
   * A bystander connected before the offence and subscribed to everything: after each offence it
   * publishes to itself; the next PUBLISH it receives must be its own, which proves both that it
   * still works and that nothing of the offending packet was routed before it.
   */
  let round = 0;
  const makeBystander = async () => {
    const c = await connect('bystander');
    await subscribe(c, ['#']);
    return {
      client: c,
      check: async (t: Test, what: string) => {
        const topic = `ok/${++round}`;
        c.send({ cmd: 'publish', topic, payload: Buffer.from('still here'), qos: 0, retain: false, dup: false });
        const got = await c.next('publish');
        t.equal(got.topic, topic, `bystander still works and received nothing else (${what})`);
      },
    };
  };
  return { tb, broker: tb.broker, connect, connectSocket, subscribe, makeBystander };
}

t.test('invalid topic names in PUBLISH close that connection only', async (t) => {
  const { broker, connect, makeBystander } = await setup(t, { limits: { maxTopicLevels: 4 } });
  const bystander = await makeBystander();
  const cases: [string, string][] = [
    ['sport/+', "'+' in a topic name [MQTT-3.3.2-2]"],
    ['sport/#', "'#' in a topic name [MQTT-3.3.2-2]"],
    ['#', "'#' alone"],
    ['+', "'+' alone"],
    ['sport+', "'+' inside a level"],
    ['a\u0000b', 'NUL [MQTT-4.7.3-2]'],
    ['', 'empty topic [MQTT-4.7.3-1]'],
    ['a/b/c/d/e', 'five levels with maxTopicLevels 4'],
  ];
  let n = 0;
  for (const [topic, why] of cases) {
    const bad = await connect(`bad-publisher-${++n}`);
    bad.sendBytes(publishBytes(Buffer.from(topic, 'utf8'), Buffer.from('x')));
    await bad.waitClosed();
    t.pass(`closed: ${why}`);
    await bystander.check(t, why);
  }
  t.equal(broker.metrics.limitHits.maxTopicLevels, 1, 'the too-many-levels case counts as a maxTopicLevels hit');

  const ok = await connect('good-publisher');
  ok.send({ cmd: 'publish', topic: 'a/b/c/d', payload: Buffer.from('four levels'), qos: 1, messageId: 7, retain: false, dup: false });
  const puback = await ok.next('puback');
  t.equal(puback.messageId, 7, 'exactly maxTopicLevels levels is accepted');
  const got = await bystander.client.next('publish');
  t.equal(got.topic, 'a/b/c/d', 'and routed');
  t.equal(ok.closed, false);
});

t.test('invalid topic filters in SUBSCRIBE close that connection only', async (t) => {
  const { broker, connect, makeBystander } = await setup(t, { limits: { maxTopicLevels: 4 } });
  const bystander = await makeBystander();
  const cases: [string, string][] = [
    ['a/#/b', "'#' not last [MQTT-4.7.1-2]"],
    ['a+', "'+' not a whole level [MQTT-4.7.1-3]"],
    ['sport/tennis#', "'#' not a whole level"],
    ['#/a', "'#' first and not last"],
    ['a/\u0000', 'NUL [MQTT-4.7.3-2]'],
    ['', 'empty filter [MQTT-4.7.3-1]'],
    ['+/+/+/+/#', 'five levels with maxTopicLevels 4'],
  ];
  let n = 0;
  for (const [filter, why] of cases) {
    const bad = await connect(`bad-subscriber-${++n}`);
    bad.sendBytes(subscribeBytes(Buffer.from(filter, 'utf8')));
    await bad.waitClosed();
    t.equal(
      bad.received.some((p) => p.cmd === 'suback'),
      false,
      `closed without SUBACK: ${why}`,
    );
    await bystander.check(t, why);
  }
  t.equal(broker.metrics.limitHits.maxTopicLevels, 1, 'the too-many-levels filter counts as a maxTopicLevels hit');
  t.equal(broker.subscriptions.size, 1, "no invalid filter was stored (only the bystander's '#')");
});

t.test('ill-formed UTF-8 in a topic closes the connection [MQTT-1.5.3-1]', async (t) => {
  const { connect, makeBystander } = await setup(t);
  const bystander = await makeBystander();
  const cases: [number[], string][] = [
    [[0x61, 0xff, 0x62], '0xFF is never valid'],
    [[0x61, 0xc0, 0xaf], 'overlong encoding of "/"'],
    [[0x61, 0xed, 0xa0, 0x80], 'UTF-16 surrogate U+D800 encoded in UTF-8'],
    [[0x61, 0xe2, 0x82], 'truncated 3-byte sequence at the end'],
    [[0x61, 0xf0, 0x9f, 0x98, 0x62], 'truncated 4-byte sequence (decodes to one 3-byte U+FFFD)'],
    [[0x80], 'lone continuation byte'],
  ];
  let n = 0;
  for (const [bytes, why] of cases) {
    const bad = await connect(`utf8-publisher-${++n}`);
    bad.sendBytes(publishBytes(Buffer.from(bytes), Buffer.from('payload'), 1, 9));
    await bad.waitClosed();
    t.equal(
      bad.received.some((p) => p.cmd === 'puback'),
      false,
      `PUBLISH closed without PUBACK: ${why}`,
    );
    await bystander.check(t, why);
  }
  for (const [bytes, why] of cases.slice(3)) {
    const bad = await connect(`utf8-subscriber-${++n}`);
    bad.sendBytes(subscribeBytes(Buffer.from(bytes)));
    await bad.waitClosed();
    t.equal(
      bad.received.some((p) => p.cmd === 'suback'),
      false,
      `SUBSCRIBE closed without SUBACK: ${why}`,
    );
    await bystander.check(t, `subscribe ${why}`);
  }

  // Control: U+FFFD itself, properly encoded (EF BF BD), is valid UTF-8 and must be accepted.
  const good = await connect('utf8-good');
  const topic = Buffer.from([0x61, 0x2f, 0xef, 0xbf, 0xbd]);
  good.sendBytes(publishBytes(topic, Buffer.from('ok'), 1, 3));
  t.equal((await good.next('puback')).messageId, 3, 'a well-formed U+FFFD in a topic is accepted');
  const got = await bystander.client.next('publish');
  t.equal(got.topic, 'a/\uFFFD', 'and routed');
});

t.test("topics starting with '$' are not delivered to '#' or '+' subscribers [MQTT-4.7.2-1]", async (t) => {
  const { connect, subscribe } = await setup(t);
  const all = await connect('all');
  t.same(await subscribe(all, ['#', '+/bar', '+/+']), [0, 0, 0]);
  const dollar = await connect('dollar');
  t.same(await subscribe(dollar, ['$foo/#', '$foo/+']), [0, 0]);
  const pub = await connect('pub');
  for (const topic of ['$foo/bar', '$SYS/fake', 'plain/bar']) {
    pub.send({ cmd: 'publish', topic, payload: Buffer.from(topic), qos: 0, retain: false, dup: false });
  }
  // The broker routes one publisher's messages in order, so 'plain/bar' arriving first at 'all'
  // means the two $-topics were not routed to it.
  const first = await all.next('publish');
  t.equal(first.topic, 'plain/bar', "'#', '+/bar' and '+/+' did not receive $foo/bar or $SYS/fake");
  t.same(
    (await all.collect('publish', 200)).map((p) => p.topic),
    [],
    "'plain/bar' delivered once despite three overlapping filters, nothing else",
  );
  const got = await dollar.next('publish');
  t.equal(got.topic, '$foo/bar', "'$foo/#' receives the $-topic (once, despite overlapping '$foo/+')");
  t.same(
    (await dollar.collect('publish', 200)).map((p) => p.topic),
    [],
    'no duplicate and no other message',
  );

  // Retained $-topics follow the same rule on SUBSCRIBE.
  pub.send({ cmd: 'publish', topic: '$foo/kept', payload: Buffer.from('r'), qos: 1, messageId: 1, retain: true, dup: false });
  await pub.next('puback');
  const late = await connect('late');
  await subscribe(late, ['#']);
  t.same(
    (await late.collect('publish', 200)).map((p) => p.topic),
    [],
    "a new '#' subscriber gets no retained $-topic",
  );
  const lateDollar = await connect('late-dollar');
  await subscribe(lateDollar, ['$foo/#']);
  const retained = await lateDollar.next('publish');
  t.equal(retained.topic, '$foo/kept');
  t.equal(retained.retain, true);
});

t.test('maxPacketSize', async (t) => {
  const { broker, connect, connectSocket, makeBystander } = await setup(t, { limits: { maxPacketSize: 128 } });
  const bystander = await makeBystander();

  // A client announcing a large packet is disconnected before the body arrives.
  const announcer = await connect('announcer');
  announcer.sendBytes(Buffer.concat([Buffer.from([0x30]), varInt(100_000_000), u16(1), Buffer.from('a')]));
  await announcer.waitClosed();
  t.equal(broker.metrics.limitHits.maxPacketSize, 1, 'announcing 100 MB is counted');
  await bystander.check(t, 'after an announced large packet');

  // A whole oversized packet arriving in one write is refused too, and not routed.
  const whole = await connect('whole');
  whole.sendBytes(publishBytes(Buffer.from('big'), Buffer.alloc(500, 0x61)));
  await whole.waitClosed();
  t.equal(broker.metrics.limitHits.maxPacketSize, 2, 'a complete 500-byte packet in one chunk is counted');
  await bystander.check(t, 'after a whole oversized packet (it must not have been routed)');

  // Before CONNECT as well: a huge CONNECT header.
  const early = await connectSocket();
  early.sendBytes(Buffer.concat([Buffer.from([0x10]), varInt(50_000_000)]));
  await early.waitClosed();
  t.equal(broker.metrics.limitHits.maxPacketSize, 3, 'an oversized CONNECT is counted');

  // At the limit: a packet of exactly 128 bytes in all (fixed header included) is accepted.
  // (Whether the limit counts the fixed header is ambiguous in the code today, see types.ts;
  // this size is within the limit under either reading.)
  const fits = await connect('fits');
  const topic = Buffer.from('fits');
  const payload = Buffer.alloc(126 - 2 - topic.length - 2, 0x62); // QoS 1: topic length, topic, packet id
  const packet = publishBytes(topic, payload, 1, 5);
  t.equal(packet.length, 128, 'the whole packet is exactly maxPacketSize bytes');
  fits.sendBytes(packet);
  t.equal((await fits.next('puback')).messageId, 5, 'a packet of exactly maxPacketSize is accepted');
  const got = await bystander.client.next('publish');
  t.equal(got.topic, 'fits');
  t.equal(broker.metrics.limitHits.maxPacketSize, 3, 'not counted as a hit');
});

t.test('maxConnections', async (t) => {
  const { broker, connect, connectSocket } = await setup(t, { limits: { maxConnections: 2 } });
  const a = await connect('client-a');
  const b = await connect('client-b');
  t.equal(broker.clients.size, 2);

  const refusedConnack = async (clientId: string) => {
    const c = await connectSocket();
    c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId, keepalive: 0 });
    const connack = await c.next('connack');
    await c.waitClosed();
    return connack;
  };
  const third = await refusedConnack('client-c');
  t.equal(third.returnCode, 3, 'the third client gets CONNACK 3 "server unavailable"');
  t.equal(third.sessionPresent, false);
  t.equal(broker.metrics.limitHits.maxConnections, 1, 'counted');
  t.equal(broker.clients.has('client-c'), false);

  // Takeover of an existing id is always allowed and does not add a connection.
  const a2 = await connect('client-a');
  t.pass('a takeover of client-a at the limit is accepted');
  await a.waitClosed();
  t.pass('the old client-a connection is closed');
  t.equal(broker.clients.size, 2);
  t.equal(broker.metrics.limitHits.maxConnections, 1, 'a takeover is not a limit hit');

  // Both remaining clients still work.
  b.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 't', qos: 0 }] });
  await b.next('suback');
  a2.send({ cmd: 'publish', topic: 't', payload: Buffer.from('hi'), qos: 0, retain: false, dup: false });
  t.equal(payloadText(await b.next('publish')), 'hi', 'routing between the connected clients works');

  // A slot freed by a disconnect can be used again.
  b.disconnect();
  await waitFor(() => broker.clients.size === 1, 3000, 'client-b to be gone');
  const d = await connect('client-d');
  t.equal(d.closed, false, 'a new client is accepted once a slot is free');
  t.equal((await refusedConnack('client-e')).returnCode, 3, 'and the limit applies again');
});

t.test('maxSubscriptionsPerClient', async (t) => {
  const { broker, connect, subscribe } = await setup(t, { limits: { maxSubscriptionsPerClient: 2 } });
  const c = await connect('subscriber');
  t.same(await subscribe(c, ['a', 'b/+', 'c/#'], 1), [1, 1, 0x80], 'the third filter gets SUBACK 0x80');
  t.equal(broker.metrics.limitHits.maxSubscriptionsPerClient, 1);
  t.same(await subscribe(c, ['a'], 2), [2], 're-subscribing an existing filter is a replacement, not a new one');
  t.same(await subscribe(c, ['d']), [0x80], 'a new filter is still refused');
  t.equal(c.closed, false, 'the client stays connected');

  const pub = await connect('publisher');
  pub.send({ cmd: 'publish', topic: 'c/x', payload: Buffer.from('refused filter'), qos: 0, retain: false, dup: false });
  pub.send({ cmd: 'publish', topic: 'b/x', payload: Buffer.from('granted filter'), qos: 0, retain: false, dup: false });
  const got = await c.next('publish');
  t.equal(got.topic, 'b/x', 'the refused filter was not stored; the granted one works');

  c.send({ cmd: 'unsubscribe', messageId: 50, unsubscriptions: ['a'] });
  await c.next('unsuback');
  t.same(await subscribe(c, ['d']), [0], 'after UNSUBSCRIBE there is room again');
  const other = await connect('other');
  t.same(await subscribe(other, ['x', 'y']), [0, 0], 'the limit is per client');
});

t.test('maxRetained', async (t) => {
  const { broker, connect, subscribe } = await setup(t, { limits: { maxRetained: 1 } });
  const live = await connect('live');
  await subscribe(live, ['r/#']);
  const pub = await connect('pub');
  const publishRetained = async (topic: string, payload: string, id: number) => {
    pub.send({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, messageId: id, retain: true, dup: false });
    await pub.next('puback');
  };
  await publishRetained('r/1', 'one', 1);
  await publishRetained('r/2', 'two', 2);
  const first = await live.next('publish');
  const second = await live.next('publish');
  t.same(
    [first.topic, second.topic],
    ['r/1', 'r/2'],
    'both messages are delivered to current subscribers',
  );
  t.equal(broker.metrics.limitHits.maxRetained, 1, 'the second retained topic hit the limit');
  t.equal(broker.retained.size, 1);

  const late = await connect('late');
  await subscribe(late, ['r/#']);
  const retained = await late.next('publish');
  t.equal(retained.topic, 'r/1', 'only the first retained copy was kept');
  t.equal(retained.retain, true);
  t.same(await late.collect('publish', 200), [], 'no retained copy of r/2');

  await publishRetained('r/1', 'one again', 3);
  t.equal(broker.metrics.limitHits.maxRetained, 1, 'replacing the retained message of a kept topic is allowed');
  await publishRetained('r/1', '', 4); // [MQTT-3.3.1-10] empty payload deletes
  await publishRetained('r/2', 'two again', 5);
  t.equal(broker.metrics.limitHits.maxRetained, 1, 'after a delete there is room for another topic');
  const later = await connect('later');
  await subscribe(later, ['r/#']);
  const kept = await later.next('publish');
  t.same([kept.topic, payloadText(kept)], ['r/2', 'two again']);
});

t.test('malformed packets close that connection only [MQTT-4.8.0-1]', async (t) => {
  const { connect, connectSocket, makeBystander } = await setup(t);
  const bystander = await makeBystander();
  const cases: [number[], string][] = [
    [[0xf0, 0x00], 'type 15 (reserved in 3.1.1)'],
    [[0x00, 0x00], 'type 0 (reserved)'],
    [[0x36, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01], 'PUBLISH with QoS 3 [MQTT-3.3.1-4]'],
    [[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x00], 'SUBSCRIBE with reserved flags 0000 [MQTT-3.8.1-1]'],
    [[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x03], 'SUBSCRIBE requesting QoS 3 [MQTT-3.8.3-4]'],
    [[0xc1, 0x00], 'PINGREQ with a flag bit set [MQTT-2.2.2-2]'],
    [[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], 'remaining length of five bytes'],
    [[0x38, 0x04, 0x00, 0x01, 0x61, 0x62], 'QoS 0 PUBLISH with DUP [MQTT-3.3.1-2]'],
    [[0x20, 0x02, 0x00, 0x00], 'CONNACK from a client'],
    [[0x90, 0x03, 0x00, 0x01, 0x00], 'SUBACK from a client'],
  ];
  let n = 0;
  for (const [bytes, why] of cases) {
    const bad = await connect(`malformed-${++n}`);
    bad.sendBytes(bytes);
    await bad.waitClosed();
    t.pass(`closed: ${why}`);
    await bystander.check(t, why);
  }
  // Before CONNECT: garbage, and a first packet that is not CONNECT [MQTT-3.1.0-1].
  for (const [bytes, why] of [
    [[0xf0, 0x00], 'reserved type before CONNECT'],
    [[0xc0, 0x00], 'PINGREQ before CONNECT'],
  ] as [number[], string][]) {
    const bad = await connectSocket();
    bad.sendBytes(bytes);
    await bad.waitClosed();
    t.pass(`closed: ${why}`);
    await bystander.check(t, why);
  }
});

t.test('a subscriber that stops reading cannot exhaust memory or stall the broker', async (t) => {
  const maxOutgoingBytes = 256 * 1024;
  const { broker, connect, subscribe } = await setup(t, {
    limits: { maxOutgoingBytes, outgoingHighWater: 32 * 1024, backpressureTimeout: 20 },
  });
  const slow = await connect('slow');
  await subscribe(slow, ['flood/#']);
  slow.socket.pause(); // stops reading: its kernel buffers fill, then the broker's socket buffer

  const observer = await connect('observer');
  await subscribe(observer, ['probe/#']);
  const publisher = await connect('publisher');
  const slowConn = broker.clients.get('slow');
  if (slowConn === undefined) throw new Error('slow client not registered');

  const payload = Buffer.alloc(16 * 1024, 0x78);
  const packet = publishBytes(Buffer.from('flood/data'), payload);
  const maxMessages = 12_000; // ~190 MB: far more than memory may grow by
  const floodDeadline = Date.now() + 4000;
  // Socket buffers are Buffers, counted in arrayBuffers rather than heapUsed, so both are tracked.
  const memory = (): number => {
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };
  const heapBefore = memory();
  let heapMax = heapBefore;
  let bufferedMax = 0;
  let sent = 0;
  let worstPing = 0;
  let pings = 0;
  let flooding = true;

  // The observer pings and round-trips a message every 50 ms while the flood runs.
  const probe = (async () => {
    while (flooding) {
      const startedAt = Date.now();
      observer.send({ cmd: 'pingreq' });
      await observer.next('pingresp', 2000);
      observer.send({ cmd: 'publish', topic: `probe/${pings}`, payload: Buffer.from('p'), qos: 0, retain: false, dup: false });
      const echo = await observer.next('publish', 2000);
      if (echo.topic !== `probe/${pings}`) throw new Error(`probe got ${echo.topic}`);
      worstPing = Math.max(worstPing, Date.now() - startedAt);
      pings++;
      await new Promise((r) => setTimeout(r, 50));
    }
  })();

  try {
    while (sent < maxMessages && Date.now() < floodDeadline && !publisher.closed) {
      const more = publisher.socket.write(packet);
      sent++;
      if (sent % 64 === 0) {
        heapMax = Math.max(heapMax, memory());
        bufferedMax = Math.max(bufferedMax, slowConn.bufferedBytes);
      }
      if (!more) {
        // Bounded wait for our own socket to drain, so the test process does not buffer the flood.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.max(0, floodDeadline - Date.now()));
          publisher.socket.once('drain', () => {
            clearTimeout(timer);
            resolve();
          });
        });
        bufferedMax = Math.max(bufferedMax, slowConn.bufferedBytes);
      }
    }
  } finally {
    flooding = false;
  }
  await probe;
  heapMax = Math.max(heapMax, memory());
  const hits = broker.metrics.limitHits;
  t.comment(
    `sent ${sent} × 16 KiB in the flood; ${pings} probes, worst ${worstPing} ms; heap + buffers growth ${((heapMax - heapBefore) / 1e6).toFixed(1)} MB; ` +
      `slow buffer max ${bufferedMax}; maxOutgoingBytes hits ${hits.maxOutgoingBytes}, pauses ${hits.backpressurePauses}, timeouts ${hits.backpressureTimeouts}`,
  );

  // The broker pauses the publisher (backpressure), so the flood is slow; what matters is that it
  // offered many times more than the subscriber's buffer may hold.
  t.ok(sent * payload.length >= 16 * maxOutgoingBytes, 'the publisher offered at least 16 × maxOutgoingBytes');
  t.equal(publisher.closed, false, 'the publisher is not disconnected');
  t.equal(slow.closed, false, 'the slow subscriber is not disconnected');
  t.ok(pings >= 3, 'the observer completed several ping and publish round trips during the flood');
  t.ok(worstPing < 1500, `the broker stayed responsive (worst round trip ${worstPing} ms)`);
  t.ok(hits.maxOutgoingBytes > 0, 'QoS 0 messages to the slow subscriber were dropped (limitHits.maxOutgoingBytes)');
  t.ok(hits.backpressurePauses > 0, 'the publisher was paused (limitHits.backpressurePauses)');
  t.ok(broker.metrics.publishDropped >= hits.maxOutgoingBytes, 'drops are counted in publish/messages/dropped');
  t.ok(
    bufferedMax <= maxOutgoingBytes + packet.length,
    `the slow subscriber's socket buffer stayed within maxOutgoingBytes plus one message (max ${bufferedMax})`,
  );
  t.ok(heapMax - heapBefore < 100 * 1024 * 1024, `heapUsed + arrayBuffers grew by less than 100 MB (${((heapMax - heapBefore) / 1e6).toFixed(1)} MB)`);

  // Once the subscriber reads again, it receives the oldest buffered messages, intact.
  slow.socket.resume();
  const first = await slow.next('publish', 5000);
  t.equal(first.topic, 'flood/data');
  t.equal((first.payload as Buffer).length, payload.length, 'an intact message');
  await waitFor(() => slowConn.bufferedBytes === 0, 5000, 'the slow subscriber to drain');
  publisher.send({ cmd: 'publish', topic: 'flood/after', payload: Buffer.from('after'), qos: 1, messageId: 1, retain: false, dup: false });
  t.equal((await publisher.next('puback', 5000)).messageId, 1, 'the publisher is served normally afterwards');
  // The message after the flood reaches the (now reading) subscriber.
  const deadline = Date.now() + 5000;
  let sawAfter = false;
  while (!sawAfter && Date.now() < deadline) {
    const p = await slow.next('publish', Math.max(1, deadline - Date.now()));
    sawAfter = p.topic === 'flood/after';
  }
  t.ok(sawAfter, 'the slow subscriber receives new messages once it reads again');
});

t.test('a publisher paused for backpressure longer than 1.5 × its keepalive is not dropped for keepalive', async (t) => {
  // While paused the broker does not read the publisher, so the silence is the broker's doing
  // (and dropping the client would publish its will).
  const { broker, connect, subscribe } = await setup(t, {
    limits: { maxOutgoingBytes: 256 * 1024, outgoingHighWater: 32 * 1024, backpressureTimeout: 3000 },
  });
  const slow = await connect('ka-slow');
  await subscribe(slow, ['flood/#']);
  slow.socket.pause(); // its kernel buffers fill, then the broker's: the publisher stays paused until the timeout
  const publisher = await connect('ka-publisher', { keepalive: 1 });
  const packet = publishBytes(Buffer.from('flood/data'), Buffer.alloc(16 * 1024, 0x78));
  const hits = broker.metrics.limitHits;
  const deadline = Date.now() + 15_000;
  // Flood (within the client's own socket buffer) until one pause has lasted the whole
  // backpressureTimeout (3 s), twice the 1.5 s the publisher's keepalive allows.
  while (hits.backpressureTimeouts === 0 && !publisher.closed && Date.now() < deadline) {
    for (let i = 0; i < 16 && publisher.socket.writableLength < 1024 * 1024; i++) publisher.sendBytes(packet);
    await new Promise((r) => setTimeout(r, 5));
  }
  t.ok(hits.backpressureTimeouts > 0, 'a pause lasted the whole backpressureTimeout');
  t.equal(publisher.closed, false, 'the paused publisher was not dropped for keepalive');
  t.ok(broker.clients.has('ka-publisher'), 'and is still registered');
});

t.test('$SYS topics', async (t) => {
  const { connect, subscribe } = await setup(t, { sys: { interval: 1 } });
  const other = await connect('sys-other');
  const hashSub = await connect('sys-hash');
  await subscribe(hashSub, ['#']);
  const sys = await connect('sys-watcher');
  await subscribe(sys, ['$SYS/#']);

  const expected = [
    '$SYS/broker/version',
    '$SYS/broker/uptime',
    '$SYS/broker/clients/connected',
    '$SYS/broker/clients/disconnected',
    '$SYS/broker/clients/total',
    '$SYS/broker/clients/maximum',
    '$SYS/broker/messages/received',
    '$SYS/broker/messages/sent',
    '$SYS/broker/publish/messages/received',
    '$SYS/broker/publish/messages/sent',
    '$SYS/broker/publish/messages/dropped',
    '$SYS/broker/bytes/received',
    '$SYS/broker/bytes/sent',
    '$SYS/broker/bytes/queued',
    '$SYS/broker/bytes/outgoing',
    '$SYS/broker/retained messages/count',
    '$SYS/broker/subscriptions/count',
    '$SYS/broker/heap/current',
    '$SYS/broker/heap/maximum',
  ];
  // Last value seen per topic, retained or live (values are only re-published when they change,
  // so no message may be discarded).
  const latest = new Map<string, string>();
  // On SUBSCRIBE, the values published at start arrive at once as retained messages.
  const initial = new Map<string, PublishPacket>();
  const initialDeadline = Date.now() + 3000;
  while (expected.some((topic) => !initial.has(topic)) && Date.now() < initialDeadline) {
    const p = await sys.next('publish', Math.max(1, initialDeadline - Date.now()));
    latest.set(p.topic, payloadText(p));
    if (p.retain && !initial.has(p.topic)) initial.set(p.topic, p);
  }
  t.same(
    expected.filter((topic) => !initial.has(topic)),
    [],
    'every documented $SYS topic is delivered retained on SUBSCRIBE',
  );
  const initialText = (topic: string): string | undefined => {
    const p = initial.get(topic);
    return p === undefined ? undefined : payloadText(p);
  };
  t.equal(initialText('$SYS/broker/version'), 'edgeway test', 'version');
  t.match(initialText('$SYS/broker/uptime'), /^\d+ seconds$/, 'uptime in Mosquitto format');
  for (const topic of expected.slice(2)) t.match(initialText(topic), /^\d+$/, `${topic} is a number`);

  // Live updates: the connected count follows the clients (3 now: other, hashSub, sys).
  const waitValue = async (topic: string, ok: (v: string) => boolean, what: string) => {
    const deadline = Date.now() + 4000;
    for (;;) {
      const v = latest.get(topic);
      if (v !== undefined && ok(v)) return v;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; last ${topic} = ${String(v)}`);
      const p = await sys.next('publish', left);
      latest.set(p.topic, payloadText(p));
    }
  };
  await waitValue('$SYS/broker/clients/connected', (v) => v === '3', 'clients/connected = 3');
  t.pass('clients/connected reports 3 connected clients');
  const received = Number(await waitValue('$SYS/broker/messages/received', (v) => Number(v) >= 5, 'messages/received'));
  t.ok(received >= 5, `messages/received counts packets (3 CONNECT + 2 SUBSCRIBE): ${received}`);
  const bytes = Number(await waitValue('$SYS/broker/bytes/received', (v) => Number(v) > 0, 'bytes/received'));
  t.ok(bytes > 50, `bytes/received counts bytes: ${bytes}`);
  await waitValue('$SYS/broker/subscriptions/count', (v) => v === '2', 'subscriptions/count = 2');
  t.pass('subscriptions/count reports the 2 subscriptions');

  other.disconnect();
  await waitValue('$SYS/broker/clients/connected', (v) => v === '2', 'clients/connected = 2');
  t.pass('clients/connected drops to 2 after a disconnect');

  // A '#' subscriber received none of it [MQTT-4.7.2-1].
  t.same(
    (await hashSub.collect('publish', 200)).map((p) => p.topic),
    [],
    "the '#' subscriber got no $SYS message",
  );

  // A later subscriber gets the current value, retained. Wait until the value reflecting its own
  // connection has been published, so the expected value is known.
  const late = await connect('sys-late');
  await waitValue('$SYS/broker/clients/connected', (v) => v === '3', 'clients/connected = 3 again');
  await subscribe(late, ['$SYS/broker/clients/+']);
  const retained = new Map<string, PublishPacket>();
  const lateDeadline = Date.now() + 3000;
  while (!retained.has('$SYS/broker/clients/connected') && Date.now() < lateDeadline) {
    const p = await late.next('publish', Math.max(1, lateDeadline - Date.now()));
    if (p.retain) retained.set(p.topic, p);
  }
  const connectedNow = retained.get('$SYS/broker/clients/connected');
  t.equal(connectedNow?.retain, true, 'the retained copy is sent flagged retained');
  t.equal(connectedNow && payloadText(connectedNow), '3', 'the retained value is the last published one');
});
