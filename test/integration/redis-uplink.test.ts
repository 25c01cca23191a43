/**
 * The Redis uplink end to end (issue 5): the real gateway (`node dist/gateway/main.js --config`)
 * as a child process, a real `redis-server` (test/helpers/redis.ts) that the tests stop, kill,
 * restart and pause, mqtt.js publishers and a serial device on a socat pty. What is asserted is
 * the stream entry contract: key `edgeway:uplink:{gatewayId}`, id `<epoch>-<seq>`, fields topic,
 * payload (binary), qos, retain, ts, seq, gateway, source — every message exactly once, in order
 * per source, whatever happens to Redis or to the gateway.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { connectAsync, type MqttClient } from 'mqtt';
import type Redis from 'ioredis';
import { within } from '../helpers/mqtt-client';
import { startGatewayProcess } from '../helpers/gateway';
import { freePort, waitForOutput, type Running } from '../helpers/processes';
import { plugIn } from '../helpers/pty';
import { RedisServer } from '../helpers/redis';
import { SEQ_RESERVATION } from '../../adapters/sqlite';

const GATEWAY_ID = 'gw-test';
const STREAM = `edgeway:uplink:${GATEWAY_ID}`;
const STATUS_TOPIC = `edgeway/${GATEWAY_ID}/uplink`;
/** A binary tail on every test payload: NUL, CR LF, invalid UTF-8. */
const BINARY_TAIL = Buffer.from([0x00, 0xff, 0x0d, 0x0a, 0x80, 0xfe, 0x00]);

// The whole file is meant to take about half of this; run directly with node, tap's default
// (30 s) would be too tight, under the tap runner .taprc's 120 s too loose.
t.setTimeout(60_000);

const dir = mkdtempSync(join(tmpdir(), 'edgeway-redis-uplink-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns true; fails with `what` (and the last detail) after `timeoutMs`. */
async function until(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string, detail?: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let ok = false;
    try {
      ok = await check();
    } catch {
      ok = false; // e.g. Redis down while polling it
    }
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail === undefined ? '' : `: ${detail()}`}`);
    await sleep(20);
  }
}

/** Comments the time since the test began at each phase (where a slow run spent its time). */
function stopwatch(t: Test): (what: string) => void {
  const t0 = Date.now();
  return (what) => t.comment(`${Date.now() - t0} ms: ${what}`);
}

// ---- the gateway ----

interface GatewayOptions {
  readonly redisUrl: string;
  readonly password?: string;
  readonly replayRate?: number;
  readonly sysInterval?: number;
  readonly serial?: readonly { name: string; path: string }[];
}

interface Gateway {
  readonly name: string;
  readonly configPath: string;
  readonly port: number;
  readonly url: string;
  proc: Running;
  /** Everything the gateway wrote so far, over all its runs. */
  output(): string;
}

async function startGateway(t: Test, name: string, options: GatewayOptions): Promise<Gateway> {
  const port = await freePort();
  const config = {
    listeners: [{ protocol: 'mqtt', host: '127.0.0.1', port }],
    sys: { interval: options.sysInterval ?? 0 },
    log: { level: 'info' },
    storage: { path: join(dir, `${name}.db`), flushInterval: 20 },
    serial: (options.serial ?? []).map((s) => ({ name: s.name, path: s.path, format: 'kv', statusInterval: 0 })),
    redis: {
      url: options.redisUrl,
      ...(options.password === undefined ? {} : { password: options.password }),
      gatewayId: GATEWAY_ID,
      reconnect: { initialDelay: 50, maxDelay: 500 },
      commandTimeout: 1000,
      connectTimeout: 1000,
      ...(options.replayRate === undefined ? {} : { uplink: { replayRate: options.replayRate } }),
    },
  };
  const configPath = join(dir, `${name}.yaml`);
  // JSON is YAML.
  writeFileSync(configPath, JSON.stringify(config, null, 2));
  const earlier: Running[] = [];
  const gw: Gateway = {
    name,
    configPath,
    port,
    url: `mqtt://127.0.0.1:${port}`,
    proc: await spawnGateway(t, configPath),
    output: () => [...earlier, gw.proc].map((r) => r.stdout + r.stderr).join('\n'),
  };
  const spawnAgain = async (): Promise<void> => {
    earlier.push(gw.proc);
    gw.proc = await spawnGateway(t, configPath);
  };
  restarts.set(gw, spawnAgain);
  return gw;
}

const restarts = new WeakMap<Gateway, () => Promise<void>>();

function spawnGateway(t: Test, configPath: string): Promise<Running> {
  return startGatewayProcess(t, configPath, { cwd: dir });
}

/** Starts the gateway again on the same config, database and port. */
async function restartGateway(gw: Gateway): Promise<void> {
  const again = restarts.get(gw);
  if (again === undefined) throw new Error('unknown gateway');
  await again();
}

