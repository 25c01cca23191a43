/**
 * The protocol fuzzer's run: the real gateway (the CLI, as `npm start` runs it) as a child process,
 * many concurrent connections sending fuzz plans (plan.ts), and two reference clients (3.1.1 and
 * 5) publishing and subscribing normally. Shared by the CI test (test/integration/fuzz.test.ts)
 * and the long run (scripts/fuzz.ts).
 *
 * Pass criteria, each checked here and reported in `failures`:
 * - the gateway never exits, and its stderr never mentions an uncaught exception or unhandled rejection;
 * - every QoS 1 message a reference client had acknowledged comes back to it (none missing);
 * - the gateway keeps acknowledging the reference clients (no hang: no acknowledgement for
 *   `hangMs` while one is waiting fails the run);
 * - after the run, once the fuzz connections are gone, its RSS comes back to within
 *   `rssBoundMb` of the baseline measured before the fuzzing started;
 * - a new client can still connect, subscribe and get its own QoS 1 message back;
 * - it still stops cleanly on SIGTERM (exit code 0).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clearRetained, endFuzzSessions } from './cleanup';
import { buildPlan, type ConnectionPlan } from './plan';
import type { MutationKind } from './mutations';
import { probeNewConnection, ReferenceClient, type ReferenceStats } from './reference-client';

export interface FuzzOptions {
  readonly seed: number;
  /** Stop after this many packets have been sent. */
  readonly packets: number;
  readonly connections: number;
  /** Stop after this long even if fewer packets were sent (ms). */
  readonly maxDurationMs: number;
  /** RSS after the run may exceed the baseline by this much (MB). */
  readonly rssBoundMb: number;
  /** No acknowledgement for this long while one is awaited is a hang (ms). */
  readonly hangMs: number;
  /** Only these connection indices, one after the other (reproduce a failure). */
  readonly replay?: readonly number[];
  /** Progress lines (the long run prints them). */
  readonly progress?: (line: string) => void;
}

export interface FuzzResult {
  readonly seed: number;
  readonly packets: number;
  readonly bytes: number;
  readonly connections: number;
  readonly durationMs: number;
  readonly mutations: Partial<Record<MutationKind, number>>;
  readonly openings: Record<ConnectionPlan['opening'], number>;
  /** How the gateway ended connections, from its log: reason → count. */
  readonly closeReasons: Record<string, number>;
  /** The most frequent details of malformed-packet and protocol-error closes. */
  readonly topDetails: readonly [string, number][];
  readonly rss: { readonly baselineMb: number; readonly peakMb: number; readonly afterMb: number; readonly boundMb: number };
  /** What the fuzz clients had left in the gateway before cleanup.ts ended it: sessions, retained messages. */
  readonly cleanup: { readonly sessions: number; readonly retained: number; readonly retainedCleared: number };
  readonly reference: readonly ReferenceStats[];
  /** From the gateway's /metrics at the end. */
  readonly gateway: Record<string, number>;
  readonly failures: readonly string[];
}

/** The CLI, compiled (this file runs from dist/test/fuzz/). */
const GATEWAY_MAIN = join(__dirname, '..', '..', 'gateway', 'main.js');
/** See startGateway: at most 200 × 100 queued messages and 4 MiB of retained payload. */
export const FUZZ_LIMITS = { maxSessions: 200, maxQueued: 100, maxRetained: 2000, maxRetainedBytes: '4MiB' } as const;
/** Seconds the RSS may take to come back after the fuzz connections are gone. */
const SETTLE_MS = 20_000;

