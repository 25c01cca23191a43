/**
 * The real `edgeway` process with /metrics on, measured from outside: its VmRSS from
 * /proc/<pid>/status and its counters and gauges from /metrics — what a resource-bound test
 * (abuse resistance, memory budgets) must read on the gateway itself, not inside the test process.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startGatewayProcess } from './gateway';
import { freePort, type Running, type Teardowns } from './processes';

export interface MeteredGateway {
  readonly pid: number;
  readonly port: number;
  readonly process: Running;
  /** The gateway's resident memory now, in bytes. */
  rss(): number;
  /** Its limit hits by limit, from /metrics. */
  limitHits(): Promise<Record<string, number>>;
  /** A counter or gauge without labels, from /metrics. */
  metric(name: string): Promise<number>;
  /** SIGTERM, then waits for the exit (a clean stop: storage closed). */
  stop(): Promise<void>;
}

export interface MeteredGatewayOptions {
  /** Seconds between $SYS publications; 0 (the default here) turns them off. */
  readonly sysInterval?: number;
  /** The database; default `<dir>/<name>/edgeway.db`, one per gateway. */
  readonly storagePath?: string;
}

let gatewayCount = 0;

/** Starts `edgeway` in `dir` with `limits` (a YAML flow mapping) on free loopback ports. */
export async function startMeteredGateway(t: Teardowns, dir: string, limits: string, options: MeteredGatewayOptions = {}): Promise<MeteredGateway> {
  const [port, metricsPort] = [await freePort(), await freePort()];
  const name = `gw${++gatewayCount}`;
  const config = join(dir, `${name}.yaml`);
  writeFileSync(
    config,
    [
      `listeners:\n  - protocol: mqtt\n    host: 127.0.0.1\n    port: ${port}`,
      `limits: ${limits}`,
      `sys:\n  interval: ${options.sysInterval ?? 0}`,
      `storage:\n  path: ${options.storagePath ?? join(dir, name, 'edgeway.db')}`,
      `metrics:\n  host: 127.0.0.1\n  port: ${metricsPort}`,
      '',
    ].join('\n'),
  );
  const running = await startGatewayProcess(t, config, { cwd: dir, what: `gateway ${name}` });
  const pid = running.child.pid as number;
  const text = async (): Promise<string> => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  return {
    pid,
    port,
    process: running,
    rss: () => {
      const kb = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (kb === null) throw new Error('no VmRSS');
      return Number(kb[1]) * 1024;
    },
    limitHits: async () => {
      const hits: Record<string, number> = {};
      for (const m of (await text()).matchAll(/^edgeway_limit_hits_total\{limit="(\w+)"\} (\d+)$/gm)) hits[m[1] as string] = Number(m[2]);
      return hits;
    },
    metric: async (metric) => {
      const m = new RegExp(`^${metric} (\\d+)$`, 'm').exec(await text());
      if (m === null) throw new Error(`no ${metric} in /metrics`);
      return Number(m[1]);
    },
    stop: async () => {
      running.child.kill('SIGTERM');
      await running.exited;
    },
  };
}

export const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`;

/** Polls `predicate` (async) until true or `ms` passes. */
export async function eventually(predicate: () => Promise<boolean> | boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
