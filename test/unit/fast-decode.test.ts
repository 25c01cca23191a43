import t from 'tap';
import { generate, parser as createParser, type Packet } from 'mqtt-packet';
import { decodeCommonPackets } from '../../gateway/broker/fast-decode';

/** What mqtt-packet makes of the same bytes: the reference the fast path must agree with. */
function reference(bytes: Buffer): Packet[] {
  const out: Packet[] = [];
  const p = createParser({ protocolVersion: 4 });
  p.on('packet', (packet: Packet) => out.push(packet));
  p.parse(bytes);
  return out;
}

function essentials(p: Packet): unknown {
  switch (p.cmd) {
    case 'publish':
      return { cmd: p.cmd, topic: p.topic, payload: Buffer.from(p.payload).toString('hex'), qos: p.qos, dup: p.dup, retain: p.retain, messageId: p.qos > 0 ? p.messageId : undefined, length: p.length };
    case 'puback':
    case 'pubrec':
    case 'pubrel':
    case 'pubcomp':
      return { cmd: p.cmd, messageId: p.messageId };
    default:
      return { cmd: p.cmd };
  }
}

const common: Packet[] = [
  { cmd: 'publish', topic: 'sensors/a/temp', payload: Buffer.from('21.5'), qos: 0, retain: false, dup: false },
  { cmd: 'publish', topic: 'sensors/ü/€', payload: Buffer.alloc(200, 1), qos: 1, messageId: 65535, retain: true, dup: true },
  { cmd: 'publish', topic: 'x', payload: Buffer.alloc(0), qos: 2, messageId: 1, retain: false, dup: false },
  { cmd: 'publish', topic: 'big', payload: Buffer.alloc(20_000, 7), qos: 0, retain: false, dup: false }, // 3-byte length
  { cmd: 'puback', messageId: 9 },
  { cmd: 'pubrec', messageId: 10 },
  { cmd: 'pubrel', messageId: 11 },
  { cmd: 'pubcomp', messageId: 12 },
  { cmd: 'pingreq' },
];
const stream = Buffer.concat(common.map((p) => generate(p, { protocolVersion: 4 })));

t.test('decodes every common packet exactly as mqtt-packet does', async (t) => {
  const seen: Packet[] = [];
  const result = decodeCommonPackets(stream, { onFastPacket: (p) => (seen.push(p), true) });
  t.equal(result.offset, stream.length, 'consumed everything');
  t.equal(result.incomplete, false);
  t.same(seen.map(essentials), reference(stream).map(essentials));
});

t.test('stops at a split packet and reports it incomplete, at every split point', async (t) => {
  for (let split = 1; split < stream.length; split += split < 400 ? 1 : 997) {
    const seen: Packet[] = [];
    const head = stream.subarray(0, split);
    const result = decodeCommonPackets(head, { onFastPacket: (p) => (seen.push(p), true) });
    // Whatever was decoded is a prefix of the reference, and the rest starts a packet.
    const ref = reference(stream).map(essentials);
    t.same(seen.map(essentials), ref.slice(0, seen.length), `prefix at split ${split}`);
    if (result.offset < split) t.equal(result.incomplete, true, `incomplete at split ${split}`);
    // Decoding the remainder from that offset yields the rest: nothing lost, nothing doubled.
    const rest: Packet[] = [];
    const tail = decodeCommonPackets(stream.subarray(result.offset), { onFastPacket: (p) => (rest.push(p), true) });
    t.equal(tail.offset, stream.length - result.offset);
    t.same([...seen, ...rest].map(essentials), ref, `whole stream at split ${split}`);
  }
});