export async function runFuzz(options: FuzzOptions): Promise<FuzzResult> {
  const dir = mkdtempSync(join(tmpdir(), 'edgeway-fuzz-'));
  const failures: string[] = [];
  const gw = await startGateway(dir);
  const references: ReferenceClient[] = [];
  try {
    return await fuzzAgainst(gw, options, failures, references);
  } finally {
    for (const ref of references) ref.abort();
    gw.kill();
    await gw.exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

interface GatewayChild {
  readonly child: ChildProcess;
  readonly port: number;
  readonly metricsPort: number;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Set once it exited. */
  exit: { code: number | null; signal: NodeJS.Signals | null } | null;
  /** The last 64 KiB of stderr, and whether any of it mentioned an uncaught error. */
  stderrTail: string;
  uncaught: boolean;
  closeReasons: Map<string, number>;
  details: Map<string, number>;
  kill(): void;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A log field's value: bare, or a JSON string (console-logger.ts formatValue). */
function field(line: string, key: string): string | undefined {
  const m = new RegExp(` ${key}=("(?:[^"\\\\]|\\\\.)*"|\\S+)`).exec(line);
  if (m === null) return undefined;
  const raw = m[1] as string;
  return raw.startsWith('"') ? (JSON.parse(raw) as string) : raw;
}

async function startGateway(dir: string): Promise<GatewayChild> {
  const port = await freePort();
  const metricsPort = await freePort();
  const config = join(dir, 'edgeway.yaml');
  // JSON is YAML. Defaults everywhere but four limits, lowered to bound what fuzz clients may
  // legitimately leave behind — persistent sessions under identifiers a mutation made up (3.1.1
  // sessions never expire) with their queued messages, retained messages on random topics — so
  // that the RSS check after the run measures leaks rather than data the clients asked for. They
  // also make the fuzz hit those limits (eviction, drops) all the time.
  writeFileSync(
    config,
    JSON.stringify({
      listeners: [{ protocol: 'mqtt', host: '127.0.0.1', port }],
      limits: FUZZ_LIMITS,
      storage: { path: join(dir, 'edgeway.db') },
      metrics: { host: '127.0.0.1', port: metricsPort },
      sys: { interval: 2 },
      log: { level: 'info' },
    }),
  );
  // As the installed command runs it (package.json, scripts/install.sh): a small young generation,
  // two malloc arenas. EDGEWAY_FUZZ_NODE_ARGS adds Node options for a diagnosis (e.g. heap snapshots).
  const extraArgs = (process.env.EDGEWAY_FUZZ_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
  // Not the test runner's NODE_OPTIONS (tap's loader hooks would load into the gateway and count in its RSS).
  const { NODE_OPTIONS: _runnerOptions, ...env } = process.env;
  const child = spawn(process.execPath, ['--max-semi-space-size=2', ...extraArgs, GATEWAY_MAIN, '--config', config], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...env, MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? '2' },
  });
  const gw: GatewayChild = {
    child,
    port,
    metricsPort,
    exit: null,
    stderrTail: '',
    uncaught: false,
    closeReasons: new Map(),
    details: new Map(),
    exited: new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal }))),
    kill() {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          // exited meanwhile
        }
      }
    },
  };
  void gw.exited.then((exit) => (gw.exit = exit));
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    if (/uncaught|unhandled/i.test(s)) gw.uncaught = true;
    gw.stderrTail = (gw.stderrTail + s).slice(-65536);
  });
  let started = false;
  let rest = '';
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout?.setEncoding('utf8').on('data', (s: string) => {
      const lines = (rest + s).split('\n');
      rest = lines.pop() ?? '';
      for (const line of lines) {
        if (!started && line.includes('edgeway started')) {
          started = true;
          resolve();
        }
        countClose(gw, line);
      }
    });
    void gw.exited.then((exit) => reject(new Error(`the gateway exited before it started (${JSON.stringify(exit)}): ${gw.stderrTail}`)));
    setTimeout(() => reject(new Error('the gateway did not start within 15 s')), 15_000).unref();
  });
  try {
    await ready;
  } catch (err) {
    gw.kill();
    throw err;
  }
  return gw;
}

/** Tallies how the gateway closed connections, from its log lines. */
function countClose(gw: GatewayChild, line: string): void {
  let reason: string | undefined;
  if (line.includes(' client disconnected ') || line.includes(' connection closed before CONNECT completed ')) reason = field(line, 'reason');
  else if (line.includes(' connection refused')) reason = 'connect-refused';
  if (reason === undefined) return;
  gw.closeReasons.set(reason, (gw.closeReasons.get(reason) ?? 0) + 1);
  if (reason === 'malformed-packet' || reason === 'protocol-error' || reason === 'connect-refused') {
    // Numbers and names vary per packet: keep the message's shape.
    const detail = `${reason}: ${(field(line, reason === 'connect-refused' ? 'reason' : 'detail') ?? '?').replace(/\d+/g, 'N').replace(/"[^"]*"/g, '"…"').slice(0, 90)}`;
    gw.details.set(detail, (gw.details.get(detail) ?? 0) + 1);
  }
}

