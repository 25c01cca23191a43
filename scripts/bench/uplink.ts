/**
 * Redis uplink benchmark (issue 5). Three measurements against the real gateway
 * (`gateway/main.js` of the same build, its shebang's Node flags, pinned to CPU 0 with `taskset`)
 * and a real `redis-server` (own temp dir, `--save '' --appendonly no`, free loopback port, pinned
 * to CPU 1 with this script, which is the load side):
 *
 *  1. drain   — a --messages backlog (QoS 0, --payload B, sensors/<i>/temp) is put into the outbox
 *               while Redis is unreachable; then Redis is started and the time from its start
 *               until XLEN reaches --messages is taken (XLEN polled every 20 ms). Gateway RSS
 *               before/after, CPU of gateway and Redis, commits and XADD statistics.
 *  2. cost    — windowed QoS 0 fan-in (--publishers raw publishers → 1 subscriber on sensors/#,
 *               at most --window sent-but-undelivered) for --seconds after a --warmup: A without a
 *               `redis` section, B with the uplink draining live into Redis, C (extra) with a
 *               `redis` section whose Redis is down (the outbox append alone). Interleaved
 *               A B C A B C … (--rounds); ratio of medians.
 *  3. memory  — Redis unreachable, --rate msg/s for --outage-seconds; gateway RSS every second:
 *               start, max, end, and the slope of a linear fit over the second half.
 *  4. steady  — a fixed offered load (--steady-rate msg/s QoS 0, 10 publishers) for --seconds, the
 *               variants of 2. (A, B, C): gateway CPU per message and bytes it wrote to storage
 *               per message (/proc/<pid>/io). Below saturation the uplink's cost shows as CPU, and
 *               the live path (entries Redis confirms before the commit are never written) as disk.
 *
 *   npx tsc -p . --outDir node_modules/.cache/edist-upbench
 *   node node_modules/.cache/edist-upbench/scripts/bench/uplink.js [--only drain,cost,memory] [--messages 1000000]
 *        [--seconds 10] [--outage-seconds 60] [--rate 20000] …   (--help for every flag)
 *
 * Everything is bounded in time and count; the children (gateway, redis-server) are started by
 * this script, tracked by PID and killed by PID on exit. Loopback only. Prints a Markdown table.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import Redis from 'ioredis';
import mqtt from 'mqtt-packet';
import { SqliteOutbox, SqliteStorage } from '../../adapters/sqlite';
import { freePort, probe, shebangNodeFlags } from './brokers';
import { captureTail, clockTicks, detectPinning, installCleanup, pinSelf, spawnTracked, stopChild } from './children';
import { machineBusyTicks, processTicks, rssKb, writeBytes } from './proc';
import { median, slope } from './stats';
import { FaninSubscriber } from './subscriber';
import { PKT_PUBACK, PKT_PUBLISH, PKT_SUBACK, RawClient, connectMany, encodePublish, repeatPacket } from './wire';

const USAGE = `usage: node scripts/bench/uplink.js [flags]
  --only LIST               drain,cost,memory,steady (comma-separated)       [all]
  --messages N              drain: backlog size                              [1000000]
  --fill gateway|direct     drain: fill through the gateway (QoS 0 publisher, Redis down) or
                            append with SqliteOutbox into its database before it starts [gateway]
  --payload B               payload bytes                                    [64]
  --batch-size N            redis.uplink.batchSize in the generated config   [config default, 500]
  --reconnect-max-delay MS  redis.reconnect.maxDelay (initialDelay 100)      [1000]
  --seconds S               cost: measurement window per run                 [10]
  --warmup S                cost: traffic before the window                  [2]
  --rounds N                cost: A/B/C rounds (interleaved)                 [2]
  --publishers N            cost: publisher connections                      [100]
  --window N                cost: max messages sent-but-undelivered          [2000]
  --burst N                 cost: messages per socket write                  [20]
  --no-outage-run           cost: skip variant C (redis section, Redis down)
  --outage-seconds S        memory: outage duration                          [60]
  --rate R                  memory: publish rate, msg/s                      [20000]
  --steady-rate R           steady: publish rate, msg/s                      [50000]
  --profile                 drain, cost, steady: run the gateway with --cpu-prof and print its top functions
  --gateway-node-flags F    Node flags for the gateway, space-separated ('' for none)
                                                            [the entry's shebang flags]
  --no-pin                  do not pin with taskset
  --gateway-entry FILE      gateway to run                    [../../gateway/main.js from here]
  --dir DIR                 parent of the temp dirs                          [os tmpdir]
`;

const { values } = parseArgs({
  options: {
    only: { type: 'string', default: 'drain,cost,memory,steady' },
    messages: { type: 'string', default: '1000000' },
    fill: { type: 'string', default: 'gateway' },
    payload: { type: 'string', default: '64' },
    'batch-size': { type: 'string' },
    'reconnect-max-delay': { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '2' },
    publishers: { type: 'string', default: '100' },
    window: { type: 'string', default: '2000' },
    burst: { type: 'string', default: '20' },
    'no-outage-run': { type: 'boolean', default: false },
    'outage-seconds': { type: 'string', default: '60' },
    rate: { type: 'string', default: '20000' },
    'steady-rate': { type: 'string', default: '50000' },
    profile: { type: 'boolean', default: false },
    'gateway-node-flags': { type: 'string' },
    'no-pin': { type: 'boolean', default: false },
    'gateway-entry': { type: 'string', default: join(__dirname, '..', '..', 'gateway', 'main.js') },
    dir: { type: 'string', default: tmpdir() },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help === true) {
  process.stdout.write(USAGE);
  process.exit(0);
}

function int(name: string, text: string | undefined, min: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${String(text)}`);
  return n;
}

const ONLY = new Set((values.only ?? '').split(',').map((s) => s.trim()).filter((s) => s !== ''));
for (const s of ONLY) if (!['drain', 'cost', 'memory', 'steady'].includes(s)) throw new Error(`--only: unknown measurement ${s}\n${USAGE}`);
const MESSAGES = int('messages', values.messages, 1);
if (values.fill !== 'gateway' && values.fill !== 'direct') throw new Error(`--fill must be gateway or direct\n${USAGE}`);
const FILL: 'gateway' | 'direct' = values.fill;
const PAYLOAD = int('payload', values.payload, 0);
const BATCH_SIZE = values['batch-size'] === undefined ? undefined : int('batch-size', values['batch-size'], 1);
const RECONNECT_MAX = int('reconnect-max-delay', values['reconnect-max-delay'], 100);
const SECONDS = int('seconds', values.seconds, 1);
const WARMUP = int('warmup', values.warmup, 0);
const ROUNDS = int('rounds', values.rounds, 1);
const PUBLISHERS = int('publishers', values.publishers, 1);
const WINDOW = int('window', values.window, 1);
const BURST = int('burst', values.burst, 1);
const OUTAGE_SECONDS = int('outage-seconds', values['outage-seconds'], 2);
const RATE = int('rate', values.rate, 100);
const STEADY_RATE = int('steady-rate', values['steady-rate'], 100);
if (BURST > WINDOW) throw new Error('--burst must not exceed --window');
const GATEWAY_ENTRY = values['gateway-entry'] as string;
const PARENT_DIR = values.dir as string;

const HOST = '127.0.0.1';
const CLK_TCK = clockTicks();
/** Outbox bounds in the generated config: large enough that nothing in this benchmark is dropped. */
const OUTBOX_MAX_MESSAGES = Math.max(1_000_000, 2 * MESSAGES, Math.ceil(RATE * OUTAGE_SECONDS * 1.5));
const OUTBOX_MAX_BYTES = 4 * 1024 ** 3;
const GATEWAY_ID = 'bench';
const STREAM = `edgeway:uplink:${GATEWAY_ID}`;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// /proc, processes
// ---------------------------------------------------------------------------