async function killGateway(gw: Gateway, signal: NodeJS.Signals): Promise<void> {
  if (gw.proc.child.pid !== undefined && gw.proc.child.exitCode === null) process.kill(gw.proc.child.pid, signal);
  await within(gw.proc.exited, `the gateway to exit on ${signal}`, 10_000);
}

// ---- MQTT ----

async function mqtt(t: Test, gw: Gateway, clientId: string): Promise<MqttClient> {
  const c = await connectAsync(gw.url, { clientId, reconnectPeriod: 0, connectTimeout: 3000 }, false);
  c.on('error', () => undefined);
  t.teardown(() => within(c.endAsync(true), 'mqtt.js end').catch(() => undefined));
  return c;
}

/**
 * Publishes QoS 1 messages `payloadOf(i)` for i = 0, 1, … with `window` publishes outstanding,
 * either `count` of them or until `stop()`. `acked` holds the indexes whose PUBACK arrived.
 */
class Publisher {
  readonly acked = new Set<number>();
  readonly failed = new Set<number>();
  private next = 0;
  private stopped = false;
  private readonly workers: Promise<void>[] = [];

  constructor(
    private readonly client: MqttClient,
    private readonly message: (i: number) => { topic: string; payload: Buffer; retain?: boolean },
    window: number,
    private readonly count = Infinity,
  ) {
    for (let w = 0; w < window; w++) this.workers.push(this.work());
  }

  get sent(): number {
    return this.next;
  }

  private async work(): Promise<void> {
    while (!this.stopped && this.next < this.count) {
      const i = this.next++;
      const m = this.message(i);
      try {
        await this.client.publishAsync(m.topic, m.payload, { qos: 1, retain: m.retain ?? false });
        this.acked.add(i);
      } catch {
        this.failed.add(i);
        return;
      }
    }
  }

  /** Stops publishing and waits (bounded) for the publishes in flight to be acknowledged. */
  async finish(timeoutMs = 15_000): Promise<void> {
    this.stopped = true;
    await within(Promise.all(this.workers), 'the last PUBACKs', timeoutMs);
  }

  /** Resolves once all `count` are acknowledged. */
  async done(timeoutMs: number): Promise<void> {
    await within(Promise.all(this.workers), `${this.count} PUBACKs`, timeoutMs);
  }
}

/** The latest values of some topics (retained status, $SYS). */
async function watcher(t: Test, gw: Gateway, filters: string[]): Promise<{ values: Map<string, string>; history: { topic: string; value: string }[] }> {
  const c = await mqtt(t, gw, `watcher-${Math.random().toString(36).slice(2)}`);
  const values = new Map<string, string>();
  const history: { topic: string; value: string }[] = [];
  c.on('message', (topic, payload) => {
    values.set(topic, payload.toString());
    history.push({ topic, value: payload.toString() });
  });
  await within(c.subscribeAsync(filters, { qos: 0 }), 'subscribe');
  return { values, history };
}

interface Status {
  state: string;
  backlog: number;
  oldestAgeMs: number;
}

function statusOf(values: Map<string, string>): Status | undefined {
  const text = values.get(STATUS_TOPIC);
  return text === undefined ? undefined : (JSON.parse(text) as Status);
}

// ---- the stream ----

interface StreamEntry {
  readonly id: string;
  readonly fields: Map<string, Buffer>;
  readonly names: string[];
}

/** The whole stream, XRANGE page by page (binary-safe). */
async function readStream(redis: Redis, key = STREAM, page = 2000): Promise<StreamEntry[]> {
  const all: StreamEntry[] = [];
  let start = '-';
  for (;;) {
    const rows = await redis.xrangeBuffer(key, start, '+', 'COUNT', page);
    for (const [id, flat] of rows) {
      const fields = new Map<string, Buffer>();
      const names: string[] = [];
      for (let i = 0; i + 1 < flat.length; i += 2) {
        const name = (flat[i] as Buffer).toString();
        names.push(name);
        fields.set(name, flat[i + 1] as Buffer);
      }
      all.push({ id: id.toString(), fields, names });
    }
    if (rows.length < page) return all;
    start = `(${all[all.length - 1]?.id ?? '0-0'}`;
  }
}

const text = (e: StreamEntry, name: string): string | undefined => e.fields.get(name)?.toString();

async function xlen(redis: Redis): Promise<number> {
  return redis.xlen(STREAM);
}

/** Waits until the stream holds `n` entries and stays there for `settleMs` (nothing more arrives). */
async function waitForStream(redis: Redis, n: number, timeoutMs: number, settleMs = 300): Promise<void> {
  let last = -1;
  await until(async () => (last = await xlen(redis)) >= n, timeoutMs, `XLEN ${n}`, () => `XLEN is ${last}`);
  await sleep(settleMs);
}

/** Text of an MQTT test payload: `<source>:<index>` followed by BINARY_TAIL. */
function testPayload(source: string, i: number): Buffer {
  return Buffer.concat([Buffer.from(`${source}:${i}`), BINARY_TAIL]);
}

