/**
 * Footprint of the gateway (issue 6): time from spawn to the "edgeway started" line (listeners
 * open, storage loaded) and idle RSS, for the built-in defaults and for a gateway with storage,
 * one serial port (a socat pty) and a Redis uplink (a real redis-server on a free loopback port),
 * beside an empty Node process. Every child is started here and killed by its PID; bounded in time.
 *
 *   npm run build && node dist/scripts/bench/footprint.js [--idle-seconds 5] [--runs 3]
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { freePort, probe, shebangNodeFlags } from './brokers';
import { installCleanup, spawnTracked, stopChild } from './children';
import { rssKb } from './proc';
import { median } from './stats';

const { values } = parseArgs({ options: { 'idle-seconds': { type: 'string', default: '5' }, runs: { type: 'string', default: '3' } } });
const IDLE_MS = Number(values['idle-seconds']) * 1000;
const RUNS = Number(values.runs);
const MAIN = join(__dirname, '..', '..', 'gateway', 'main.js');

installCleanup();

function start(cmd: string, args: string[], cwd?: string): ChildProcess {
  return spawnTracked([cmd, ...args], { cpu: null, nofile: 4096, ...(cwd === undefined ? {} : { cwd }) });
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

async function measure(label: string, config: string | undefined, dir: string): Promise<{ label: string; readyMs: number[]; rss: number[] }> {
  const readyMs: number[] = [];
  const rss: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    const gw = start(process.execPath, [...shebangNodeFlags(MAIN), MAIN, ...(config === undefined ? [] : ['--config', config])], dir);
    await waitFor(gw, /edgeway started/, 15_000);
    readyMs.push(performance.now() - t0);
    await sleep(IDLE_MS);
    rss.push(rssMb(gw));
    await stopChild(gw, 5000);
  }
  return { label, readyMs, rss };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'edgeway-footprint-'));
  try {
    const results = [];
    const empty = start(process.execPath, [...shebangNodeFlags(MAIN), '-e', 'setInterval(() => {}, 1000)']);
    await sleep(IDLE_MS);
    results.push({ label: 'empty Node process (same flags)', readyMs: [], rss: [rssMb(empty)] });
    await stopChild(empty);

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

    process.stdout.write(`edgeway footprint — node ${process.version}, idle ${IDLE_MS / 1000} s, ${RUNS} runs (median)\n\n`);
    process.stdout.write('| process | start → "edgeway started" | idle RSS |\n| --- | ---: | ---: |\n');
    for (const r of results) process.stdout.write(`| ${r.label} | ${r.readyMs.length === 0 ? '–' : `${median(r.readyMs).toFixed(0)} ms`} | ${median(r.rss).toFixed(1)} MB |\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`footprint: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