/** utime+stime of pid in ticks (NaN if gone). */
function ticksOf(pid: number | undefined): number {
  return pid === undefined ? Number.NaN : processTicks(pid);
}

function rssMb(pid: number | undefined): number {
  return pid === undefined ? Number.NaN : rssKb(pid) / 1024;
}

/** The main thread's time on a CPU and time runnable but waiting for one, in ns (/proc/<pid>/schedstat). */
function schedNs(pid: number | undefined): { run: number; wait: number } {
  try {
    const [run, wait] = readFileSync(`/proc/${pid ?? 'none'}/schedstat`, 'utf8').trim().split(' ').map(Number);
    return { run: run ?? Number.NaN, wait: wait ?? Number.NaN };
  } catch {
    return { run: Number.NaN, wait: Number.NaN };
  }
}

function loadNow(): string {
  return loadavg().map((x) => x.toFixed(2)).join(' ');
}

/** CPU marks at two instants → % of one core for gateway, this process (load), redis, everything else. */
interface CpuMark {
  at: number;
  gwSched: { run: number; wait: number };
  gw: number;
  redis: number;
  self: number;
  machine: number;
}
function cpuMark(gwPid: number | undefined, redisPid: number | undefined): CpuMark {
  const u = process.cpuUsage();
  return { at: performance.now(), gwSched: schedNs(gwPid), gw: ticksOf(gwPid), redis: redisPid === undefined ? 0 : ticksOf(redisPid), self: ((u.user + u.system) / 1e6) * CLK_TCK, machine: machineBusyTicks() };
}
interface CpuUse {
  /** The gateway's main thread: % of the interval on a CPU, and runnable but waiting for a CPU. */
  mainRun: number;
  mainWait: number;
  gw: number;
  load: number;
  redis: number;
  other: number;
}
function cpuBetween(a: CpuMark, b: CpuMark): CpuUse {
  const sec = (b.at - a.at) / 1000;
  const pct = (ticks: number): number => (ticks / CLK_TCK / sec) * 100;
  const gw = b.gw - a.gw;
  const redis = b.redis - a.redis;
  const self = b.self - a.self;
  const ms = b.at - a.at;
  return { mainRun: ((b.gwSched.run - a.gwSched.run) / 1e6 / ms) * 100, mainWait: ((b.gwSched.wait - a.gwSched.wait) / 1e6 / ms) * 100, gw: pct(gw), load: pct(self), redis: pct(redis), other: Math.max(0, pct(b.machine - a.machine - gw - redis - self)) };
}

/** The gateway's Node flags: as the `edgeway` command runs it, unless --gateway-node-flags. */
function gatewayNodeFlags(): string[] {
  const given = values['gateway-node-flags'];
  return given === undefined ? shebangNodeFlags(GATEWAY_ENTRY) : given.split(/\s+/).filter((f) => f !== '');
}

const pinning = detectPinning(values['no-pin'] !== true);

interface Child {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly output: () => string;
  stop(graceMs?: number): Promise<void>;
}

function track(child: ChildProcess): Child {
  let out = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (s: string) => {
    out = (out + s).slice(-8192);
  });
  const err = captureTail(child.stderr);
  return { child, pid: child.pid as number, output: () => `${out}${err()}`.trim(), stop: (graceMs = 10_000) => stopChild(child, graceMs) };
}

function exited(c: Child): boolean {
  return c.child.exitCode !== null || c.child.signalCode !== null;
}

interface GatewaySetup {
  readonly dir: string;
  readonly port: number;
  /** Port of the Redis the `redis` section points at (started or not); undefined: no `redis` section. */
  readonly redisPort?: number;
  readonly cpuProfDir?: string;
}