function parsePayload(payload: Buffer): { who: string; index: number } | undefined {
  const end = payload.indexOf(0);
  const m = /^([^:]+):(\d+)$/.exec(payload.subarray(0, end < 0 ? payload.length : end).toString('latin1'));
  return m === null ? undefined : { who: m[1] as string, index: Number(m[2]) };
}

interface Analysis {
  /** Index lists per publisher, in stream order. */
  readonly bySource: Map<string, number[]>;
  readonly duplicates: string[];
  readonly outOfOrder: string[];
  readonly badId: string[];
  readonly seqNotIncreasing: string[];
  readonly gaps: string[];
  unparsable: number;
}

/**
 * Exactly once, in order: no (publisher, index) twice, each publisher's indexes ascending, ids
 * `0-<seq>` with `seq` the field, seq strictly increasing; `gaps` lists holes in the seq sequence.
 */
function analyse(entries: readonly StreamEntry[], keyOf: (e: StreamEntry) => { who: string; index: number } | undefined, epoch = '0'): Analysis {
  const bySource = new Map<string, number[]>();
  const seen = new Set<string>();
  const a: Analysis = { bySource, duplicates: [], outOfOrder: [], badId: [], seqNotIncreasing: [], gaps: [], unparsable: 0 };
  let lastSeq = -1;
  for (const e of entries) {
    const seq = Number(text(e, 'seq'));
    if (e.id !== `${epoch}-${text(e, 'seq')}`) a.badId.push(`${e.id} (seq field ${text(e, 'seq')})`);
    if (lastSeq >= 0 && !(seq > lastSeq)) a.seqNotIncreasing.push(`${lastSeq} then ${seq}`);
    if (lastSeq >= 0 && seq > lastSeq + 1) a.gaps.push(`${lastSeq + 1}..${seq - 1}`);
    lastSeq = seq;
    const key = keyOf(e);
    if (key === undefined) {
      a.unparsable++;
      continue;
    }
    const id = `${key.who}:${key.index}`;
    if (seen.has(id)) a.duplicates.push(id);
    seen.add(id);
    const list = bySource.get(key.who) ?? [];
    const prev = list[list.length - 1];
    if (prev !== undefined && key.index <= prev) a.outOfOrder.push(`${key.who}: ${key.index} after ${prev}`);
    list.push(key.index);
    bySource.set(key.who, list);
  }
  return a;
}

const first = (list: readonly string[]): string => (list.length === 0 ? 'none' : `${list.length}: ${list.slice(0, 5).join(', ')}`);

/** The exactly-once assertions against the sets of acknowledged indexes per publisher. */
function assertExactlyOnce(t: Test, entries: readonly StreamEntry[], acked: Map<string, Set<number>>, contiguousFrom?: number): void {
  const a = analyse(entries, (e) => parsePayload(e.fields.get('payload') ?? Buffer.alloc(0)));
  t.equal(a.unparsable, 0, 'every entry carries one of the test payloads');
  t.equal(first(a.duplicates), 'none', 'no message twice');
  t.equal(first(a.outOfOrder), 'none', 'each publisher in publish order');
  t.equal(first(a.badId), 'none', 'every id is 0-<seq>');
  t.equal(first(a.seqNotIncreasing), 'none', 'seq strictly increasing');
  if (contiguousFrom !== undefined) {
    t.equal(first(a.gaps), 'none', 'seq contiguous (no gaps)');
    t.equal(text(entries[0] as StreamEntry, 'seq'), String(contiguousFrom), `seq starts at ${contiguousFrom}`);
  }
  let missing = 0;
  let ackedTotal = 0;
  const examples: string[] = [];
  for (const [who, set] of acked) {
    ackedTotal += set.size;
    const got = new Set(a.bySource.get(who) ?? []);
    for (const i of set) {
      if (!got.has(i)) {
        missing++;
        if (examples.length < 5) examples.push(`${who}:${i}`);
      }
    }
  }
  t.equal(missing, 0, `every one of the ${ackedTotal} PUBACKed messages is in the stream${examples.length > 0 ? ` (missing e.g. ${examples.join(', ')})` : ''}`);
}

/** The publisher finishes; then the stream holds every message it had PUBACKed, exactly once, in order. */
async function assertStreamHoldsAcked(t: Test, r: Redis, pub: Publisher, who: string, what: string): Promise<void> {
  await pub.finish();
  t.equal(pub.failed.size, 0, 'no publish failed');
  const n = pub.acked.size;
  await waitForStream(r, n, 15_000, 500);
  const entries = await readStream(r);
  t.equal(entries.length, n, `the stream holds exactly the ${n} ${what}`);
  assertExactlyOnce(t, entries, new Map([[who, pub.acked]]), 1);
}

// ---- the tests ----

