/**
 * Chaos scenario, end to end (issue 9 part 2): the whole chain under load while faults are injected
 * on a seeded schedule, then an account of every message.
 *
 *   npm run build && node dist/scripts/chaos.js [--seconds 600] [--seed N] [--short] [--json FILE]
 *
 * The chain (scripts/chaos/chain.ts): redis-server (AOF, fsync always) ← the gateway (storage on,
 * uplink of `sensors/#`, metrics) ← two socat ptys with sensors writing `{"n":N}` lines, and four
 * mqtt.js clients (3.1.1 and 5) publishing numbered QoS 1 messages. An observer subscribed to
 * `sensors/#` records what the gateway routed. Faults, one at a time with calm gaps between:
 * Redis stopped (SIGTERM) and restarted, Redis killed (SIGKILL) and restarted, Redis paused
 * (SIGSTOP … SIGCONT), the gateway `kill -9`ed and restarted on the same data, a serial device
 * unplugged and replugged at the same path, a subscriber that stops reading while a flood fills
 * its socket. `--short` (CI, about a minute): each fault once, briefly. Otherwise faults repeat in
 * seeded rounds for `--seconds`.
 *
 * At the end the load stops, the uplink drains, the whole stream is read, and
 * scripts/chaos/accounting.ts checks every source (the rules are written there): each
 * acknowledged MQTT message and each serial reading the gateway read is in the stream exactly
 * once, in order. Prints the fault timeline and a table per fault kind; exit 0 when nothing was
 * lost, duplicated or reordered, 1 when something was, 2 when the run itself failed (a process
 * would not start, the uplink did not drain, the gateway exited by itself).
 *
 * Bounded: faults stop being injected after `--seconds`; every wait has a deadline; each process
 * has a hard lifetime. Everything started is killed by PID and the temp folder removed, also on
 * Ctrl-C.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import Redis from 'ioredis';
import type { PtyPair } from '../test/helpers/pty';
import { runScript, type Cleanup } from './lib/cleanup';
import { account, formatTables, type FaultWindow, type NotReadWindow, type StreamEntry } from './chaos/accounting';
import { Chain, STREAM } from './chaos/chain';
import { inject, planFaults } from './chaos/faults';
import { mqttRecords, Observer, Publisher, Sensor } from './chaos/sources';

const USAGE = `usage: node dist/scripts/chaos.js [--seconds S] [--seed N] [--short] [--json FILE]
  --seconds S   time in which faults are injected (--short: each fault once, whatever S) [600]
  --seed N      the fault schedule's seed (printed; reuse it to replay) [random]
  --short       every fault once, briefly (the CI run)
  --json FILE   also write the result as JSON
`;

const { values } = parseArgs({
  options: {
    seconds: { type: 'string' },
    seed: { type: 'string' },
    short: { type: 'boolean', default: false },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help === true) {
  process.stdout.write(USAGE);
  process.exit(0);
}

function integer(name: string, text: string, min: number, max: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) {
    process.stderr.write(`--${name} must be an integer from ${min} to ${max}, got ${text}\n${USAGE}`);
    process.exit(2);
  }
  return n;
}

const SHORT = values.short === true;
const SECONDS = integer('seconds', values.seconds ?? (SHORT ? '60' : '600'), 10, 24 * 3600); // --short: only bounds the run
const SEED = integer('seed', values.seed ?? String(Math.floor(Math.random() * 2 ** 31)), 0, 2 ** 32 - 1);
const PORTS = ['s1', 's2'];
/** 4 publishers × 40/s and 2 sensors × 50/s: steady, light load, so faults, not overload, are tested. */
const PUBLISHERS = 4;
const PUBLISH_INTERVAL_MS = 25;
const SENSOR_INTERVAL_MS = 20;
const WARMUP_MS = 3000;
const DRAIN_TIMEOUT_MS = 120_000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const t0 = Date.now();
const log = (line: string): void => {
  process.stdout.write(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${line}\n`);
};

/** Every entry of the stream, in id order, paged. */
async function readStream(port: number): Promise<StreamEntry[]> {
  const redis = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 3, lazyConnect: true });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    const entries: StreamEntry[] = [];
    for (let from = '-'; ; ) {
      const page = await redis.xrange(STREAM, from, '+', 'COUNT', 5000);
      for (const [id, flat] of page) {
        const fields: Record<string, string> = {};
        for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i] as string] = flat[i + 1] as string;
        entries.push({ id, fields });
      }
      if (page.length < 5000) return entries;
      from = `(${(page.at(-1) as [string, string[]])[0]}`;
    }
  } finally {
    redis.disconnect();
  }
}

async function main(cleanup: Cleanup): Promise<number> {
  const lifetimeMs = (SECONDS + 600) * 1000;
  const plan = planFaults(SEED, SECONDS * 1000, SHORT, PORTS.length);
  log(`chaos: seed ${SEED}, ${SHORT ? 'short' : 'full'} run, faults for ${SECONDS} s (${plan.length} planned)`);

  const chain = await Chain.start(cleanup, { ports: PORTS, lifetimeMs });
  const sensors = PORTS.map((name) => new Sensor(name, chain.ptys.get(name) as PtyPair, SENSOR_INTERVAL_MS, Chain.openDevice));
  cleanup.teardown(async () => {
    for (const s of sensors) await s.unplug();
  });
  for (const s of sensors) await s.plug();
  await chain.startGateway();
  log(`gateway pid ${chain.gatewayPid} on ${chain.url}, redis pid ${chain.redis.pid} on ${chain.redis.port}`);

  const observer = new Observer(chain.url);
  observer.start();
  cleanup.teardown(() => observer.stop());
  for (const s of sensors) await observer.waitOnline(s.port, 0, 20_000);
  const publishers = Array.from({ length: PUBLISHERS }, (_, i) => new Publisher(`chaos-pub-${i + 1}`, chain.url, i % 2 === 0 ? 4 : 5, PUBLISH_INTERVAL_MS));
  for (const p of publishers) p.start();
  for (const s of sensors) s.start();
  await sleep(WARMUP_MS);

  const faults: FaultWindow[] = [];
  const notRead: NotReadWindow[] = [];
  const killedConnections = new Set<number>();
  const injectUntil = Date.now() + SECONDS * 1000;
  for (const fault of plan) {
    if (!SHORT && Date.now() + fault.gapMs + fault.durationMs > injectUntil) break;
    await sleep(fault.gapMs);
    chain.checkGatewayAlive();
    const w = await inject(fault, { chain, sensors, observer, faults, notRead, killedConnections });
    const acked = publishers.reduce((n, p) => n + p.acked, 0);
    log(`${w.kind.padEnd(18)} ${w.detail.padEnd(28)} recovered in ${((w.end - w.start) / 1000).toFixed(1)} s; acknowledged so far ${acked}`);
  }
  await sleep(2000);
  chain.checkGatewayAlive();

  // Sensors stop first, publishers a second later: the last readings are followed by acknowledged
  // messages on the observer's connection, which is what shows they were committed.
  for (const s of sensors) await s.stop();
  await sleep(1000);
  for (const p of publishers) await p.stop();
  log('load stopped; waiting for the uplink to drain');
  if (!(await chain.drained(DRAIN_TIMEOUT_MS))) {
    log(`the uplink did not drain within ${DRAIN_TIMEOUT_MS / 1000} s; gateway output:\n${chain.gatewayOutput(40)}`);
    return 2;
  }
  await observer.stop();
  const stream = await readStream(chain.redis.port);
  log(`stream ${STREAM}: ${stream.length} entries`);

  const result = account({
    faults,
    mqtt: mqttRecords(publishers),
    serial: sensors.flatMap((s) => s.records),
    observations: observer.observations,
    killedConnections,
    notReadWindows: notRead,
    stream,
  });
  process.stdout.write(`\nFaults (seed ${SEED}):\n`);
  for (const f of faults) process.stdout.write(`  +${((f.start - t0) / 1000).toFixed(1).padStart(6)} s  ${f.kind.padEnd(18)} ${f.detail}\n`);
  process.stdout.write(`\n${formatTables(result)}`);
  process.stdout.write('Not read: serial readings written while unplugged or the gateway was down (until the port was seen online), or after the last reading seen before that fault.\n');
  if (values.json !== undefined) writeFileSync(values.json, `${JSON.stringify({ seed: SEED, short: SHORT, seconds: SECONDS, faults, ...result }, null, 2)}\n`);
  if (result.failures.length > 0) {
    process.stdout.write(`\nFAIL:\n${result.failures.map((f) => `  ${f}`).join('\n')}\n`);
    return 1;
  }
  process.stdout.write(`\nPASS: every acknowledged message and every serial reading read is in the stream exactly once, in order (${((Date.now() - t0) / 1000).toFixed(0)} s)\n`);
  return 0;
}

runScript('chaos', main);
