/**
 * Benchmark harness entry point (`npm run bench -- --help`).
 *
 * For every broker and scenario: start a *fresh* broker (so one scenario's
 * leftover queues/heap cannot skew the next, and idle RSS is measured on a
 * clean process), spawn the load generator pinned to the other core, collect
 * its JSON result, stop the broker. Then print one Markdown table.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HOST, startBroker, type BrokerEnv, type RunningBroker } from './brokers';
import {
  captureTail,
  clockTicks,
  detectPinning,
  fdLimits,
  installCleanup,
  pinSelf,
  spawnTracked,
  waitExit,
  type Pinning,
} from './children';
import { USAGE, parseArgs, type BenchOptions } from './cli';
import { legend, renderNotes, renderTable, type Outcome, type Results } from './report';
import { SCENARIO_SPECS, estimateSec, loadgenConfig } from './scenarios';
import type { BrokerName, LoadgenResult, ScenarioName } from './types';

const log = (msg: string): void => {
  process.stderr.write(`${msg}\n`);
};

/**
 * Copy the compiled bench scripts to a private directory and run the child
 * processes from there, so a concurrent `rm -rf dist` or rebuild (e.g. a test
 * run in another terminal) cannot break or mix versions within a benchmark.
 * Bare imports (mqtt-packet) then resolve through NODE_PATH.
 */
function snapshotScripts(tmpDir: string): { binDir: string; env: Record<string, string> } {
  const binDir = path.join(tmpDir, 'bin');
  mkdirSync(binDir);
  for (const f of readdirSync(__dirname)) if (f.endsWith('.js')) copyFileSync(path.join(__dirname, f), path.join(binDir, f));
  const nodeModules = path.dirname(path.dirname(require.resolve('mqtt-packet/package.json')));
  return { binDir, env: { NODE_PATH: nodeModules } };
}

interface Context {
  binDir: string;
  childEnv: Record<string, string>;
  opts: BenchOptions;
  pinning: Pinning;
  clkTck: number;
  nofile: number;
  brokerEnv: BrokerEnv;
}

/** Spawn the load generator for one scenario and parse its single JSON line. */
async function runLoadgen(ctx: Context, scenario: ScenarioName, broker: RunningBroker): Promise<LoadgenResult> {
  const cfg = loadgenConfig(ctx.opts, scenario, { host: HOST, port: broker.port, pid: broker.pid }, ctx.clkTck);
  const child = spawnTracked([process.execPath, path.join(ctx.binDir, 'loadgen.js'), JSON.stringify(cfg)], {
    cpu: ctx.pinning.loadCpu,
    nofile: ctx.nofile,
    env: ctx.childEnv,
  });
  const stdout = captureTail(child.stdout, 1 << 20);
  const stderr = captureTail(child.stderr);
  // 'close' (not 'exit'): only then is every byte of stdout guaranteed read.
  const closed = new Promise<number | string | null>((resolve) =>
    child.once('close', (code, signal) => resolve(code ?? signal)),
  );
  const limitMs = cfg.warmupMs + cfg.durationMs + 45_000;
  let timer: NodeJS.Timeout | undefined;
  const code = await Promise.race([closed, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), limitMs)))]);
  clearTimeout(timer);
  if (code === 'timeout') {
    try {
      process.kill(child.pid!, 'SIGKILL');
    } catch {
      // exited just now
    }
    await waitExit(child, 5000);
    throw new Error(`load generator timed out after ${limitMs} ms\n${stderr()}`);
  }
  const line = stdout().trim().split('\n').pop() ?? '';
  if (code !== 0 || !line.startsWith('{')) {
    throw new Error(`load generator failed (exit ${code})\n${stderr().trim()}`);
  }
  return JSON.parse(line) as LoadgenResult;
}

async function runOne(ctx: Context, name: BrokerName, scenario: ScenarioName): Promise<Outcome> {
  if (name === 'aedes' && SCENARIO_SPECS[scenario].mqtt5 === true) return { ok: false, error: 'aedes does not support MQTT 5', skipped: true };
  const broker = await startBroker(name, ctx.brokerEnv);
  try {
    const result = await runLoadgen(ctx, scenario, broker);
    // A broker that died under load invalidates the numbers even if the client finished.
    if (!result.brokerAlive) {
      return { ok: false, error: `${name} died during the measurement\n${broker.output()}` };
    }
    if (broker.child.exitCode !== null || broker.child.signalCode !== null) {
      result.notes.push(
        `broker exited (${broker.child.exitCode ?? broker.child.signalCode}) while the clients disconnected, after the measurement`,
      );
    }
    return { ok: true, result };
  } catch (err) {
    const tail = broker.output();
    return { ok: false, error: `${(err as Error).message}${tail ? `\n--- broker output ---\n${tail}` : ''}` };
  } finally {
    await broker.stop();
  }
}

function summaryLine(o: Outcome): string {
  if (!o.ok) return `${o.skipped === true ? 'skipped:' : 'ERROR'} ${o.error.split('\n')[0] ?? ''}`;
  const m = o.result.metrics;
  const main = Object.entries(m)
    .slice(0, 3)
    .map(([k, v]) => `${k}=${Number.isInteger(v) ? v : v.toFixed(2)}`)
    .join(' ');
  const c = o.result.cpu;
  const cpu = c ? ` cpu broker=${c.brokerPct.toFixed(0)}% load=${c.loadgenPct.toFixed(0)}% other=${c.otherPct.toFixed(0)}%` : '';
  return `${main}${cpu}`;
}