t.test('10,000 messages from two MQTT clients and a serial port: exactly once, in order, every field right', async (t) => {
  const redis = await RedisServer.start(t);
  const { pty, device } = await plugIn(t, dir, 'meter');
  const before = Date.now();
  const gw = await startGateway(t, 'bulk', { redisUrl: redis.url, serial: [{ name: 'meter', path: pty.gatewayPath }] });
  const r = redis.client();

  const PER_CLIENT = 4000;
  const LINES = 2000;
  const publishers: Publisher[] = [];
  for (let k = 0; k < 2; k++) {
    const c = await mqtt(t, gw, `client-${k}`);
    // Topics vary; every 1000th message is retained (the retain field says 1 for those).
    publishers.push(new Publisher(c, (i) => ({ topic: `sensors/c${k}/t${i % 7}`, payload: testPayload(`c${k}`, i), retain: i % 1000 === 999 }), 100, PER_CLIENT));
  }
  let lines = '';
  for (let i = 0; i < LINES; i++) lines += `seq=${i}\n`;
  await device.write(lines);
  await Promise.all(publishers.map((p) => p.done(30_000)));
  await waitForStream(r, 2 * PER_CLIENT + LINES, 20_000);
  const after = Date.now();

  const entries = await readStream(r, STREAM, 1000);
  t.equal(entries.length, 2 * PER_CLIENT + LINES, 'the stream holds every message once, nothing else');
  t.equal(await r.xlen(STREAM), entries.length, 'XRANGE pages add up to XLEN');

  // Every field of every entry.
  const wrong: string[] = [];
  const expectField = (e: StreamEntry, name: string, value: string): void => {
    if (text(e, name) !== value) wrong.push(`${e.id} ${name}=${JSON.stringify(text(e, name))} (expected ${JSON.stringify(value)})`);
  };
  const serialValues: number[] = [];
  for (const e of entries) {
    const names = [...e.names].sort().join(',');
    if (names !== 'gateway,payload,qos,retain,seq,source,topic,ts') wrong.push(`${e.id} fields ${names}`);
    expectField(e, 'gateway', GATEWAY_ID);
    const ts = Number(text(e, 'ts'));
    if (!(Number.isInteger(ts) && ts >= before && ts <= after)) wrong.push(`${e.id} ts=${text(e, 'ts')} not within the run`);
    const source = text(e, 'source');
    if (source === 'serial:meter') {
      expectField(e, 'topic', 'sensors/meter/seq');
      expectField(e, 'qos', '0');
      expectField(e, 'retain', '0');
      serialValues.push(Number(text(e, 'payload')));
      continue;
    }
    const p = parsePayload(e.fields.get('payload') ?? Buffer.alloc(0));
    if (p === undefined) {
      wrong.push(`${e.id} payload ${e.fields.get('payload')?.toString('hex')}`);
      continue;
    }
    const k = p.who.slice(1);
    expectField(e, 'source', `client-${k}`);
    expectField(e, 'topic', `sensors/c${k}/t${p.index % 7}`);
    expectField(e, 'qos', '1');
    expectField(e, 'retain', p.index % 1000 === 999 ? '1' : '0');
    if (!e.fields.get('payload')?.equals(testPayload(p.who, p.index))) wrong.push(`${e.id} payload bytes ${e.fields.get('payload')?.toString('hex')}`);
  }
  t.equal(first(wrong), 'none', 'topic, payload bytes, qos, retain, ts, gateway and source right in every entry');

  // One sample in full, field by field.
  const sample = entries.find((e) => text(e, 'source') === 'client-1' && parsePayload(e.fields.get('payload') ?? Buffer.alloc(0))?.index === 1999);
  t.ok(sample, 'the sample message c1:1999 is there');
  if (sample !== undefined) {
    t.match(sample.id, /^0-\d+$/, 'id <epoch 0>-<seq>');
    t.equal(sample.id, `0-${text(sample, 'seq')}`, 'the id is 0-<seq field>');
    t.equal(text(sample, 'topic'), 'sensors/c1/t4');
    t.same(sample.fields.get('payload'), Buffer.concat([Buffer.from('c1:1999'), BINARY_TAIL]), 'payload bytes exactly (NUL, CR LF, 0xff, 0x80 kept)');
    t.equal(text(sample, 'qos'), '1');
    t.equal(text(sample, 'retain'), '1', 'retain 1 for a retained publish');
    t.equal(text(sample, 'gateway'), GATEWAY_ID);
    t.equal(text(sample, 'source'), 'client-1');
    const ts = Number(text(sample, 'ts'));
    t.ok(ts >= before && ts <= after, `ts ${ts} is the arrival time in ms, within the run`);
  }

  const a = analyse(entries, (e) => {
    if (text(e, 'source') === 'serial:meter') return { who: 'serial', index: Number(text(e, 'payload')) };
    return parsePayload(e.fields.get('payload') ?? Buffer.alloc(0));
  });
  t.equal(first(a.duplicates), 'none', 'no message twice');
  t.equal(first(a.outOfOrder), 'none', 'in order per source (both clients and the serial port)');
  t.equal(first(a.badId), 'none', 'every id is 0-<seq field>');
  t.equal(first(a.seqNotIncreasing), 'none', 'seq strictly increasing along the stream');
  t.equal(first(a.gaps), 'none', 'and contiguous');
  for (const [who, n] of [['c0', PER_CLIENT], ['c1', PER_CLIENT], ['serial', LINES]] as const) {
    t.equal(a.bySource.get(who)?.length, n, `${n} from ${who}`);
  }
  t.same(serialValues.slice(0, 3), [0, 1, 2], 'serial readings as sent');
  await killGateway(gw, 'SIGTERM');
});

