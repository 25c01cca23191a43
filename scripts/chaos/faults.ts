/**
 * The fault schedule of a chaos run (seeded, so `--seed` replays it) and the injection of each
 * fault into the chain, recording its window (for the per-fault rows of the table) and the spans
 * in which serial readings may go unread (for the accounting's not-read rule).
 */
import { SeededRandom } from '../lib/random';
import { FAULT_KINDS, type FaultKind, type FaultWindow, type NotReadWindow } from './accounting';
import type { Chain } from './chain';
import { stallSubscriber, type Observer, type Sensor } from './sources';

export interface PlannedFault {
  readonly kind: FaultKind;
  /** Calm time before it (ms). */
  readonly gapMs: number;
  /** How long the fault lasts before recovery starts (ms). */
  readonly durationMs: number;
  /** serial-unplug: the index of the sensor. */
  readonly target: number;
}

/**
 * Short (CI): every kind once, in a seeded order, with short durations. Full: seeded rounds of
 * every kind until `totalMs` of planned time is used.
 */
export function planFaults(seed: number, totalMs: number, short: boolean, sensors: number): PlannedFault[] {
  const rng = new SeededRandom(seed);
  const plan: PlannedFault[] = [];
  const duration = (kind: FaultKind): number => {
    if (kind === 'gateway-kill') return short ? rng.int(500, 2000) : rng.int(300, 4000);
    return short ? rng.int(2000, 4000) : rng.int(2000, 8000);
  };
  let planned = 0;
  do {
    for (const kind of rng.shuffle(FAULT_KINDS)) {
      const fault = { kind, gapMs: short ? rng.int(3000, 5000) : rng.int(3000, 10_000), durationMs: duration(kind), target: rng.int(0, sensors - 1) };
      planned += fault.gapMs + fault.durationMs;
      plan.push(fault);
    }
  } while (!short && planned < totalMs);
  return plan;
}

/** How long after a fault's recovery messages still count for that fault (reconnects, drains). */
const SETTLE_MS = 1000;
/** The longest a port may take to be seen online again after a replug or a gateway restart. */
const ONLINE_TIMEOUT_MS = 20_000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface FaultContext {
  readonly chain: Chain;
  readonly sensors: readonly Sensor[];
  readonly observer: Observer;
  readonly faults: FaultWindow[];
  readonly notRead: NotReadWindow[];
  /** Observer connections that ended because the gateway was killed. */
  readonly killedConnections: Set<number>;
}

/** Injects one fault, waits for the chain to recover, records its window. */
export async function inject(fault: PlannedFault, ctx: FaultContext): Promise<FaultWindow> {
  const { chain } = ctx;
  const start = Date.now();
  let detail = `${(fault.durationMs / 1000).toFixed(1)} s`;
  switch (fault.kind) {
    case 'redis-stop':
      await chain.redis.stop();
      await sleep(fault.durationMs);
      await chain.redis.restart();
      break;
    case 'redis-kill':
      await chain.redis.kill();
      await sleep(fault.durationMs);
      await chain.redis.restart();
      break;
    case 'redis-pause':
      chain.redis.pause();
      await sleep(fault.durationMs);
      chain.redis.resume();
      break;
    case 'gateway-kill': {
      // The observer's current connection dies with this gateway process.
      if (ctx.observer.connected) ctx.killedConnections.add(ctx.observer.conn);
      const lastSeen = ctx.sensors.map((s) => ctx.observer.lastSeen(s.port));
      await chain.killGateway();
      await sleep(fault.durationMs);
      await chain.startGateway();
      for (const [i, sensor] of ctx.sensors.entries()) {
        const online = await ctx.observer.waitOnline(sensor.port, start, ONLINE_TIMEOUT_MS);
        ctx.notRead.push({ port: sensor.port, start, end: online, lastSeen: lastSeen[i] as number });
      }
      break;
    }
    case 'serial-unplug': {
      const sensor = ctx.sensors[fault.target] as Sensor;
      detail += ` ${sensor.port}`;
      const lastSeen = ctx.observer.lastSeen(sensor.port);
      await sensor.unplug();
      await sleep(fault.durationMs);
      const plugged = Date.now();
      await sensor.plug();
      const online = await ctx.observer.waitOnline(sensor.port, plugged, ONLINE_TIMEOUT_MS);
      ctx.notRead.push({ port: sensor.port, start, end: online, lastSeen });
      break;
    }
    case 'stalled-subscriber':
      detail += `, ${await stallSubscriber(chain.mqttPort, fault.durationMs)}`;
      break;
  }
  const window = { kind: fault.kind, start, end: Date.now() + SETTLE_MS, detail };
  ctx.faults.push(window);
  return window;
}