function rssMb(pid: number | undefined): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
    return kb / 1024;
  } catch {
    return NaN;
  }
}

async function scrapeMetrics(port: number): Promise<Record<string, number>> {
  const text = await new Promise<string>((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/metrics', timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (s: string) => (body += s));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error('metrics scrape timed out')));
    req.on('error', reject);
  });
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^(edgeway_\w+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m !== null) out[`${m[1]}${m[2] ?? ''}`] = Number(m[3]);
  }
  return out;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Sends one plan over a fresh connection. Resolves when the connection is closed. */
async function sendPlan(port: number, plan: ConnectionPlan, sent: { packets: number; bytes: number }): Promise<void> {
  const socket = net.connect({ host: '127.0.0.1', port });
  socket.setNoDelay(true);
  let closed = false;
  const closedPromise = new Promise<void>((resolve) => socket.on('close', () => ((closed = true), resolve())));
  socket.on('error', () => {}); // ECONNRESET, EPIPE: the gateway closed first, as it should
  socket.on('data', () => {}); // read and drop: a fuzz client that stops reading would only test backpressure
  const connected = await new Promise<boolean>((resolve) => {
    socket.once('connect', () => resolve(true));
    void closedPromise.then(() => resolve(false));
  });
  if (!connected) return;
  for (const write of plan.writes) {
    if (closed) break;
    const flushed = socket.write(write.bytes);
    sent.packets += write.packets;
    sent.bytes += write.bytes.length;
    if (flushed) {
      // Yield so the next piece goes out in its own segment (packets split across reads).
      await new Promise((r) => setImmediate(r));
    } else {
      // The gateway is not reading (backpressure on this publisher, or a huge announced packet).
      const drained = await Promise.race([new Promise<boolean>((r) => socket.once('drain', () => r(true))), closedPromise.then(() => false), sleep(5000).then(() => false)]);
      if (!drained) break;
    }
  }
  if (!closed) {
    if (plan.ending === 'end') socket.end();
    else socket.destroy();
    await Promise.race([closedPromise, sleep(3000)]);
    socket.destroy();
  }
}

