/**
 * Footprint of the gateway (issue 6): time from spawn to the "edgeway started" line (listeners
 * open, storage loaded) and idle RSS, for the built-in defaults and for a gateway with storage,
 * one serial port (a socat pty) and a Redis uplink (a real redis-server on a free loopback port),
 * beside an empty Node process; then where that memory is, and what each dependency costs when
 * loaded alone. Every child is started here and killed by its PID; bounded in time.
 *
 *   npm run build && node dist/scripts/bench/footprint.js [--idle-seconds 20] [--runs 3] [--no-modules]
 *
 * Two RSS readings per run: 5 s after "edgeway started", and after --idle-seconds. They differ by
 * up to ~10 MB: V8 keeps the heap pages that start-up garbage left until its memory reducer
 * compacts them, about 8 s after the first full GC once the process idles (and only when the old
 * generation has grown past ~10 MB, so a smaller start-up can leave the heap uncompacted longer).
 */
import { execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs, promisify } from 'node:util';
import { freePort, probe, shebangNodeFlags } from './brokers';
import { installCleanup, spawnTracked, stopChild } from './children';
import { memoryBreakdown, rssKb, type MemoryBreakdown } from './proc';
import { median } from './stats';

const { values } = parseArgs({
  options: {
    'idle-seconds': { type: 'string', default: '20' },
    runs: { type: 'string', default: '3' },
    'no-modules': { type: 'boolean', default: false },
  },
});
const EARLY_MS = 5000;
const IDLE_MS = Math.max(EARLY_MS, Number(values['idle-seconds']) * 1000);
const RUNS = Number(values.runs);
const ROOT = join(__dirname, '..', '..');
const MAIN = join(ROOT, 'gateway', 'main.js');
const NODE_FLAGS = shebangNodeFlags(MAIN);
const NODE_BINARY = realpathSync(process.execPath);

installCleanup();

/** The environment the installed `edgeway` wrapper (scripts/install.sh) gives the gateway. */
const WRAPPER_ENV = { MALLOC_ARENA_MAX: '2' };

function start(cmd: string, args: string[], cwd?: string): ChildProcess {
  return spawnTracked([cmd, ...args], { cpu: null, nofile: 4096, env: WRAPPER_ENV, ...(cwd === undefined ? {} : { cwd }) });
}

const rssMb = (child: ChildProcess): number => rssKb(child.pid as number) / 1024;

