import t from 'tap';
import { generate, type Packet } from 'mqtt-packet';
import { ParserPool, type ParserOwner } from '../../gateway/broker/parser-pool';

/**
 * The pool relies on mqtt-packet's parser internals to know when a parser is idle. Feeding a
 * stream of packets split at every possible byte boundary, and returning the parser whenever it
 * says it is idle, must yield exactly the packets that were sent — in order, none lost, none
 * invented. A change in mqtt-packet that breaks the idle test fails here.
 */
const packets: Packet[] = [
  { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'pool-test', keepalive: 30 },
  { cmd: 'publish', topic: 'a/b', payload: Buffer.from('hello'), qos: 0, retain: false, dup: false },
  { cmd: 'publish', topic: 'sensors/greenhouse/temp', payload: Buffer.alloc(300, 7), qos: 1, messageId: 42, retain: true, dup: false },
  { cmd: 'pingreq' },
  { cmd: 'subscribe', messageId: 7, subscriptions: [{ topic: 'x/#', qos: 2 }] },
  { cmd: 'pubrel', messageId: 42 },
  { cmd: 'disconnect' },
];
const encoded = packets.map((p) => generate(p, { protocolVersion: 4 }));
const stream = Buffer.concat(encoded);
/** Offsets where one packet ends and the next begins. */
const boundaries = new Set<number>();
encoded.reduce((offset, buf) => (boundaries.add(offset + buf.length), offset + buf.length), 0);

class Collector implements ParserOwner {
  readonly seen: Packet[] = [];
  errors = 0;
  onParsedPacket(packet: Packet): void {
    this.seen.push(packet);
  }
  onParseError(): void {
    this.errors++;
  }
}

t.test('a stream split at every byte boundary parses identically through a pooled parser', async (t) => {
  const pool = new ParserPool();
  for (let split = 1; split < stream.length; split++) {
    const owner = new Collector();
    let parser = null as ReturnType<ParserPool['acquire']> | null;
    let released = 0;
    for (const chunk of [stream.subarray(0, split), stream.subarray(split)]) {
      parser ??= pool.acquire(owner, 4);
      const left = parser.parse(chunk);
      if (left === 0 && ParserPool.isIdle(parser)) {
        pool.release(parser);
        parser = null;
        released++;
      }
    }
    t.equal(owner.errors, 0, `no parse error at split ${split}`);
    t.same(owner.seen.map((p) => p.cmd), packets.map((p) => p.cmd), `same packets in order at split ${split}`);
    // Idle exactly when the data so far ends on a packet boundary.
    t.equal(released, boundaries.has(split) ? 2 : 1, `released whenever idle, at split ${split}`);
    t.equal(parser, null, `returned after the last packet, at split ${split}`);
  }
});

t.test('a parser holding half a packet is not idle', async (t) => {
  const pool = new ParserPool();
  const parser = pool.acquire(new Collector(), 4);
  parser.parse(stream.subarray(0, 1)); // just the fixed-header byte
  t.notOk(ParserPool.isIdle(parser), 'header byte only');
  parser.parse(stream.subarray(1, 5));
  t.notOk(ParserPool.isIdle(parser), 'header and length, body missing');
});

t.test('a pooled parser does not leak the previous owner or protocol version', async (t) => {
  const pool = new ParserPool();
  const first = new Collector();
  const parser = pool.acquire(first, 4);
  parser.parse(generate({ cmd: 'pingreq' }));
  pool.release(parser);
  const second = new Collector();
  const again = pool.acquire(second, 4);
  t.equal(again, parser, 'the same parser is reused');
  again.parse(generate({ cmd: 'pingreq' }));
  t.equal(first.seen.length, 1, 'first owner got only its own packet');
  t.equal(second.seen.length, 1, 'second owner got its packet');
});