t.test('MQTT 5 properties travel in the stream entry as the `properties` JSON field; a message without them has no such field', async (t) => {
  const redis = await RedisServer.start(t);
  const gw = await startGateway(t, 'props', { redisUrl: redis.url });
  const v5 = await connectAsync(gw.url, { clientId: 'props-v5', protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 3000 }, false);
  v5.on('error', () => undefined);
  t.teardown(() => within(v5.endAsync(true), 'mqtt.js end').catch(() => undefined));
  const properties = {
    payloadFormatIndicator: true,
    messageExpiryInterval: 3600,
    contentType: 'application/json',
    responseTopic: 'replies/props',
    correlationData: Buffer.from([0x00, 0xff, 0x10]),
    userProperties: { unit: 'degC', tag: ['a', 'b'] },
  };
  await within(v5.publishAsync('sensors/props/v5', '{"t":21.5}', { qos: 1, properties }), 'PUBACK of the v5 publish');
  const v3 = await mqtt(t, gw, 'props-v3');
  await within(v3.publishAsync('sensors/props/v3', 'plain', { qos: 1 }), 'PUBACK of the 3.1.1 publish');
  const r = redis.client();
  await waitForStream(r, 2, 10_000, 100);
  const [withProps, without] = await readStream(r);
  t.same(JSON.parse(text(withProps as StreamEntry, 'properties') ?? 'null'), {
    payloadFormatIndicator: true,
    messageExpiryInterval: 3600,
    contentType: 'application/json',
    responseTopic: 'replies/props',
    correlationData: Buffer.from([0x00, 0xff, 0x10]).toString('base64'),
    userProperties: { unit: 'degC', tag: ['a', 'b'] },
  }, 'every message property, correlation data as base64, a repeated user property as a list');
  t.equal(text(withProps as StreamEntry, 'payload'), '{"t":21.5}');
  t.equal((without as StreamEntry).fields.has('properties'), false, 'no properties field for a message without properties');
  t.same((without as StreamEntry).names, ['topic', 'payload', 'qos', 'retain', 'ts', 'seq', 'gateway', 'source'], 'the other fields as before, in order');
  await killGateway(gw, 'SIGTERM');
});

t.test('Redis stopped and restarted three times while a client publishes: every PUBACKed message once, seq contiguous', async (t) => {
  const redis = await RedisServer.start(t, { appendonly: true });
  const gw = await startGateway(t, 'outage', { redisUrl: redis.url });
  const r = redis.client();
  const c = await mqtt(t, gw, 'steady');
  const pub = new Publisher(c, (i) => ({ topic: 'sensors/steady/v', payload: testPayload('steady', i) }), 50);
  await until(() => pub.acked.size >= 200, 5000, 'the first PUBACKs');
  for (let round = 0; round < 3; round++) {
    // Round 1 crashes Redis (its AOF with fsync always keeps what it acknowledged); the others stop it.
    if (round === 1) await redis.kill();
    else await redis.stop();
    const ackedAtStop = pub.acked.size;
    // Waits for progress rather than a fixed second: on a loaded machine a second of wall time may
    // hold few turns of the gateway's loop (this failed once under a load average of 4).
    await until(() => pub.acked.size >= ackedAtStop + 50, 15_000, `round ${round + 1}: PUBACKs while Redis is down`);
    t.ok(pub.acked.size > ackedAtStop, `round ${round + 1}: the gateway kept acknowledging while Redis was down (${pub.acked.size - ackedAtStop})`);
    await redis.restart();
    await sleep(400);
  }
  await assertStreamHoldsAcked(t, r, pub, 'steady', 'messages published');
  t.notMatch(gw.output(), /outbox dropped|error while/, 'nothing dropped');
  await killGateway(gw, 'SIGTERM');
});