function gatewayConfig(s: GatewaySetup): string {
  const lines = [
    'listeners:',
    `  - { protocol: mqtt, host: ${HOST}, port: ${s.port} }`,
    'log: { level: warn }',
    'sys: { interval: 1 }',
    'storage:',
    `  path: ${join(s.dir, 'edgeway.db')}`,
    '  sync: normal',
    `  outbox: { maxMessages: ${OUTBOX_MAX_MESSAGES}, maxBytes: ${OUTBOX_MAX_BYTES} }`,
  ];
  if (s.redisPort !== undefined) {
    lines.push(
      'redis:',
      `  url: redis://${HOST}:${s.redisPort}`,
      `  gatewayId: ${GATEWAY_ID}`,
      `  reconnect: { initialDelay: 100, maxDelay: ${RECONNECT_MAX} }`,
      ...(BATCH_SIZE === undefined ? [] : [`  uplink: { batchSize: ${BATCH_SIZE} }`]),
    );
  }
  const file = join(s.dir, 'edgeway.yaml');
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

async function startGateway(s: GatewaySetup): Promise<Child> {
  const config = gatewayConfig(s);
  const prof = s.cpuProfDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', s.cpuProfDir];
  const gw = track(spawnTracked([process.execPath, ...gatewayNodeFlags(), ...prof, GATEWAY_ENTRY, '--config', config], { cpu: pinning.brokerCpu, nofile: 65_536 }));
  const deadline = Date.now() + 15_000;
  while (!(await probe(s.port))) {
    if (exited(gw)) throw new Error(`gateway exited during start-up:\n${gw.output()}`);
    if (Date.now() > deadline) {
      await gw.stop();
      throw new Error(`gateway not listening on ${HOST}:${s.port} after 15 s:\n${gw.output()}`);
    }
    await sleep(50);
  }
  return gw;
}

interface RedisChild extends Child {
  readonly startedAt: number;
  readonly readyAt: number;
  readonly client: Redis;
}

/** redis-server in its own temp dir, no persistence; resolves once it answers PING. */
async function startRedis(port: number, dir: string): Promise<RedisChild> {
  const startedAt = performance.now();
  const args = ['redis-server', '--port', String(port), '--bind', HOST, '--dir', dir, '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'warning'];
  const r = track(spawnTracked(args, { cpu: pinning.loadCpu, nofile: 65_536 }));
  const client = new Redis({ host: HOST, port, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => 10 });
  client.on('error', () => undefined);
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      if (client.status !== 'ready') await client.connect();
      await client.ping();
      break;
    } catch (err) {
      if (exited(r) || Date.now() > deadline) {
        client.disconnect();
        await r.stop(3000);
        throw new Error(`redis-server did not start (${String(err)}):\n${r.output()}`);
      }
      await sleep(5);
    }
  }
  const readyAt = performance.now();
  return {
    ...r,
    startedAt,
    readyAt,
    client,
    stop: async (graceMs = 3000) => {
      client.disconnect();
      await r.stop(graceMs);
    },
  };
}

// ---------------------------------------------------------------------------
// MQTT helpers
// ---------------------------------------------------------------------------

/** Keeps the latest $SYS/broker/… values (subscribed before anything happens, so none is missed). */
class SysWatcher {
  readonly values = new Map<string, string>();
  private constructor(readonly client: RawClient) {}

  static async connect(port: number): Promise<SysWatcher> {
    const client = await RawClient.connect({ host: HOST, port, clientId: 'ub-sys', keepalive: 60 });
    const w = new SysWatcher(client);
    const subacked = new Promise<void>((resolve) => {
      client.scanner.onPacket = (type, flags, buf, bodyStart, end) => {
        if (type === PKT_SUBACK) resolve();
        if (type !== PKT_PUBLISH) return;
        const topicLen = buf.readUInt16BE(bodyStart);
        const topic = buf.toString('utf8', bodyStart + 2, bodyStart + 2 + topicLen);
        const payloadAt = bodyStart + 2 + topicLen + ((flags & 0x06) !== 0 ? 2 : 0);
        w.values.set(topic.replace('$SYS/broker/', ''), buf.toString('utf8', payloadAt, end));
      };
    });
    client.socket.write(mqtt.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '$SYS/#', qos: 0 }] }));
    await withTimeout(subacked, 10_000, 'SUBACK for $SYS/#');
    keepPinging(client);
    return w;
  }

  num(name: string): number {
    const v = this.values.get(name);
    return v === undefined ? Number.NaN : Number(v);
  }

  close(): void {
    this.client.close();
  }
}

const PINGREQ = Buffer.from([0xc0, 0x00]);

/** PINGREQ every 20 s: a client that only receives would otherwise be dropped after 1.5 × keepalive. */
function keepPinging(client: RawClient): void {
  const timer = setInterval(() => {
    if (!client.closed) client.socket.write(PINGREQ);
  }, 20_000);
  timer.unref();
  client.socket.once('close', () => clearInterval(timer));
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Sends a retained QoS 1 PUBLISH on a topic outside the outbox's filter; its PUBACK waits for the
 * group commit that follows everything this connection sent before (the broker reads in order). */
async function commitMarker(client: RawClient, timeoutMs: number): Promise<void> {
  const acked = new Promise<void>((resolve) => {
    client.scanner.onPacket = (type) => {
      if (type === PKT_PUBACK) resolve();
    };
  });
  client.socket.write(mqtt.generate({ cmd: 'publish', topic: 'bench/commit-marker', payload: Buffer.from('x'), qos: 1, messageId: 7, retain: true, dup: false }));
  await withTimeout(acked, timeoutMs, 'PUBACK of the commit marker');
}

function payloadBuf(): Buffer {
  return Buffer.alloc(PAYLOAD, 0x61);
}

/** One Buffer with `count` QoS 0 PUBLISHes on sensors/<k>/temp, k cycling over 100 topics. */
function mixedBurst(count: number): Buffer {
  const payload = payloadBuf();
  const packets = Array.from({ length: 100 }, (_, k) => encodePublish(`sensors/${k}/temp`, payload, 0));
  return Buffer.concat(Array.from({ length: count }, (_, i) => packets[i % 100] as Buffer));
}

async function writeAll(socket: net.Socket, buf: Buffer): Promise<void> {
  if (!socket.write(buf)) await once(socket, 'drain');
}

// ---------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------

function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '—';
}

function cpuText(c: CpuUse): string {
  return `${fmt(c.gw)} / ${fmt(c.load)} / ${fmt(c.redis)} / ${fmt(c.other)} (gateway main thread: running ${fmt(c.mainRun)} %, waiting for a CPU ${fmt(c.mainWait)} %)`;
}

interface Row {
  measure: string;
  result: string;
  target: string;
  details: string;
}
const rows: Row[] = [];
const notes: string[] = [];

function tempDir(tag: string): string {
  return mkdtempSync(join(PARENT_DIR, `edgeway-upbench-${tag}-`));
}

// ---------------------------------------------------------------------------
// 1. Drain
// ---------------------------------------------------------------------------

