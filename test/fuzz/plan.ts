/**
 * What one fuzz connection sends, decided entirely by (run seed, connection index): replaying a
 * seed replays every connection's bytes, and one connection can be replayed alone (`--replay`).
 *
 * A plan is a valid session (packets.ts) — usually a CONNECT first, then client traffic — in which
 * some packets are replaced by mutations (mutations.ts), at a rate drawn per connection: some
 * connections stay valid for long (deep states), others are all garbage. The bytes are cut into
 * writes at random boundaries, so packets arrive split across reads, several per read, or whole.
 */
import fc from 'fast-check';
import type { Packet } from 'mqtt-packet';
import { encode, mutate, MUTATIONS, type Mutated, type MutationKind } from './mutations';
import { clientPacketArb, sessionArb, type ProtocolLevel, type ValidSession } from './packets';
import { deriveSeed, Prng } from './prng';

export interface ConnectionPlan {
  readonly index: number;
  readonly level: ProtocolLevel;
  /** How the stream begins: a valid CONNECT, a damaged one, or another packet (wrong order). */
  readonly opening: 'connect' | 'mutated-connect' | 'no-connect';
  /** The stream, cut into writes; `packets` is the number of packets a write completes. */
  readonly writes: readonly { readonly bytes: Buffer; readonly packets: number }[];
  readonly packets: number;
  /** Mutated packets in this plan, by kind. */
  readonly mutations: Partial<Record<MutationKind, number>>;
  /** How the client leaves when the server has not closed first. */
  readonly ending: 'end' | 'destroy';
}

/** Mutation rates a connection is given, one drawn per connection. */
const MUTATION_RATES = [0, 0.03, 0.1, 0.25, 0.5, 1];
/** Valid packets in a session at most (before mutations and floods). */
const MAX_SESSION_PACKETS = 40;

export function buildPlan(seed: number, index: number): ConnectionPlan {
  const planSeed = deriveSeed(seed, index);
  const rng = new Prng(planSeed);
  const session = fc.sample(sessionArb(MAX_SESSION_PACKETS), { seed: planSeed | 0, numRuns: 1 })[0] as ValidSession;
  const { level, connect } = session;
  const rate = rng.pick(MUTATION_RATES);
  const mutations: Partial<Record<MutationKind, number>> = {};
  const units: Buffer[] = [];
  const unitCounts: number[] = [];

  const add = (unit: Mutated | null): void => {
    if (unit === null) return;
    units.push(unit.bytes);
    unitCounts.push(unit.packets);
  };
  const valid = (packet: Packet): Mutated | null => {
    const bytes = encode(packet, level);
    return bytes === null ? null : { bytes, packets: 1 };
  };
  const mutated = (packet: Packet): Mutated | null => {
    // Some kinds do not apply to some packets (no string to spoil, a level without properties): try others.
    for (let attempt = 0; attempt < 4; attempt++) {
      const kind = rng.pick(MUTATIONS);
      const unit = mutate(rng, kind, packet, level, connect);
      if (unit !== null) {
        mutations[kind] = (mutations[kind] ?? 0) + 1;
        return unit;
      }
    }
    return null;
  };

  const openingRoll = rng.int(0, 99);
  const opening: ConnectionPlan['opening'] = openingRoll < 80 ? 'connect' : openingRoll < 92 ? 'mutated-connect' : 'no-connect';
  if (opening === 'connect') add(valid(connect));
  else if (opening === 'mutated-connect') add(mutated(connect));
  // 'no-connect': the first packet is whatever comes next, e.g. PUBLISH before CONNECT [MQTT-3.1.0-1].

  for (const packet of session.packets) add(rng.chance(rate) ? mutated(packet) : valid(packet));
  // A server-only packet is well-formed but a protocol error from a client.
  for (const packet of session.serverPackets) if (rng.chance(rate)) add(valid(packet));

  // Cut the stream into writes: whole packets, several packets, or pieces at random offsets.
  const writes: { bytes: Buffer; packets: number }[] = [];
  let i = 0;
  while (i < units.length) {
    const batch = Math.min(units.length - i, rng.int(1, 12));
    const bytes = Buffer.concat(units.slice(i, i + batch));
    const packets = unitCounts.slice(i, i + batch).reduce((a, b) => a + b, 0);
    i += batch;
    const pieces = rng.chance(0.5) ? 1 : rng.int(2, 6);
    const cuts = [...new Set(Array.from({ length: pieces - 1 }, () => rng.int(1, Math.max(1, bytes.length - 1))))].sort((a, b) => a - b);
    let start = 0;
    for (const cut of cuts) {
      if (cut <= start || cut >= bytes.length) continue;
      writes.push({ bytes: bytes.subarray(start, cut), packets: 0 });
      start = cut;
    }
    writes.push({ bytes: bytes.subarray(start), packets });
  }
  return {
    index,
    level,
    opening,
    writes,
    packets: unitCounts.reduce((a, b) => a + b, 0),
    mutations,
    ending: rng.chance(0.7) ? 'end' : 'destroy',
  };
}

/** Valid client packets of one level, for tests of the generator itself. */
export function validPackets(level: ProtocolLevel, seed: number, count: number): Packet[] {
  return fc.sample(clientPacketArb(level), { seed, numRuns: count });
}