t.test('kill -9 of the gateway while it drains a backlog: after a restart every message once, in order', async (t) => {
  const phase = stopwatch(t);
  const redis = await RedisServer.start(t);
  const gw = await startGateway(t, 'crash', { redisUrl: redis.url });
  await redis.stop();
  const N = 20_000;
  const pubs: Publisher[] = [];
  for (let k = 0; k < 2; k++) {
    const c = await mqtt(t, gw, `backlog-${k}`);
    pubs.push(new Publisher(c, (i) => ({ topic: `sensors/backlog/${k}`, payload: testPayload(`b${k}`, i) }), 250, N / 2));
  }
  await Promise.all(pubs.map((p) => p.done(30_000)));
  const acked = new Map(pubs.map((p, k) => [`b${k}`, p.acked]));
  t.equal(pubs.reduce((n, p) => n + p.acked.size, 0), N, `${N} messages acknowledged while Redis was down`);
  phase('backlog built');

  await redis.restart();
  const r = redis.client();
  let atKill = 0;
  // Poll fast: the drain takes well under a second.
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    atKill = await r.xlen(STREAM);
    if (atKill > 2000) break;
    await sleep(2);
  }
  process.kill(gw.proc.child.pid as number, 'SIGKILL');
  await gw.proc.exited;
  atKill = await r.xlen(STREAM);
  t.ok(atKill > 2000 && atKill < N, `killed mid-drain: ${atKill} of ${N} in the stream`);

  phase('killed');
  await restartGateway(gw);
  await waitForStream(r, N, 20_000, 500);
  phase('drained');
  const entries = await readStream(r);
  t.equal(entries.length, N, 'the stream holds each message once');
  assertExactlyOnce(t, entries, acked, 1);
  await killGateway(gw, 'SIGTERM');
});

t.test('kill -9 during live traffic with Redis up: every PUBACKed message once, in order; most QoS 0 messages were never written to disk; seqs continue above every one sent', async (t) => {
  const phase = stopwatch(t);
  const redis = await RedisServer.start(t);
  const gw = await startGateway(t, 'live', { redisUrl: redis.url, sysInterval: 1 });
  const r = redis.client();
  const sys = await watcher(t, gw, ['$SYS/broker/outbox/#']);
  // QoS 0 paced (no PUBACK: only order and uniqueness can be asserted for them) beside QoS 1.
  const fast = await mqtt(t, gw, 'live-q0');
  let q0 = 0;
  const pace = setInterval(() => {
    for (let k = 0; k < 50; k++) fast.publish('sensors/live/q0', testPayload('q0', q0++), { qos: 0 });
  }, 5);
  t.teardown(() => clearInterval(pace));
  const pub = new Publisher(await mqtt(t, gw, 'live-q1'), (i) => ({ topic: 'sensors/live/q1', payload: testPayload('q1', i) }), 20);
  await until(() => Number(sys.values.get('$SYS/broker/outbox/never written') ?? 0) > 1000 && pub.acked.size > 500, 15_000, 'live traffic, some of it never written', () => `${sys.values.get('$SYS/broker/outbox/never written')} never written, ${pub.acked.size} PUBACKs`);
  phase('live');
  process.kill(gw.proc.child.pid as number, 'SIGKILL');
  await gw.proc.exited;
  clearInterval(pace);
  const acked = new Set(pub.acked);
  const seqsBefore = (await readStream(r)).map((e) => Number(text(e, 'seq')));
  const highestSent = Math.max(...seqsBefore);
  t.ok(seqsBefore.length > 1000, `${seqsBefore.length} entries in the stream at the kill`);

  await restartGateway(gw);
  const after = await mqtt(t, gw, 'live-after');
  await within(after.publishAsync('sensors/live/q1', testPayload('q1', 1_000_000), { qos: 1 }), 'a PUBACK after the restart');
  acked.add(1_000_000);
  await until(async () => (await readStream(r)).some((e) => text(e, 'payload')?.startsWith('q1:1000000') === true), 10_000, 'the message published after the restart in the stream');
  phase('restarted');
  const entries = await readStream(r);
  const a = analyse(entries, (e) => parsePayload(e.fields.get('payload') ?? Buffer.alloc(0)));
  t.equal(first(a.duplicates), 'none', 'no message twice (QoS 0 or 1)');
  t.equal(first(a.outOfOrder), 'none', 'each publisher in publish order');
  t.equal(first(a.badId), 'none', 'every id is 0-<seq>: no epoch change was needed');
  t.equal(first(a.seqNotIncreasing), 'none', 'seq strictly increasing');
  const inStream = new Set(a.bySource.get('q1'));
  t.same([...acked].filter((i) => !inStream.has(i)), [], `every one of the ${acked.size} PUBACKed messages is in the stream`);
  const firstAfter = Number(text(entries[entries.length - 1] as StreamEntry, 'seq'));
  t.ok(firstAfter > highestSent, `the seq after the restart (${firstAfter}) is above every seq sent before the kill (${highestSent})`);
  t.ok(firstAfter - highestSent <= SEQ_RESERVATION + 1, 'and the gap is at most one reservation');
  await killGateway(gw, 'SIGTERM');
});