t.test('leaves anything unusual to mqtt-packet', async (t) => {
  const cases: [string, Buffer][] = [
    ['SUBSCRIBE', generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a', qos: 0 }] })],
    ['CONNECT', generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'c', clean: true, keepalive: 0 })],
    ['PUBLISH with QoS 3', Buffer.from([0x36, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01])],
    ['PUBREL with reserved flags 0000', Buffer.from([0x60, 0x02, 0x00, 0x01])],
    ['PUBACK with a wrong length', Buffer.from([0x40, 0x03, 0x00, 0x01, 0x00])],
    ['PUBLISH topic of ill-formed UTF-8 (truncated 4-byte sequence)', Buffer.from([0x30, 0x06, 0x00, 0x03, 0xf0, 0x9f, 0x98, 0x78])],
    ['PUBLISH whose topic length exceeds the packet', Buffer.from([0x30, 0x03, 0x00, 0x09, 0x61])],
    ['a five-byte remaining length', Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01])],
  ];
  for (const [what, bytes] of cases) {
    let called = 0;
    const result = decodeCommonPackets(bytes, { onFastPacket: () => (called++, true) });
    t.equal(result.offset, 0, `${what}: nothing consumed`);
    t.equal(result.incomplete, false, `${what}: not mistaken for a split packet`);
    t.equal(called, 0, `${what}: nothing emitted`);
  }
});

t.test('reports the announced size of a split PUBLISH, so a huge one can be refused early', async (t) => {
  const header = Buffer.from([0x30, 0x80, 0xe1, 0xeb, 0x17]); // remaining length 50,000,000
  const result = decodeCommonPackets(header, { onFastPacket: () => true });
  t.equal(result.incomplete, true);
  t.equal(result.announced, 50_000_005);
});

t.test('stops when the sink says the connection closed', async (t) => {
  let calls = 0;
  const result = decodeCommonPackets(stream, { onFastPacket: () => (calls++, false) });
  t.equal(calls, 1);
  t.ok(result.offset > 0 && result.offset < stream.length);
});

t.test('MQTT 5: PUBLISH with an empty property block and plain acknowledgements decode as mqtt-packet does; properties are left to it', async (t) => {
  const v5: Packet[] = [
    { cmd: 'publish', topic: 'sensors/a/temp', payload: Buffer.from('21.5'), qos: 0, retain: false, dup: false },
    { cmd: 'publish', topic: 'q1', payload: Buffer.alloc(300, 2), qos: 1, messageId: 7, retain: true, dup: false },
    // Reason code 0 stated: mqtt-packet then writes the short form (reason code and properties omitted).
    { cmd: 'puback', messageId: 9, reasonCode: 0 },
    { cmd: 'pingreq' },
  ];
  const bytes = Buffer.concat(v5.map((p) => generate(p, { protocolVersion: 5 })));
  const seen: Packet[] = [];
  const result = decodeCommonPackets(bytes, { onFastPacket: (p) => (seen.push(p), true) }, true);
  t.equal(result.offset, bytes.length, 'consumed everything');
  const ref: Packet[] = [];
  const p = createParser({ protocolVersion: 5 });
  p.on('packet', (packet: Packet) => ref.push(packet));
  p.parse(bytes);
  t.same(seen.map(essentials), ref.map(essentials), 'the same packets');
  t.equal(seen.some((s) => 'properties' in s), false, 'no properties');

  const withProperties = generate({ cmd: 'publish', topic: 'a', payload: Buffer.from('x'), qos: 0, retain: false, dup: false, properties: { contentType: 'text/plain' } }, { protocolVersion: 5 });
  const withReason = generate({ cmd: 'puback', messageId: 3, reasonCode: 0x10 }, { protocolVersion: 5 });
  for (const [what, packet] of [
    ['PUBLISH with properties', withProperties],
    ['PUBACK with a reason code', withReason],
  ] as const) {
    let called = 0;
    const r = decodeCommonPackets(packet, { onFastPacket: () => (called++, true) }, true);
    t.same([r.offset, r.incomplete, called], [0, false, 0], `${what}: left to mqtt-packet`);
  }
  // The same 3.1.1 bytes read as MQTT 5 would take the payload's first byte for a property length.
  const v4 = generate({ cmd: 'publish', topic: 'a', payload: Buffer.from('x'), qos: 0, retain: false, dup: false }, { protocolVersion: 4 });
  t.equal(decodeCommonPackets(v4, { onFastPacket: () => true }, true).offset, 0, 'a 3.1.1 PUBLISH (no property block) is not decoded as MQTT 5');
});