async function main(): Promise<void> {
  const parsed = parseArgs(process.argv.slice(2));
  if (parsed === 'help') {
    process.stdout.write(USAGE);
    return;
  }
  const opts = parsed;
  const startedAt = new Date().toISOString();
  const tmpDir = mkdtempSync(path.join(os.tmpdir(), 'edgeway-bench-'));
  installCleanup(() => rmSync(tmpDir, { recursive: true, force: true }));

  const pinning = detectPinning(opts.pin);
  if (pinning.warning) log(`WARNING: ${pinning.warning}`);
  if (pinning.loadCpu !== null) pinSelf(pinning.loadCpu);

  // Each side holds one socket per client plus a few; check up front rather
  // than failing with EMFILE half-way through the idle-connection scenario.
  const needed = Math.max(opts.idleConns + 20, opts.publishers + 1, opts.subscribers + 1) + 256;
  const limits = fdLimits();
  if (limits.hard < needed) {
    throw new Error(
      `open-file hard limit is ${limits.hard}, but ${needed} are needed (--idle-conns ${opts.idleConns}). ` +
        `Raise it (e.g. 'ulimit -Hn ${needed}' as root / in limits.conf) or lower --idle-conns.`,
    );
  }
  const nofile = Math.min(limits.hard, Math.max(limits.soft, needed));

  const snapshot = snapshotScripts(tmpDir);
  // Relative to this script by default, so running run.js of any build (dist/ or a private
  // `tsc --outDir`) benchmarks that build's gateway.
  const edgewayEntry = opts.edgewayEntry ?? path.resolve(__dirname, '../../gateway/main.js');
  const ctx: Context = {
    binDir: snapshot.binDir,
    childEnv: snapshot.env,
    opts,
    pinning,
    clkTck: clockTicks(),
    nofile,
    brokerEnv: {
      cpu: pinning.brokerCpu,
      nofile,
      tmpDir,
      edgewayEntry,
      gatewayChildEntry: path.resolve(path.dirname(edgewayEntry), '../scripts/gateway-child.js'),
      binDir: snapshot.binDir,
      aedesEntry: require.resolve('aedes'),
      mosquittoBin: opts.mosquittoBin,
      mosquittoNodelay: opts.mosquittoNodelay,
      readyTimeoutMs: opts.readyTimeoutSec * 1000,
    },
  };

  const estimate = opts.brokers.length * opts.scenarios.reduce((a, s) => a + estimateSec(opts, s), 0);
  log(
    `bench: brokers=${opts.brokers.join(',')} scenarios=${opts.scenarios.join(',')} ` +
      `warmup=${opts.warmupSec}s duration=${opts.durationSec}s pinning=${pinning.enabled ? 'broker→CPU0 load→CPU1' : 'off'} ` +
      `(~${Math.ceil(estimate / 60)} min)`,
  );

  const results: Results = {};
  for (const b of opts.brokers) {
    const perBroker: Partial<Record<ScenarioName, Outcome>> = {};
    results[b] = perBroker;
    for (const s of opts.scenarios) {
      const t0 = Date.now();
      let outcome: Outcome;
      try {
        outcome = await runOne(ctx, b, s);
      } catch (err) {
        // Broker did not start: the remaining scenarios would fail the same way.
        outcome = { ok: false, error: (err as Error).message };
        log(`  ${b.padEnd(15)} ${s.padEnd(11)} ${summaryLine(outcome)} — skipping remaining scenarios for ${b}`);
        for (const rest of opts.scenarios.slice(opts.scenarios.indexOf(s))) perBroker[rest] = outcome;
        break;
      }
      perBroker[s] = outcome;
      log(`  ${b.padEnd(15)} ${s.padEnd(11)} ${summaryLine(outcome)} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
    }
  }

  // The overload scenario is judged against the same broker's sustainable rate (scenario 1).
  for (const b of opts.brokers) {
    const ov = results[b]?.overload;
    const f0 = results[b]?.['fanin-qos0'];
    if (ov?.ok && f0?.ok) {
      const base = f0.result.metrics.deliveredPerSec ?? 0;
      if (base > 0) ov.result.metrics.vsFaninQos0 = (ov.result.metrics.deliveredPerSec ?? 0) / base;
    }
  }

  const table = renderTable(opts.brokers, opts.scenarios, results);
  const notes = renderNotes(opts.brokers, opts.scenarios, results);
  const cpuModel = os.cpus()[0]?.model ?? 'unknown CPU';
  process.stdout.write(
    [
      '',
      `## edgeway benchmark — ${startedAt}`,
      '',
      `${cpuModel}, ${os.cpus().length} CPUs, Node ${process.version}; ` +
        `${pinning.enabled ? 'broker pinned to CPU 0, load generator to CPU 1' : `UNPINNED (${pinning.warning ?? ''})`}; ` +
        `warm-up ${opts.warmupSec}s, window ${opts.durationSec}s, payload ${opts.payload} B, fresh broker per scenario` +
        `${opts.brokers.includes('mosquitto') ? `; mosquitto ${opts.mosquittoNodelay ? 'with set_tcp_nodelay true' : 'stock (Nagle on)'}` : ''}.`,
      '',
      table,
      '',
      legend(opts.brokers),
      ...(notes ? ['', '### Notes', '', notes] : []),
      '',
    ].join('\n'),
  );

  if (opts.json) {
    const doc = {
      startedAt,
      environment: { node: process.version, cpus: os.cpus().length, cpuModel, pinning, clkTck: ctx.clkTck },
      options: opts,
      scenarios: Object.fromEntries(opts.scenarios.map((s) => [s, SCENARIO_SPECS[s].title])),
      results,
    };
    writeFileSync(opts.json, `${JSON.stringify(doc, null, 2)}\n`);
    log(`bench: results written to ${opts.json}`);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    log(`bench: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
