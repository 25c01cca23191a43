/**
 * The protocol fuzzer's generator (test/fuzz/): its "valid" packets must really be valid — else
 * the fuzzer only ever tests the parser's first error — and its plans must be reproducible from
 * the seed, or a failing run could not be replayed.
 */
import t from 'tap';
import fc from 'fast-check';
import { generate, parser as createParser, type Packet } from 'mqtt-packet';
import { encode, mutate, MUTATIONS } from '../fuzz/mutations';
import { clientPacketArb, connectArb, type ProtocolLevel } from '../fuzz/packets';
import { buildPlan } from '../fuzz/plan';
import { Prng } from '../fuzz/prng';

/** Parses `bytes` as one packet of `level` (CONNECT says its own level); throws on a parse error. */
function parseOne(bytes: Buffer, level: ProtocolLevel | null): Packet {
  const parser = createParser(level === null ? {} : { protocolVersion: level });
  const packets: Packet[] = [];
  let error: Error | null = null;
  parser.on('packet', (p: Packet) => packets.push(p));
  parser.on('error', (err: Error) => (error = err));
  parser.parse(bytes);
  if (error !== null) throw error;
  if (packets.length !== 1) throw new Error(`expected one packet, parsed ${packets.length}`);
  return packets[0] as Packet;
}

for (const level of [3, 4, 5] as const) {
  t.test(`MQTT level ${level}: every valid packet encodes, parses back and re-encodes to the same bytes`, async (t) => {
    let checked = 0;
    for (const [what, arb, parseLevel] of [
      ['CONNECT', connectArb(level), null],
      ['client packet', clientPacketArb(level), level],
    ] as const) {
      fc.assert(
        fc.property(arb, (packet) => {
          const bytes = encode(packet, level);
          if (bytes === null) throw new Error(`mqtt-packet refused to encode ${JSON.stringify(packet)}`);
          const again = generate(parseOne(bytes, parseLevel), { protocolVersion: level });
          if (!again.equals(bytes)) throw new Error(`${what} did not survive a round trip: ${bytes.toString('hex')} → ${again.toString('hex')}`);
          checked++;
        }),
        { seed: 9, numRuns: 300 },
      );
    }
    t.equal(checked, 600, 'CONNECTs and client packets checked');
  });
}

t.test('a plan is a function of (seed, connection index)', async (t) => {
  const bytesOf = (seed: number, index: number) => Buffer.concat(buildPlan(seed, index).writes.map((w) => w.bytes));
  for (const index of [0, 1, 57, 1000]) t.ok(bytesOf(42, index).equals(bytesOf(42, index)), `connection ${index}: the same bytes twice`);
  const differing = [0, 1, 2, 3, 4, 5, 6, 7].filter((index) => !bytesOf(42, index).equals(bytesOf(43, index))).length;
  t.ok(differing >= 7, `another seed gives other bytes (${differing} of 8 connections differ)`);
  const plan = buildPlan(42, 3);
  t.equal(plan.writes.reduce((n, w) => n + w.packets, 0), plan.packets, 'the writes account for every packet of the plan');
});

t.test('every mutation applies to some packets, and a plan set covers every mutation and opening', async (t) => {
  const rng = new Prng(5);
  const samples = [3, 4, 5].flatMap((level) => fc.sample(clientPacketArb(level as ProtocolLevel), { seed: level, numRuns: 100 }).map((p) => [p, level as ProtocolLevel] as const));
  const connect = fc.sample(connectArb(5), { seed: 1, numRuns: 1 })[0] as Packet;
  for (const kind of MUTATIONS) {
    const produced = samples.filter(([packet, level]) => mutate(rng, kind, packet, level, connect) !== null).length;
    t.ok(produced > 0, `${kind}: applies to ${produced} of ${samples.length} packets`);
  }
  const seen = new Set<string>();
  const openings = new Set<string>();
  for (let i = 0; i < 400; i++) {
    const plan = buildPlan(1, i);
    openings.add(plan.opening);
    for (const kind of Object.keys(plan.mutations)) seen.add(kind);
  }
  t.same([...seen].sort(), [...MUTATIONS].sort(), '400 plans use every mutation');
  t.same([...openings].sort(), ['connect', 'mutated-connect', 'no-connect'], 'and every way of opening a connection');
});

t.test('bad-utf8 puts an ill-formed sequence (or U+0000) where a string was, and mqtt-packet alone does not always notice', async (t) => {
  const rng = new Prng(11);
  const packets = fc.sample(clientPacketArb(4), { seed: 3, numRuns: 200 }).filter((p) => p.cmd === 'publish');
  let accepted = 0;
  for (const packet of packets) {
    const bytes = mutate(rng, 'bad-utf8', packet, 4, packet)?.bytes;
    if (bytes === undefined) continue;
    t.not(bytes.toString('hex'), encode(packet, 4)?.toString('hex'), 'the bytes changed');
    try {
      parseOne(bytes, 4);
      accepted++;
    } catch {
      // refused by mqtt-packet itself
    }
  }
  // The broker's own UTF-8 check (parser-pool.ts) is what closes these connections.
  t.ok(accepted > 0, `${accepted} damaged PUBLISHes parse without error in plain mqtt-packet`);
});