async function fuzzAgainst(gw: GatewayChild, options: FuzzOptions, failures: string[], references: ReferenceClient[]): Promise<FuzzResult> {
  const { seed, progress } = options;
  const pid = gw.child.pid;
  let peak = 0;
  const sampler = setInterval(() => {
    const rss = rssMb(pid);
    if (rss > peak) peak = rss;
  }, 200);
  try {
    const token = randomBytes(8).toString('hex');
    for (const level of [4, 5] as const) {
      const ref = new ReferenceClient(gw.port, level, token);
      await ref.start();
      references.push(ref);
    }
    // Baseline: the gateway serving the reference clients, warmed up, before any fuzzing.
    await sleep(2000);
    const baseline = rssMb(pid);
    peak = Math.max(peak, baseline);

    const sent = { packets: 0, bytes: 0 };
    const mutations: Partial<Record<MutationKind, number>> = {};
    const openings: Record<ConnectionPlan['opening'], number> = { connect: 0, 'mutated-connect': 0, 'no-connect': 0 };
    const active = new Set<number>();
    let nextIndex = 0;
    let connections = 0;
    let stop = false;
    const started = Date.now();
    const deadline = started + options.maxDurationMs;
    const replay = options.replay;

    const fail = (why: string): void => {
      if (!stop) failures.push(why);
      stop = true;
    };
    const watchdog = setInterval(() => {
      if (gw.exit !== null) {
        fail(`the gateway exited (${JSON.stringify(gw.exit)}) while connections ${[...active].join(',')} were open (replay: --seed ${seed} --replay ${[...active].join(',')}); stderr: ${gw.stderrTail.slice(-4000)}`);
      }
      for (const ref of references) {
        if (ref.pending > 0 && Date.now() - ref.lastAckAt > options.hangMs) {
          fail(`no acknowledgement for the ${ref.level === 5 ? 'MQTT 5' : '3.1.1'} reference client in ${options.hangMs} ms (connections open: ${[...active].join(',')})`);
        }
      }
    }, 250);

    const worker = async (): Promise<void> => {
      while (!stop && sent.packets < options.packets && Date.now() < deadline) {
        let index: number;
        if (replay !== undefined) {
          if (nextIndex >= replay.length) return;
          index = replay[nextIndex++] as number;
        } else index = nextIndex++;
        const plan = buildPlan(seed, index);
        for (const [kind, n] of Object.entries(plan.mutations)) mutations[kind as MutationKind] = (mutations[kind as MutationKind] ?? 0) + n;
        openings[plan.opening]++;
        connections++;
        active.add(index);
        await sendPlan(gw.port, plan, sent);
        active.delete(index);
      }
    };
    let lastReport = Date.now();
    const reporter = setInterval(() => {
      if (progress === undefined || Date.now() - lastReport < 5000) return;
      lastReport = Date.now();
      const s = (Date.now() - started) / 1000;
      progress(`${s.toFixed(0)} s: ${sent.packets} packets (${Math.round(sent.packets / s)}/s), ${connections} connections, RSS ${rssMb(pid).toFixed(1)} MB (peak ${peak.toFixed(1)})`);
    }, 1000);
    await Promise.all(Array.from({ length: replay === undefined ? options.connections : 1 }, worker));
    const durationMs = Date.now() - started;
    clearInterval(reporter);
    progress?.(`fuzzing done: ${sent.packets} packets in ${(durationMs / 1000).toFixed(1)} s; checking the reference clients`);
    clearInterval(watchdog);
    if (gw.exit !== null && failures.length === 0) failures.push(`the gateway exited (${JSON.stringify(gw.exit)}); stderr: ${gw.stderrTail.slice(-4000)}`);

    const reference: ReferenceStats[] = [];
    if (gw.exit === null) {
      for (const ref of references) {
        const stats = await ref.finish(30_000);
        reference.push(stats);
        const name = ref.level === 5 ? 'MQTT 5' : '3.1.1';
        if (stats.missingCount > 0) failures.push(`${name} reference client: ${stats.missingCount} acknowledged messages never arrived (first: ${stats.missing.join(',')})`);
        if (stats.unacknowledged > 0) failures.push(`${name} reference client: ${stats.unacknowledged} publishes never acknowledged`);
        if (stats.acknowledged === 0) failures.push(`${name} reference client: no message acknowledged at all`);
      }
    }
    references.length = 0;

    // RSS after: once the fuzz clients' sessions and retained messages are gone (cleanup.ts) and
    // the gateway has no client left, it must come back within the bound.
    const bound = baseline + options.rssBoundMb;
    let after = NaN;
    let gateway: Record<string, number> = {};
    const cleanup = { before: {} as Record<string, number>, retainedCleared: 0 };
    if (gw.exit === null) {
      cleanup.before = await scrapeMetrics(gw.metricsPort).catch(() => ({}));
      try {
        await endFuzzSessions(gw.port);
        cleanup.retainedCleared = await clearRetained(gw.port, 30_000);
      } catch (err) {
        failures.push(`cleaning up the fuzz sessions and retained messages failed: ${String(err)}`);
      }
      progress?.(`fuzz sessions and retained messages cleared; waiting for the RSS to settle (gateway pid ${pid})`);
      const settleDeadline = Date.now() + SETTLE_MS;
      for (;;) {
        const metrics = await scrapeMetrics(gw.metricsPort).catch(() => ({}) as Record<string, number>);
        const rss = rssMb(pid);
        after = Number.isNaN(after) ? rss : Math.min(after, rss);
        if ((metrics.edgeway_clients_connected === 0 && after <= bound) || Date.now() > settleDeadline) break;
        await sleep(500);
      }
      if (!(after <= bound)) failures.push(`RSS after the run ${after.toFixed(1)} MB stayed above the bound ${bound.toFixed(1)} MB (baseline ${baseline.toFixed(1)} + ${options.rssBoundMb} MB) for ${SETTLE_MS / 1000} s`);
      for (const level of [4, 5] as const) {
        const problem = await probeNewConnection(gw.port, level, 10_000);
        if (problem !== null) failures.push(`a new ${level === 5 ? 'MQTT 5' : '3.1.1'} client after the run: ${problem}`);
      }
      gateway = await scrapeMetrics(gw.metricsPort).catch((err: unknown) => {
        failures.push(`metrics scrape after the run failed: ${String(err)}`);
        return {};
      });
      // A clean stop after the abuse: SIGTERM, exit code 0, within 10 s.
      process.kill(pid as number, 'SIGTERM');
      const exit = await Promise.race([gw.exited, sleep(10_000).then(() => null)]);
      if (exit === null || exit.code !== 0) failures.push(`the gateway did not stop cleanly on SIGTERM: ${JSON.stringify(exit)}`);
    }
    if (gw.uncaught) failures.push(`the gateway's stderr mentions an uncaught exception or unhandled rejection: ${gw.stderrTail.slice(-4000)}`);

    const details = [...gw.details.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15);
    return {
      seed,
      packets: sent.packets,
      bytes: sent.bytes,
      connections,
      durationMs,
      mutations,
      openings,
      closeReasons: Object.fromEntries([...gw.closeReasons.entries()].sort((a, b) => b[1] - a[1])),
      topDetails: details,
      rss: { baselineMb: baseline, peakMb: peak, afterMb: after, boundMb: bound },
      cleanup: { sessions: cleanup.before.edgeway_sessions ?? NaN, retained: cleanup.before.edgeway_retained_messages ?? NaN, retainedCleared: cleanup.retainedCleared },
      reference,
      gateway,
      failures,
    };
  } finally {
    clearInterval(sampler);
  }
}