t.test('Redis absent at start: the gateway serves locally and buffers; Redis appears on the configured port; the backlog drains', async (t) => {
  const redisPort = await freePort();
  const phase = stopwatch(t);
  const gw = await startGateway(t, 'absent', { redisUrl: `redis://127.0.0.1:${redisPort}`, sysInterval: 1 });
  const w = await watcher(t, gw, [STATUS_TOPIC, '$SYS/broker/uplink/#', '$SYS/broker/outbox/messages']);
  await until(() => statusOf(w.values)?.state === 'disconnected', 3000, 'status disconnected');

  // Local routing works without Redis.
  const sub = await mqtt(t, gw, 'local-sub');
  const got: string[] = [];
  sub.on('message', (topic, payload) => got.push(`${topic} ${payload.toString('latin1')}`));
  await within(sub.subscribeAsync('sensors/#', { qos: 1 }), 'subscribe');
  const c = await mqtt(t, gw, 'early');
  await within(c.publishAsync('sensors/early/v', testPayload('early', 0), { qos: 1 }), 'publish');
  await until(() => got.length === 1, 3000, 'the local subscriber to get the message');
  t.equal(got[0], `sensors/early/v ${testPayload('early', 0).toString('latin1')}`, 'a local subscriber gets the message while Redis is absent');

  // The backlog grows while Redis is absent.
  const acked = new Set<number>([0]);
  const more = async (from: number, count: number): Promise<void> => {
    const p = new Publisher(c, (i) => ({ topic: 'sensors/early/v', payload: testPayload('early', from + i) }), 50, count);
    await p.done(5000);
    for (const i of p.acked) acked.add(from + i);
  };
  await more(1, 100);
  await until(() => w.values.get('$SYS/broker/uplink/backlog') === '101', 5000, '$SYS uplink/backlog 101', () => String(w.values.get('$SYS/broker/uplink/backlog')));
  await more(101, 200);
  await until(() => w.values.get('$SYS/broker/uplink/backlog') === '301', 5000, '$SYS uplink/backlog 301 (growing)', () => String(w.values.get('$SYS/broker/uplink/backlog')));
  t.equal(w.values.get('$SYS/broker/uplink/state'), 'disconnected', '$SYS uplink/state disconnected');
  t.equal(statusOf(w.values)?.state, 'disconnected', 'the status topic says disconnected');
  t.equal(w.values.get('$SYS/broker/outbox/messages'), '301', 'all in the outbox');
  t.match(gw.output(), /connection refused/, 'the log says why');

  phase('starting Redis');
  const redis = await RedisServer.start(t, { port: redisPort });
  t.equal(redis.port, redisPort, 'Redis on the port the gateway was configured with');
  const r = redis.client();
  await waitForStream(r, 301, 10_000);
  phase('drained');
  const entries = await readStream(r);
  t.equal(entries.length, 301, 'the backlog drained, each message once');
  assertExactlyOnce(t, entries, new Map([['early', acked]]), 1);
  // The status went through draining (with the backlog built up) to connected.
  await until(() => statusOf(w.values)?.state === 'connected', 5000, 'status connected', () => String(w.values.get(STATUS_TOPIC)));
  const statuses = w.history.filter((h) => h.topic === STATUS_TOPIC).map((h) => JSON.parse(h.value) as Status);
  t.ok(
    statuses.some((s) => s.state === 'draining' && s.backlog >= 301) || statuses.some((s) => s.state === 'connected' && s.backlog >= 301),
    `a status reported the backlog of 301 on reconnecting: ${JSON.stringify(statuses)}`,
  );
  t.ok(statuses.every((s) => typeof s.backlog === 'number' && typeof s.oldestAgeMs === 'number'), 'every status has backlog and oldestAgeMs');
  // Once drained, the status says so (the backlog reaches 0; $SYS with interval 1 too).
  await until(() => w.values.get('$SYS/broker/uplink/backlog') === '0', 5000, '$SYS uplink/backlog 0', () => String(w.values.get('$SYS/broker/uplink/backlog')));
  // The retained status is what a remote monitor reads: it must not keep announcing a backlog that
  // is gone (bound: 2 s, well below the 10 s periodic republish).
  const zero = await until(() => statusOf(w.values)?.backlog === 0, 2000, 'status backlog 0').then(() => true, () => false);
  t.ok(zero, `the status topic reports backlog 0 within 2 s of the drain (last status: ${String(w.values.get(STATUS_TOPIC))})`);
  await killGateway(gw, 'SIGTERM');
});

t.test('replayRate 500: a backlog of 1,500 takes at least ~3 s to drain', async (t) => {
  const redis = await RedisServer.start(t);
  const gw = await startGateway(t, 'paced', { redisUrl: redis.url, replayRate: 500 });
  await redis.stop();
  const N = 1500;
  const c = await mqtt(t, gw, 'paced');
  const pub = new Publisher(c, (i) => ({ topic: 'sensors/paced/v', payload: testPayload('paced', i) }), 100, N);
  await pub.done(15_000);
  await redis.restart();
  const r = redis.client();
  await until(async () => (await r.xlen(STREAM)) > 0, 10_000, 'the first entries');
  const started = Date.now();
  await until(async () => (await r.xlen(STREAM)) >= N, 20_000, `XLEN ${N}`);
  const took = Date.now() - started;
  // From the first entry to the last at 500/s: (1500 - one batch) / 500 ≈ 2.9 s.
  t.ok(took >= 2000, `drained in ${took} ms (≥ 2000 ms at 500 messages/s)`);
  t.ok(took < 15_000, `and not absurdly slow (${took} ms)`);
  await sleep(300);
  const entries = await readStream(r);
  t.equal(entries.length, N);
  assertExactlyOnce(t, entries, new Map([['paced', pub.acked]]), 1);
  await killGateway(gw, 'SIGTERM');
});