async function waitFor(child: ChildProcess, re: RegExp, ms: number): Promise<void> {
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${re} within ${ms} ms: ${out}`)), ms);
    const on = (chunk: Buffer) => {
      out += chunk.toString();
      if (re.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on('data', on);
    child.stderr?.on('data', on);
  });
}

interface Measured {
  label: string;
  readyMs: number[];
  early: number[];
  idle: number[];
  /** Of the run with the median idle RSS. */
  breakdown: MemoryBreakdown | undefined;
}

function medianBreakdown(runs: { idle: number; breakdown: MemoryBreakdown | undefined }[]): MemoryBreakdown | undefined {
  const sorted = [...runs].sort((a, b) => a.idle - b.idle);
  return sorted[Math.floor((sorted.length - 1) / 2)]?.breakdown;
}

async function measure(label: string, config: string | undefined, dir: string): Promise<Measured> {
  const readyMs: number[] = [];
  const early: number[] = [];
  const runs: { idle: number; breakdown: MemoryBreakdown | undefined }[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    const gw = start(process.execPath, [...NODE_FLAGS, MAIN, ...(config === undefined ? [] : ['--config', config])], dir);
    await waitFor(gw, /edgeway started/, 15_000);
    const ready = performance.now();
    readyMs.push(ready - t0);
    await sleep(EARLY_MS);
    early.push(rssMb(gw));
    await sleep(IDLE_MS - (performance.now() - ready));
    runs.push({ idle: rssMb(gw), breakdown: memoryBreakdown(gw.pid as number, NODE_BINARY) });
    await stopChild(gw, 5000);
  }
  return { label, readyMs, early, idle: runs.map((r) => r.idle), breakdown: medianBreakdown(runs) };
}

async function measureEmpty(): Promise<Measured> {
  const empty = start(process.execPath, [...NODE_FLAGS, '-e', 'setInterval(() => {}, 1000)']);
  await sleep(EARLY_MS);
  const early = rssMb(empty);
  await sleep(IDLE_MS - EARLY_MS);
  const result = { label: 'empty Node process (same flags and environment)', readyMs: [], early: [early], idle: [rssMb(empty)], breakdown: memoryBreakdown(empty.pid as number, NODE_BINARY) };
  await stopChild(empty);
  return result;
}

/**
 * What one module costs loaded alone into an empty Node with the gateway's flags: RSS and V8 heap
 * in use after two full GCs (module source text, compiled code and what its top level builds).
 * Not additive: modules share builtins (net, stream, crypto) and V8's optimizing compiler, whose
 * code pages (~3.5 MB of the node binary) are mapped in once anything is optimized.
 */
const MODULES: [string, string][] = [
  ['(nothing)', ''],
  ['zod', 'zod'],
  ['yaml', 'yaml'],
  ['mqtt-packet', 'mqtt-packet'],
  ['better-sqlite3 (JS only: the addon loads at the first open)', 'better-sqlite3'],
  ['serialport', 'serialport'],
  ['ioredis', 'ioredis'],
  ['config/load (zod, yaml, the schema)', join(ROOT, 'config', 'load.js')],
  ['gateway/broker (mqtt-packet)', join(ROOT, 'gateway', 'broker', 'index.js')],
  ['gateway/app (broker, adapters/sqlite)', join(ROOT, 'gateway', 'app.js')],
  ['adapters/serial (serialport)', join(ROOT, 'adapters', 'serial', 'index.js')],
  ['adapters/redis (ioredis)', join(ROOT, 'adapters', 'redis', 'index.js')],
];

const MODULE_PROBE = `
const id = process.argv[1];
if (id !== '') require(id);
setTimeout(() => {
  globalThis.gc(); globalThis.gc();
  const r = require('node:fs').readFileSync('/proc/self/smaps_rollup', 'utf8');
  const kb = (k) => Number(new RegExp('^' + k + ':\\\\s+(\\\\d+)', 'm').exec(r)[1]);
  const h = require('node:v8').getHeapStatistics();
  process.stdout.write(JSON.stringify({ rss: kb('Rss'), anon: kb('Anonymous'), heapUsed: h.used_heap_size / 1024 }));
}, 1000);`;

async function moduleCosts(): Promise<{ label: string; rss: number; anon: number; heapUsed: number }[]> {
  const run = promisify(execFile);
  const out = [];
  for (const [label, id] of MODULES) {
    // execFile with a timeout: the probe exits by itself within ~1 s.
    const { stdout } = await run(process.execPath, [...NODE_FLAGS, '--expose-gc', '-e', MODULE_PROBE, id], { cwd: ROOT, timeout: 15_000, env: { ...process.env, ...WRAPPER_ENV } });
    out.push({ label, ...(JSON.parse(stdout) as { rss: number; anon: number; heapUsed: number }) });
  }
  return out;
}

const mb = (kb: number): string => (kb / 1024).toFixed(1);

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'edgeway-footprint-'));
  try {
    const results: Measured[] = [await measureEmpty()];

    const mqttPort = 1883; // built-in defaults: 127.0.0.1:1883
    if (!(await probe(mqttPort))) results.push(await measure('edgeway, built-in defaults (storage in ./data)', undefined, dir));

    const redisPort = await freePort();
    const redis = start('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir]);
    await waitFor(redis, /Ready to accept connections/, 10_000);
    const ptyDevice = join(dir, 'tty-device');
    const ptyGateway = join(dir, 'tty-gateway');
    const socat = start('socat', [`pty,raw,echo=0,link=${ptyDevice}`, `pty,raw,echo=0,link=${ptyGateway}`]);
    await sleep(500);
    const port = await freePort();
    const config = join(dir, 'edgeway.yaml');
    writeFileSync(
      config,
      `listeners:\n  - protocol: mqtt\n    host: 127.0.0.1\n    port: ${port}\nstorage:\n  path: ${join(dir, 'db', 'edgeway.db')}\n` +
        `serial:\n  - name: shed\n    path: ${ptyGateway}\n    format: json\nredis:\n  url: redis://127.0.0.1:${redisPort}\n  gatewayId: footprint\n`,
    );
    results.push(await measure('edgeway, storage + 1 serial port + Redis uplink', config, dir));
    await stopChild(socat);
    await stopChild(redis);

    const w = (s: string) => process.stdout.write(s);
    w(`edgeway footprint — node ${process.version} ${NODE_FLAGS.join(' ')}, MALLOC_ARENA_MAX=${WRAPPER_ENV.MALLOC_ARENA_MAX} (as the installed wrapper), ${RUNS} runs (median)\n\n`);
    w(`| process | start → "edgeway started" | RSS 5 s after | RSS after ${IDLE_MS / 1000} s idle |\n| --- | ---: | ---: | ---: |\n`);
    for (const r of results) {
      w(`| ${r.label} | ${r.readyMs.length === 0 ? '–' : `${median(r.readyMs).toFixed(0)} ms`} | ${median(r.early).toFixed(1)} MB | ${median(r.idle).toFixed(1)} MB |\n`);
    }
    w(`\nWhere the idle RSS is (MB, /proc/<pid>/smaps; anonymous = V8 heap + malloc + stacks, of which [heap] = glibc's main arena):\n\n`);
    w('| process | anonymous | of it [heap] | node binary | native addons | other files |\n| --- | ---: | ---: | ---: | ---: | ---: |\n');
    for (const { label, breakdown: b } of results) {
      if (b !== undefined) w(`| ${label} | ${mb(b.anon)} | ${mb(b.brkHeap)} | ${mb(b.nodeBinary)} | ${mb(b.addons)} | ${mb(b.otherFiles)} |\n`);
    }
    if (values['no-modules']) return;
    const costs = await moduleCosts();
    const base = costs[0];
    if (base === undefined) return;
    w(`\nOne module loaded alone into an empty Node (same flags and environment), after two full GCs — not additive (MB):\n\n`);
    w('| module | RSS | + RSS | + anonymous | + V8 heap in use |\n| --- | ---: | ---: | ---: | ---: |\n');
    for (const c of costs) {
      w(`| ${c.label} | ${mb(c.rss)} | ${mb(c.rss - base.rss)} | ${mb(c.anon - base.anon)} | ${mb(c.heapUsed - base.heapUsed)} |\n`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`footprint: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