/** The result as a few readable lines (the long run prints it; the CI test logs it). */
export function formatResult(r: FuzzResult): string {
  const s = r.durationMs / 1000;
  const lines = [
    `seed ${r.seed}: ${r.packets} packets (${(r.bytes / 1e6).toFixed(1)} MB) over ${r.connections} connections in ${s.toFixed(1)} s — ${Math.round(r.packets / s)} packets/s`,
    `openings: ${Object.entries(r.openings).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `mutations: ${Object.entries(r.mutations).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `gateway closed connections: ${Object.entries(r.closeReasons).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `most frequent reasons:\n${r.topDetails.map(([d, n]) => `  ${n}\t${d}`).join('\n')}`,
    `gateway counted: ${['edgeway_connections_accepted_total', 'edgeway_packets_received_total', 'edgeway_bytes_received_total', 'edgeway_messages_received_total', 'edgeway_sessions', 'edgeway_retained_messages']
      .map((k) => `${k.replace('edgeway_', '')} ${r.gateway[k] ?? '?'}`)
      .join(', ')}`,
    `limit hits: ${Object.entries(r.gateway).filter(([k, v]) => k.startsWith('edgeway_limit_hits_total') && v > 0).map(([k, v]) => `${/limit="(\w+)"/.exec(k)?.[1]} ${v}`).join(', ') || 'none'}`,
    `left by the fuzz clients and cleared before the RSS check: ${r.cleanup.sessions} sessions, ${r.cleanup.retained} retained messages (${r.cleanup.retainedCleared} cleared)`,
    `RSS: baseline ${r.rss.baselineMb.toFixed(1)} MB, peak ${r.rss.peakMb.toFixed(1)} MB, after ${r.rss.afterMb.toFixed(1)} MB (bound ${r.rss.boundMb.toFixed(1)} MB)`,
    ...r.reference.map(
      (ref) => `reference ${ref.level === 5 ? 'MQTT 5' : '3.1.1'}: ${ref.acknowledged} acknowledged, ${ref.received} received, ${ref.missingCount} missing, ${ref.duplicates} duplicates, ${ref.reconnects} reconnects`,
    ),
    r.failures.length === 0 ? 'PASS' : `FAIL:\n${r.failures.map((f) => `  - ${f}`).join('\n')}`,
  ];
  return lines.join('\n');
}