/** The gateway keeps serving and buffering while Redis refuses it; the log says why, without the password. */
async function unusableRedis(t: Test, name: string, redisUrl: string, password: string | undefined, logLine: RegExp, secret: string | undefined): Promise<void> {
  const gw = await startGateway(t, name, { redisUrl, sysInterval: 1, ...(password === undefined ? {} : { password }) });
  await waitForOutput(() => gw.output(), logLine, 5000, `the log line ${logLine}`);
  const w = await watcher(t, gw, ['$SYS/broker/outbox/messages', '$SYS/broker/uplink/state', STATUS_TOPIC]);
  const sub = await mqtt(t, gw, 'sub');
  const got: string[] = [];
  sub.on('message', (_topic, payload) => got.push(payload.toString('latin1')));
  await within(sub.subscribeAsync('sensors/#', { qos: 1 }), 'subscribe');
  const c = await mqtt(t, gw, 'pub');
  const pub = new Publisher(c, (i) => ({ topic: 'sensors/x/v', payload: testPayload('x', i) }), 10, 50);
  await pub.done(5000);
  t.equal(pub.acked.size, 50, 'publishes are acknowledged');
  await until(() => got.length === 50, 3000, 'the local subscriber to get all 50');
  t.pass('local subscribers are served');
  await until(() => w.values.get('$SYS/broker/outbox/messages') === '50', 5000, '$SYS outbox/messages 50', () => String(w.values.get('$SYS/broker/outbox/messages')));
  t.pass('the outbox keeps buffering');
  t.equal(w.values.get('$SYS/broker/uplink/state'), 'disconnected', 'uplink state disconnected');
  t.equal(statusOf(w.values)?.state, 'disconnected', 'status topic disconnected');
  t.equal(gw.proc.child.exitCode, null, 'the gateway is still running');
  await killGateway(gw, 'SIGTERM');
  t.same({ code: gw.proc.child.exitCode, signal: gw.proc.child.signalCode }, { code: 0, signal: null }, 'and stops cleanly');
  if (secret !== undefined) t.notOk(gw.output().includes(secret), 'the password appears nowhere in stdout or stderr');
  t.notMatch(gw.output(), /\n\s+at /, 'no stack trace');
}

t.test('wrong password: logged as an authentication failure (password never logged); the gateway serves and buffers', async (t) => {
  const redis = await RedisServer.start(t, { password: 'right-Secret-4711' });
  const wrong = 'wrong-Secret-8a3f9c';
  await t.test('password in the config', (t) => unusableRedis(t, 'authfield', redis.url, wrong, /authentication failed/, wrong));
  const inUrl = 'url-Secret-5e2d1b';
  await t.test('password in the URL', (t) => unusableRedis(t, 'authurl', `redis://default:${inUrl}@127.0.0.1:${redis.port}`, undefined, /authentication failed/, inUrl));
});

t.test('unreachable Redis: logged as connection refused; the gateway serves and buffers', async (t) => {
  const nobody = await freePort();
  await unusableRedis(t, 'refused', `redis://127.0.0.1:${nobody}`, undefined, /connection refused/, undefined);
});

t.test('Redis paused (SIGSTOP) for 2 s while a client publishes: every PUBACKed message once, in order', async (t) => {
  const redis = await RedisServer.start(t);
  const gw = await startGateway(t, 'paused', { redisUrl: redis.url });
  const r = redis.client();
  const c = await mqtt(t, gw, 'stopped');
  const pub = new Publisher(c, (i) => ({ topic: 'sensors/stopped/v', payload: testPayload('stopped', i) }), 50);
  await until(() => pub.acked.size >= 200, 5000, 'the first PUBACKs');
  redis.pause();
  const ackedAtPause = pub.acked.size;
  await sleep(2000);
  // Progress, not a fixed time (see the outage test above); Redis stays paused until it comes.
  await until(() => pub.acked.size >= ackedAtPause + 50, 15_000, 'PUBACKs while Redis is paused');
  t.ok(pub.acked.size > ackedAtPause, `acknowledged while Redis was paused: ${pub.acked.size - ackedAtPause}`);
  redis.resume();
  await sleep(500);
  await assertStreamHoldsAcked(t, r, pub, 'stopped', 'messages');
  t.match(gw.output(), /no answer in time|timed out/i, 'the timeout was logged');
  await killGateway(gw, 'SIGTERM');
});
