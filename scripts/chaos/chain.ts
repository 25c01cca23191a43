/**
 * The chain under test: a real `redis-server` (AOF, fsync always), two socat ptys, and the real
 * gateway (dist/gateway/main.js) as a child process with storage, both serial ports, the uplink of
 * `sensors/#` and the metrics listener. Every process is started here, signalled by its PID only,
 * and killed (and the temp folder removed) by the `Cleanup` it was registered with.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGatewayProcess } from '../../test/helpers/gateway';
import { freePort, type Running } from '../../test/helpers/processes';
import { Device, PtyPair } from '../../test/helpers/pty';
import { RedisServer } from '../../test/helpers/redis';
import type { Cleanup } from '../lib/cleanup';
import { scrapeMetrics } from '../lib/metrics';

export const GATEWAY_ID = 'chaos';
export const STREAM = `edgeway:uplink:${GATEWAY_ID}`;

export interface ChainOptions {
  readonly ports: readonly string[];
  /** The longest any one process of the chain may live (ms), a hard stop for a run gone wrong. */
  readonly lifetimeMs: number;
}

export class Chain {
  private gatewayRuns: Running[] = [];

  private constructor(
    private readonly cleanup: Cleanup,
    readonly dir: string,
    readonly redis: RedisServer,
    readonly ptys: ReadonlyMap<string, PtyPair>,
    readonly mqttPort: number,
    readonly metricsPort: number,
    private readonly configPath: string,
    private readonly lifetimeMs: number,
  ) {}

  static async start(cleanup: Cleanup, options: ChainOptions): Promise<Chain> {
    const dir = mkdtempSync(join(tmpdir(), 'edgeway-chaos-'));
    cleanup.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const redis = await RedisServer.start(cleanup, { appendonly: true, lifetimeMs: options.lifetimeMs });
    const ptys = new Map(options.ports.map((name) => [name, new PtyPair(dir, name)] as const));
    cleanup.teardown(async () => {
      for (const pty of ptys.values()) await pty.stop();
    });
    const mqttPort = await freePort();
    const metricsPort = await freePort();
    const config = {
      listeners: [{ protocol: 'mqtt', host: '127.0.0.1', port: mqttPort }],
      log: { level: 'info' },
      sys: { interval: 0 },
      storage: { path: join(dir, 'data', 'edgeway.db') },
      serial: [...ptys].map(([name, pty]) => ({
        name,
        path: pty.gatewayPath,
        format: 'json',
        statusInterval: 0,
        // Quick reopening, so an unplug window is short and the accounting's not-read windows small.
        reconnect: { initialDelay: 50, maxDelay: 500 },
      })),
      redis: {
        url: redis.url,
        gatewayId: GATEWAY_ID,
        // A paused Redis is noticed within a second, and a restarted one found within one.
        commandTimeout: 1000,
        connectTimeout: 1000,
        reconnect: { initialDelay: 100, maxDelay: 1000 },
        uplink: { topics: ['sensors/#'] },
      },
      metrics: { host: '127.0.0.1', port: metricsPort },
    };
    const configPath = join(dir, 'edgeway.yaml');
    writeFileSync(configPath, JSON.stringify(config, null, 2)); // JSON is YAML
    return new Chain(cleanup, dir, redis, ptys, mqttPort, metricsPort, configPath, options.lifetimeMs);
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.mqttPort}`;
  }

  /** Opens a device end (the sensors' side of a pty). */
  static openDevice(path: string): Promise<Device> {
    return Device.open(path);
  }

  /** Starts the gateway (again: same config, same data folder); resolves once it listens. */
  async startGateway(): Promise<void> {
    const run = await startGatewayProcess(this.cleanup, this.configPath, { cwd: this.dir, lifetimeMs: this.lifetimeMs, what: 'the gateway to start' });
    this.gatewayRuns.push(run);
  }

  get gatewayPid(): number | undefined {
    return this.gatewayRuns.at(-1)?.child.pid;
  }

  /** `kill -9` of the running gateway; resolves once it is gone. */
  async killGateway(): Promise<void> {
    const run = this.gatewayRuns.at(-1);
    if (run === undefined || run.child.pid === undefined) throw new Error('no gateway running');
    if (run.child.exitCode !== null || run.child.signalCode !== null) throw new Error(`the gateway had exited by itself:\n${this.gatewayOutput(40)}`);
    process.kill(run.child.pid, 'SIGKILL');
    await run.exited;
  }

  /** Throws if the gateway exited without being killed (a crash is a finding). */
  checkGatewayAlive(): void {
    const run = this.gatewayRuns.at(-1);
    if (run !== undefined && (run.child.exitCode !== null || run.child.signalCode !== null)) {
      throw new Error(`the gateway exited by itself (${run.child.exitCode ?? run.child.signalCode}):\n${this.gatewayOutput(40)}`);
    }
  }

  /** The last `lines` lines the gateway wrote, over all its runs. */
  gatewayOutput(lines: number): string {
    return this.gatewayRuns
      .map((r) => r.stdout + r.stderr)
      .join('--- restart ---\n')
      .split('\n')
      .slice(-lines)
      .join('\n');
  }

  /** Waits until the uplink has nothing left to send (two scrapes in a row); false on timeout. */
  async drained(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    let quiet = 0;
    while (Date.now() < deadline) {
      try {
        const m = await scrapeMetrics(this.metricsPort);
        const idle = m.get('edgeway_uplink_backlog_messages') === 0 && m.get('edgeway_uplink_state{state="connected"}') === 1;
        quiet = idle ? quiet + 1 : 0;
        if (quiet >= 2) return true;
      } catch {
        quiet = 0;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    return false;
  }
}
