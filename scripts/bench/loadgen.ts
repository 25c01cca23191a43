/**
 * Load-generator child process. Usage (spawned by run.ts, pinned to its own core):
 *   node dist/scripts/bench/loadgen.js '<LoadgenConfig JSON>'
 * Prints exactly one LoadgenResult JSON line on stdout; diagnostics go to stderr.
 * Running in its own process lets the harness attribute CPU to "load side"
 * separately from the broker and keeps harness bookkeeping off the hot path.
 */
import type { LoadgenConfig, LoadgenResult, ScenarioName } from './types';
import { faninQos0, faninQos1, fanoutQos0, idleRss, latency, overload } from './workloads';

const WORKLOADS: Record<ScenarioName, (cfg: LoadgenConfig) => Promise<LoadgenResult>> = {
  'fanin-qos0': faninQos0,
  'fanout-qos0': fanoutQos0,
  'fanin-qos1': faninQos1,
  latency,
  'idle-rss': idleRss,
  overload,
  'fanin-qos0-v5': faninQos0,
  'fanout-qos0-v5': fanoutQos0,
};

async function main(): Promise<void> {
  const arg = process.argv[2];
  if (!arg) throw new Error('usage: loadgen.js <config-json>');
  const cfg = JSON.parse(arg) as LoadgenConfig;
  const run = WORKLOADS[cfg.scenario];
  if (!run) throw new Error(`unknown scenario ${String(cfg.scenario)}`);
  // Belt and braces: the harness also kills us, but never outlive a hung broker.
  const hardLimit = setTimeout(() => {
    process.stderr.write('loadgen: hard time limit reached\n');
    process.exit(3);
  }, cfg.warmupMs + cfg.durationMs + 60_000);
  hardLimit.unref();
  const result = await run(cfg);
  // stdout is a pipe, which Node writes synchronously on Linux, so exiting right
  // after is safe; exiting explicitly avoids waiting for sockets to linger.
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}

main().catch((err: unknown) => {
  process.stderr.write(`loadgen error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