async function fillDirect(dbPath: string): Promise<void> {
  const outbox = new SqliteOutbox(new SqliteStorage({ path: dbPath, sync: 'normal', flushInterval: 50 }), { maxMessages: OUTBOX_MAX_MESSAGES, maxBytes: OUTBOX_MAX_BYTES, whenFull: 'drop-oldest' });
  await outbox.open();
  const payload = payloadBuf();
  const waits: Promise<unknown>[] = [];
  for (let i = 0; i < MESSAGES; i += 1000) {
    const n = Math.min(1000, MESSAGES - i);
    waits.push(outbox.append(Array.from({ length: n }, (_, k) => ({ topic: `sensors/${(i + k) % 100}/temp`, payload, qos: 0 as const, retain: false, arrivedAt: Date.now(), source: 'ub-fill' }))));
    if (waits.length >= 50) await Promise.all(waits.splice(0));
  }
  await Promise.all(waits);
  await outbox.close();
}

/** Entries in the outbox of the (stopped) gateway's database, as the outbox itself counts them. */
async function storedEntries(dbPath: string): Promise<number> {
  const outbox = new SqliteOutbox(new SqliteStorage({ path: dbPath, sync: 'normal', flushInterval: 50 }), { maxMessages: OUTBOX_MAX_MESSAGES, maxBytes: OUTBOX_MAX_BYTES, whenFull: 'drop-oldest' });
  await outbox.open();
  const { size } = outbox.stats();
  await outbox.close();
  return size;
}

/** N QoS 0 messages on one connection, 1000 per write, with TCP back-pressure; then a commit marker. */
async function fillThroughGateway(port: number): Promise<void> {
  const pub = await RawClient.connect({ host: HOST, port, clientId: 'ub-fill', keepalive: 600 });
  try {
    const chunk = mixedBurst(1000);
    let sent = 0;
    while (sent + 1000 <= MESSAGES) {
      await writeAll(pub.socket, chunk);
      sent += 1000;
    }
    if (sent < MESSAGES) await writeAll(pub.socket, mixedBurst(MESSAGES - sent));
    if (pub.error !== null || pub.closed) throw new Error(`fill publisher: ${pub.error?.message ?? 'closed by the gateway'}`);
    await commitMarker(pub, 600_000);
  } finally {
    pub.close();
  }
}

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  samples: number[];
  timeDeltas: number[];
}

/** summarizeProfile, or why there is none. */
function profileSummary(dir: string): string[] {
  try {
    return summarizeProfile(dir);
  } catch (err) {
    return [`profile not read: ${String(err)}`];
  }
}

/** Top functions by self time in the gateway's .cpuprofile (written when it exits). */
function summarizeProfile(dir: string): string[] {
  const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  const file = files[0];
  if (file === undefined) return ['(no .cpuprofile written)'];
  const prof = JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile;
  const byId = new Map(prof.nodes.map((n) => [n.id, n.callFrame]));
  const self = new Map<string, number>();
  let total = 0;
  prof.samples.forEach((id, i) => {
    const cf = byId.get(id);
    if (cf === undefined || cf.functionName === '(idle)' || cf.functionName === '(program)') return;
    const dt = prof.timeDeltas[i] ?? 0;
    const where = cf.url === '' ? '' : ` ${cf.url.replace(/^.*\/(node_modules\/|dist\/|edist-[^/]*\/)/, '$1')}:${cf.lineNumber + 1}`;
    const key = `${cf.functionName === '' ? '(anonymous)' : cf.functionName}${where}`;
    self.set(key, (self.get(key) ?? 0) + dt);
    total += dt;
  });
  const top = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 20);
  // By file as well: a cost spread over many small functions (a library's) shows up here.
  const byFile = new Map<string, number>();
  for (const [key, us] of self) {
    const file = / (\S+):\d+$/.exec(key)?.[1] ?? key;
    byFile.set(file, (byFile.get(file) ?? 0) + us);
  }
  const fileTotals = [...byFile.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15);
  return [
    `self time by file: ${fileTotals.map(([f, us]) => `${f} ${fmt((us / total) * 100, 1)} %`).join(', ')}`,
    '',
    `gateway CPU profile (${file}): ${fmt(total / 1e6, 2)} s of non-idle samples; top self time:`,
    '',
    '| self ms | % | function |',
    '| ---: | ---: | --- |',
    ...top.map(([k, us]) => `| ${fmt(us / 1000)} | ${fmt((us / total) * 100, 1)} | \`${k}\` |`),
  ];
}

async function drain(): Promise<void> {
  const dir = tempDir('drain');
  const redisDir = join(dir, 'redis');
  const profDir = join(dir, 'prof');
  mkdirSync(redisDir, { recursive: true });
  if (values.profile === true) mkdirSync(profDir, { recursive: true });
  const port = await freePort();
  const redisPort = await freePort();
  let gw: Child | undefined;
  let redis: RedisChild | undefined;
  let sys: SysWatcher | undefined;
  try {
    const fillStart = performance.now();
    if (FILL === 'direct') await fillDirect(join(dir, 'edgeway.db'));
    gw = await startGateway({ dir, port, redisPort, ...(values.profile === true ? { cpuProfDir: profDir } : {}) });
    sys = await SysWatcher.connect(port);
    const fillLoad = loadNow();
    if (FILL === 'gateway') await fillThroughGateway(port);
    const fillSec = (performance.now() - fillStart) / 1000;
    await sleep(2000); // two $SYS intervals: the outbox size is current
    const backlog = sys.num('outbox/messages');
    if (backlog !== MESSAGES) notes.push(`drain: the outbox held ${fmt(backlog)} messages before Redis started, not ${fmt(MESSAGES)}`);
    const rssBefore = rssMb(gw.pid);
    const commitsBefore = sys.num('storage/commits');
    const loadBefore = loadNow();

    // Redis starts now; the clock runs from its spawn.
    redis = await startRedis(redisPort, redisDir);
    const cpu0: CpuMark = { ...cpuMark(gw.pid, redis.pid), at: redis.startedAt };
    let firstAt = Number.NaN;
    let doneAt = Number.NaN;
    let rssMax = rssBefore;
    let len = 0;
    const deadline = performance.now() + Math.max(120_000, (MESSAGES / 5000) * 1000);
    let lastRss = 0;
    while (performance.now() < deadline) {
      len = await redis.client.xlen(STREAM);
      const now = performance.now();
      if (len > 0 && Number.isNaN(firstAt)) firstAt = now;
      if (len >= MESSAGES) {
        doneAt = now;
        break;
      }
      if (now - lastRss >= 100) {
        rssMax = Math.max(rssMax, rssMb(gw.pid));
        lastRss = now;
      }
      if (exited(gw)) throw new Error(`gateway exited during the drain:\n${gw.output()}`);
      await sleep(20);
    }
    const cpu1 = cpuMark(gw.pid, redis.pid);
    const rssAfter = rssMb(gw.pid);
    rssMax = Math.max(rssMax, rssAfter);
    const loadAfter = loadNow();
    const stats = await redis.client.info('commandstats');
    const xadd = /cmdstat_xadd:calls=(\d+),usec=(\d+),usec_per_call=([\d.]+)/.exec(stats);
    await sleep(2000); // the acks' commits and the next $SYS values
    const commitsAfter = sys.num('storage/commits');
    const uplinkFailures = sys.num('uplink/failures');
    const backlogAfter = sys.num('outbox/messages');
    const rssSettled = rssMb(gw.pid);

    const totalSec = (doneAt - redis.startedAt) / 1000;
    const streamSec = (doneAt - firstAt) / 1000;
    const batch = BATCH_SIZE ?? 500;
    const batches = MESSAGES / batch;
    const cpu = cpuBetween(cpu0, cpu1);
    const drained = Number.isFinite(doneAt);
    if (!drained) notes.push(`drain: XLEN reached only ${fmt(len)} of ${fmt(MESSAGES)} before the deadline`);
    rows.push({
      measure: `1. drain ${fmt(MESSAGES)}-message backlog → Redis`,
      result: drained ? `**${fmt(MESSAGES / totalSec)} msg/s**` : `not drained (XLEN ${fmt(len)})`,
      target: '≥ 50,000 msg/s',
      details: [
        `${fmt(totalSec, 2)} s from redis-server spawn to XLEN = ${fmt(MESSAGES)} (PING after ${fmt(redis.readyAt - redis.startedAt)} ms, first entry after ${fmt(firstAt - redis.startedAt)} ms)`,
        `${fmt(MESSAGES / streamSec)} msg/s from first entry to last`,
        `gateway RSS ${fmt(rssBefore, 1)} MB before → max ${fmt(rssMax, 1)} → ${fmt(rssAfter, 1)} at XLEN = N → ${fmt(rssSettled, 1)} 2 s later`,
        `CPU % gw / script / redis / other: ${cpuText(cpu)}`,
        `XADD: ${xadd === null ? '—' : `${fmt(Number(xadd[1]))} calls, ${fmt(Number(xadd[3]), 2)} µs/call inside Redis (${fmt((Number(xadd[2]) / 1e6 / totalSec) * 100)} % of the drain)`}`,
        `${fmt(batches)} batches of ${batch}: ${fmt((streamSec * 1000) / batches, 2)} ms per batch (gateway CPU ${fmt((((cpu1.gw - cpu0.gw) / CLK_TCK) * 1000) / batches, 2)} ms/batch)`,
        `${fmt(commitsAfter - commitsBefore)} commits (${fmt((commitsAfter - commitsBefore) / (totalSec + 2), 1)}/s incl. 2 s after), uplink failures ${fmt(uplinkFailures)}, outbox after ${fmt(backlogAfter)}`,
        `fill (${FILL === 'gateway' ? 'through the gateway: 1 raw QoS 0 publisher, 1000 msgs/write, then a retained QoS 1 commit marker' : 'SqliteOutbox.append ×1000 before the gateway started'}): ${fmt(fillSec, 1)} s, ${fmt(MESSAGES / fillSec)} msg/s (load ${fillLoad})`,
        `loadavg before/after drain: ${loadBefore} / ${loadAfter}`,
      ].join('<br>'),
    });
  } finally {
    sys?.close();
    await redis?.stop();
    await gw?.stop();
    if (values.profile === true) notes.push(...profileSummary(profDir), '');
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// 2. Cost of the live uplink on QoS 0 fan-in
// ---------------------------------------------------------------------------

type Variant = 'A' | 'B' | 'C';
const VARIANT_TEXT: Record<Variant, string> = {
  A: 'A: no `redis` section',
  B: 'B: uplink live → Redis',
  C: 'C: `redis` section, Redis down (outbox append only)',
};

interface FaninResult {
  variant: Variant;
  delivered: number;
  sent: number;
  uplink: number;
  lagAtEnd: number;
  cpu: CpuUse;
  load: string;
  lost: number;
}

interface VariantSetup {
  readonly gw: Child;
  readonly redis: RedisChild | undefined;
  readonly port: number;
  /** Closed after the run. */
  readonly clients: RawClient[];
}

/**
 * One run of a variant (A, B, C) for the cost and steady measurements: its own temp dir; for B a
 * Redis, with the gateway's uplink connected before `body` starts traffic; the gateway (profiled
 * with --profile). Everything is stopped and removed afterwards.
 */
async function withVariant<T>(measure: string, variant: Variant, body: (setup: VariantSetup) => Promise<T>): Promise<T> {
  const dir = tempDir(`${measure}${variant}`);
  const redisDir = join(dir, 'redis');
  const profDir = join(dir, 'prof');
  mkdirSync(redisDir, { recursive: true });
  if (values.profile === true) mkdirSync(profDir, { recursive: true });
  const port = await freePort();
  const redisPort = variant === 'A' ? undefined : await freePort();
  let gw: Child | undefined;
  let redis: RedisChild | undefined;
  const clients: RawClient[] = [];
  try {
    if (variant === 'B') redis = await startRedis(redisPort as number, redisDir);
    gw = await startGateway({ dir, port, ...(redisPort === undefined ? {} : { redisPort }), ...(values.profile === true ? { cpuProfDir: profDir } : {}) });
    if (redis !== undefined) {
      const deadline = Date.now() + 15_000;
      while (!(String(await redis.client.client('LIST')).includes(`name=edgeway-${GATEWAY_ID}-uplink`))) {
        if (Date.now() > deadline) throw new Error('the gateway\'s uplink did not connect to Redis within 15 s');
        await sleep(50);
      }
    }
    const result = await body({ gw, redis, port, clients });
    if (exited(gw)) throw new Error(`gateway exited during the run:\n${gw.output()}`);
    return result;
  } finally {
    for (const c of clients) c.close();
    await gw?.stop();
    await redis?.stop();
    if (values.profile === true) notes.push(`${measure} ${variant}:`, ...profileSummary(profDir), '');
    rmSync(dir, { recursive: true, force: true });
  }
}

async function faninRun(variant: Variant): Promise<FaninResult> {
  return withVariant('cost', variant, async ({ gw, redis, port, clients }) => {
    const sub = await FaninSubscriber.connect({ host: HOST, port, clientId: 'ub-sub', topic: 'sensors/#', qos: 0 });
    clients.push(sub.client);
    keepPinging(sub.client);
    const pubs = await connectMany(PUBLISHERS, 50, (i) => ({ host: HOST, port, clientId: `ub-p${i}`, keepalive: 60 }));
    clients.push(...pubs);
    const payload = payloadBuf();
    const bursts = pubs.map((_, i) => repeatPacket(encodePublish(`sensors/${i}/temp`, payload, 0), BURST));
    let sent = 0;
    let forgiven = 0;
    let rr = 0;
    let stopped = false;
    // At most WINDOW messages sent but not delivered: the gateway always has work, never a backlog.
    const pump = (): void => {
      while (!stopped && sent - sub.delivered - forgiven + BURST <= WINDOW) {
        (pubs[rr] as RawClient).socket.write(bursts[rr] as Buffer);
        sent += BURST;
        rr = rr + 1 === pubs.length ? 0 : rr + 1;
      }
    };
    sub.setOnChunk(pump);
    // QoS 0 may be dropped: if nothing arrives for 200 ms, forgive what is outstanding.
    let lastDelivered = -1;
    const guard = setInterval(() => {
      if (sub.delivered === lastDelivered) {
        forgiven = sent - sub.delivered;
        pump();
      }
      lastDelivered = sub.delivered;
    }, 200);
    pump();
    await sleep(WARMUP * 1000);
    const xlen = async (): Promise<number> => (redis === undefined ? 0 : redis.client.xlen(STREAM));
    const m0 = cpuMark(gw.pid, redis?.pid);
    const d0 = sub.delivered;
    const s0 = sent;
    const x0 = await xlen();
    await sleep(SECONDS * 1000);
    const m1 = cpuMark(gw.pid, redis?.pid);
    const d1 = sub.delivered;
    const s1 = sent;
    const x1 = await xlen();
    const load = loadNow();
    stopped = true;
    clearInterval(guard);
    // Outstanding QoS 0 after sending stopped (bounded wait).
    let lost = sent - sub.delivered;
    for (let i = 0; i < 20 && lost > 0; i++) {
      await sleep(100);
      lost = sent - sub.delivered;
    }
    const sec = (m1.at - m0.at) / 1000;
    const bad = clients.filter((c) => c.error !== null || c.closed).length;
    if (bad > 0) notes.push(`cost ${variant}: ${bad} client socket(s) errored or closed during the run`);
    return {
      variant,
      delivered: (d1 - d0) / sec,
      sent: (s1 - s0) / sec,
      uplink: (x1 - x0) / sec,
      lagAtEnd: redis === undefined ? Number.NaN : d1 - x1,
      cpu: cpuBetween(m0, m1),
      load,
      lost,
    };
  });
}

/** The variants (C unless --no-outage-run), interleaved A B C A B C … for --rounds; each run's line on stderr. */
async function rounds<R>(measure: string, run: (variant: Variant) => Promise<R>, describe: (result: R) => string): Promise<{ variants: Variant[]; results: R[] }> {
  const variants: Variant[] = values['no-outage-run'] === true ? ['A', 'B'] : ['A', 'B', 'C'];
  const results: R[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    for (const v of variants) {
      const res = await run(v);
      results.push(res);
      process.stderr.write(`${measure} round ${r + 1} ${v}: ${describe(res)}\n`);
    }
  }
  return { variants, results };
}

async function cost(): Promise<void> {
  const { variants, results } = await rounds('cost', faninRun, (res) => `${fmt(res.delivered)} msg/s delivered, uplink ${fmt(res.uplink)} msg/s, CPU ${cpuText(res.cpu)}, load ${res.load}`);
  const med = (v: Variant): number => median(results.filter((x) => x.variant === v).map((x) => x.delivered));
  const a = med('A');
  const b = med('B');
  const c = med('C');
  rows.push({
    measure: '2. QoS 0 fan-in with live uplink, B/A (ratio of medians)',
    result: `**${fmt(b / a, 3)}** (cost ${fmt((1 - b / a) * 100, 1)} %)`,
    target: '≥ 0.8 (cost ≤ 20 %)',
    details: [
      `median delivered msg/s: A ${fmt(a)}, B ${fmt(b)}${variants.includes('C') ? `, C ${fmt(c)} (C/A ${fmt(c / a, 3)})` : ''}`,
      `${PUBLISHERS} publishers → 1 subscriber (sensors/#), ${PAYLOAD} B, window ${WINDOW}, burst ${BURST}, warm-up ${WARMUP} s, window ${SECONDS} s, order ${variants.join(' ')} × ${ROUNDS}`,
    ].join('<br>'),
  });
  for (const [i, r] of results.entries()) {
    rows.push({
      measure: `2.${i + 1} ${VARIANT_TEXT[r.variant]}`,
      result: `${fmt(r.delivered)} msg/s`,
      target: '',
      details: [
        `sent ${fmt(r.sent)}/s${r.variant === 'B' ? `, uplink XLEN +${fmt(r.uplink)}/s, delivered − XLEN at window end ${fmt(r.lagAtEnd)}` : ''}${r.lost > 0 ? `, ${fmt(r.lost)} undelivered after stop` : ''}`,
        `gateway CPU ${fmt((r.cpu.gw / 100 / r.delivered) * 1e6, 2)} µs per delivered msg; CPU % gw / load / redis / other: ${cpuText(r.cpu)}; loadavg ${r.load}`,
      ].join('<br>'),
    });
  }
}

// ---------------------------------------------------------------------------
// 3. Gateway memory during a long outage
// ---------------------------------------------------------------------------

/**
 * Timer-paced QoS 0 load: every 5 ms catch up to rate × elapsed, in bursts of `burst`, round-robin;
 * a socket with more than 1 MB unsent (the gateway not keeping up) is skipped rather than
 * buffered without bound.
 */
function pace(pubs: readonly RawClient[], bursts: readonly Buffer[], burst: number, rate: number, t0: number): { sent: number; skipped: number; stop(): void } {
  const state = { sent: 0, skipped: 0, stop: () => clearInterval(timer) };
  let rr = 0;
  const timer = setInterval(() => {
    const due = Math.floor(((performance.now() - t0) / 1000) * rate);
    while (state.sent + burst <= due) {
      const i = rr;
      rr = rr + 1 === pubs.length ? 0 : rr + 1;
      state.sent += burst;
      const socket = (pubs[i] as RawClient).socket;
      if (socket.writableLength > 1024 * 1024) state.skipped += burst;
      else socket.write(bursts[i] as Buffer);
    }
  }, 5);
  return state;
}

async function memory(): Promise<void> {
  const dir = tempDir('memory');
  const port = await freePort();
  const redisPort = await freePort(); // nothing is ever started there
  const PUBS = 10;
  let gw: Child | undefined;
  let sys: SysWatcher | undefined;
  const clients: RawClient[] = [];
  try {
    gw = await startGateway({ dir, port, redisPort });
    sys = await SysWatcher.connect(port);
    const pubs = await connectMany(PUBS, PUBS, (i) => ({ host: HOST, port, clientId: `ub-m${i}`, keepalive: 600 }));
    clients.push(...pubs);
    const payload = payloadBuf();
    const BURST_M = 10;
    const bursts = pubs.map((_, i) => repeatPacket(encodePublish(`sensors/${i}/temp`, payload, 0), BURST_M));
    await sleep(1000);
    const rssIdle = rssMb(gw.pid);
    const loadBefore = loadNow();
    const m0 = cpuMark(gw.pid, undefined);
    const t0 = performance.now();
    const pacer = pace(pubs, bursts, BURST_M, RATE, t0);
    const times: number[] = [];
    const rss: number[] = [];
    const heap: number[] = [];
    for (let s = 1; s <= OUTAGE_SECONDS; s++) {
      const at = t0 + s * 1000;
      await sleep(Math.max(0, at - performance.now()));
      times.push((performance.now() - t0) / 60_000);
      rss.push(rssMb(gw.pid));
      heap.push(sys.num('heap/current') / 1024 ** 2);
      if (exited(gw)) throw new Error(`gateway exited during the outage:\n${gw.output()}`);
    }
    pacer.stop();
    const m1 = cpuMark(gw.pid, undefined);
    const loadAfter = loadNow();
    const { sent, skipped } = pacer;
    const published = sent - skipped;
    const pubSec = (performance.now() - t0) / 1000;
    // Everything sent is stored once the marker's commit is done.
    const markerStart = performance.now();
    await commitMarker(pubs[0] as RawClient, 120_000);
    const markerMs = performance.now() - markerStart;
    sys.close();
    for (const c of clients) c.close();
    clients.length = 0;
    await gw.stop();
    const dbPath = join(dir, 'edgeway.db');
    const dbBytes = statSync(dbPath).size;
    const stored = await storedEntries(dbPath);
    const half = Math.floor(rss.length / 2);
    const slopeMbMin = slope(times.slice(half), rss.slice(half));
    // The RSS saw-tooths with V8's major GCs; the floor (minimum of each 5-s window) shows a trend
    // better than the raw samples over a short run.
    const floorT: number[] = [];
    const floorY: number[] = [];
    for (let i = half; i + 5 <= rss.length; i += 5) {
      const w = rss.slice(i, i + 5);
      const k = i + w.indexOf(Math.min(...w));
      floorT.push(times[k] as number);
      floorY.push(rss[k] as number);
    }
    const cpu = cpuBetween(m0, m1);
    if (stored !== published) notes.push(`memory: ${fmt(published)} published but ${fmt(stored)} rows in the outbox after the stop`);
    rows.push({
      measure: `3. gateway RSS, Redis down, ${fmt(RATE)} msg/s × ${OUTAGE_SECONDS} s`,
      result: `**${fmt(slopeMbMin, 2)} MB/min** (2nd half)`,
      target: 'flat',
      details: [
        `RSS MB: idle ${fmt(rssIdle, 1)}, 1 s ${fmt(rss[0] ?? Number.NaN, 1)}, max ${fmt(Math.max(...rss), 1)}, end ${fmt(rss[rss.length - 1] ?? Number.NaN, 1)}; 2nd half: slope of the 5-s minima ${fmt(slope(floorT, floorY), 2)} MB/min, V8 heapUsed slope ${fmt(slope(times.slice(half), heap.slice(half)), 2)} MB/min`,
        `${fmt(published)} published (${fmt(published / pubSec)}/s, ${PUBS} connections${skipped > 0 ? `, ${fmt(skipped)} skipped: gateway behind` : ''}); ${fmt(stored)} rows in the outbox after the stop, database ${fmt(dbBytes / 1024 ** 2, 1)} MB; commit marker PUBACK ${fmt(markerMs)} ms after the last send`,
        `CPU % gw / script / other: ${fmt(cpu.gw)} / ${fmt(cpu.load)} / ${fmt(cpu.other)} (gateway main thread waiting for a CPU ${fmt(cpu.mainWait)} %); loadavg before/after ${loadBefore} / ${loadAfter}`,
        `RSS every s: ${rss.map((x) => fmt(x, 0)).join(' ')}`,
        `V8 heapUsed every s ($SYS): ${heap.map((x) => fmt(x, 0)).join(' ')}`,
      ].join('<br>'),
    });
  } finally {
    sys?.close();
    for (const c of clients) c.close();
    await gw?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// 4. A fixed offered load: CPU and disk per message
// ---------------------------------------------------------------------------

interface SteadyResult {
  variant: Variant;
  published: number;
  cpuUsPerMsg: number;
  diskBytesPerMsg: number;
  uplink: number;
  cpu: CpuUse;
}

async function steadyRun(variant: Variant): Promise<SteadyResult> {
  const PUBS = 10;
  const BURST_S = 10;
  return withVariant('steady', variant, async ({ gw, redis, port, clients }) => {
    const pubs = await connectMany(PUBS, PUBS, (i) => ({ host: HOST, port, clientId: `ub-s${i}`, keepalive: 600 }));
    clients.push(...pubs);
    const payload = payloadBuf();
    const bursts = pubs.map((_, i) => repeatPacket(encodePublish(`sensors/${i}/temp`, payload, 0), BURST_S));
    const t0 = performance.now();
    const pacer = pace(pubs, bursts, BURST_S, STEADY_RATE, t0);
    await sleep(WARMUP * 1000);
    const xlen = async (): Promise<number> => (redis === undefined ? 0 : redis.client.xlen(STREAM));
    const m0 = cpuMark(gw.pid, redis?.pid);
    const w0 = writeBytes(gw.pid);
    const p0 = pacer.sent - pacer.skipped;
    const x0 = await xlen();
    await sleep(SECONDS * 1000);
    const m1 = cpuMark(gw.pid, redis?.pid);
    const w1 = writeBytes(gw.pid);
    const p1 = pacer.sent - pacer.skipped;
    const x1 = await xlen();
    pacer.stop();
    if (pacer.skipped > 0) notes.push(`steady ${variant}: ${fmt(pacer.skipped)} messages skipped — the gateway did not keep up with ${fmt(STEADY_RATE)} msg/s`);
    const cpu = cpuBetween(m0, m1);
    const sec = (m1.at - m0.at) / 1000;
    const n = p1 - p0;
    return { variant, published: n / sec, cpuUsPerMsg: ((cpu.gw / 100) * sec * 1e6) / n, diskBytesPerMsg: (w1 - w0) / n, uplink: (x1 - x0) / sec, cpu };
  });
}

async function steady(): Promise<void> {
  const { variants, results } = await rounds('steady', steadyRun, (res) => `${fmt(res.published)} msg/s, ${fmt(res.cpuUsPerMsg, 2)} µs CPU and ${fmt(res.diskBytesPerMsg, 1)} bytes written per msg, uplink ${fmt(res.uplink)} msg/s`);
  const med = (v: Variant, f: (r: SteadyResult) => number): number => median(results.filter((x) => x.variant === v).map(f));
  const cpuA = med('A', (r) => r.cpuUsPerMsg);
  const cpuB = med('B', (r) => r.cpuUsPerMsg);
  rows.push({
    measure: `4. QoS 0 at ${fmt(STEADY_RATE)} msg/s: gateway CPU per message, A/B (ratio of medians)`,
    result: `**${fmt(cpuA / cpuB, 3)}** (uplink costs ${fmt((cpuB / cpuA - 1) * 100, 0)} % more CPU per message)`,
    target: '',
    details: [
      `median µs CPU per msg: ${variants.map((v) => `${v} ${fmt(med(v, (r) => r.cpuUsPerMsg), 2)}`).join(', ')}; median bytes written to storage per msg: ${variants.map((v) => `${v} ${fmt(med(v, (r) => r.diskBytesPerMsg), 1)}`).join(', ')}`,
      `10 publishers → no subscriber, ${PAYLOAD} B, warm-up ${WARMUP} s, window ${SECONDS} s, order ${variants.join(' ')} × ${ROUNDS}; per run: ${results.map((r) => `${r.variant} ${fmt(r.cpuUsPerMsg, 2)} µs/${fmt(r.diskBytesPerMsg, 0)} B${r.variant === 'B' ? ` (uplink ${fmt(r.uplink)}/s)` : ''}`).join('; ')}`,
    ].join('<br>'),
  });
}

// ---------------------------------------------------------------------------

async function main(): Promise<void> {
  installCleanup();
  if (pinning.loadCpu !== null) pinSelf(pinning.loadCpu);
  // A hard bound on the whole run, whatever hangs.
  const budgetSec = 60 + (ONLY.has('drain') ? 600 + MESSAGES / 5000 : 0) + (ONLY.has('cost') ? ROUNDS * 3 * (SECONDS + WARMUP + 40) : 0) + (ONLY.has('memory') ? OUTAGE_SECONDS + 180 : 0) + (ONLY.has('steady') ? ROUNDS * 3 * (SECONDS + WARMUP + 40) : 0);
  setTimeout(() => {
    process.stderr.write(`uplink bench: hard time limit (${fmt(budgetSec)} s) reached; killing children\n`);
    process.exit(3);
  }, budgetSec * 1000).unref();
  const redisVersion = execFileSync('redis-server', ['--version'], { encoding: 'utf8' }).trim();
  const started = loadNow();
  if (ONLY.has('drain')) await drain();
  if (ONLY.has('cost')) await cost();
  if (ONLY.has('steady')) await steady();
  if (ONLY.has('memory')) await memory();
  const lines = [
    `edgeway Redis uplink benchmark — node ${process.version}, ${redisVersion.split(' ').slice(0, 3).join(' ')}, ${pinning.enabled ? `gateway pinned to CPU ${pinning.brokerCpu}, load + redis-server to CPU ${pinning.loadCpu}` : (pinning.warning ?? 'unpinned')}`,
    `gateway: ${GATEWAY_ENTRY} (${gatewayNodeFlags().join(' ') || 'no Node flags'}), storage sync normal, flushInterval 50 ms, outbox maxMessages ${fmt(OUTBOX_MAX_MESSAGES)} / maxBytes ${fmt(OUTBOX_MAX_BYTES / 1024 ** 3)} GiB, sys.interval 1 s, log warn; ` +
      `redis section: gatewayId ${GATEWAY_ID}, uplink defaults (topics sensors/#, maxLen 10,000,000, batchSize ${BATCH_SIZE ?? 'default 500'}, replayRate 0), downlink on, reconnect 100…${RECONNECT_MAX} ms; redis-server --save '' --appendonly no`,
    `payload ${PAYLOAD} B QoS 0 on sensors/<i>/temp; loadavg at start ${started}, at end ${loadNow()}; ${new Date().toISOString()}`,
    '',
    '| measure | result | target | details |',
    '| --- | ---: | --- | --- |',
    ...rows.map((r) => `| ${r.measure} | ${r.result} | ${r.target} | ${r.details} |`),
  ];
  if (notes.length > 0) lines.push('', ...notes);
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
