/**
 * Starting and stopping the brokers under test (edgeway, edgeway with a
 * durable outbox, mosquitto, aedes), each as its own child process on
 * 127.0.0.1, pinned to the broker core.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { captureTail, spawnTracked, stopChild } from './children';
import type { BrokerName } from './types';

export const HOST = '127.0.0.1';

export interface BrokerEnv {
  /** CPU for the broker, or null for unpinned. */
  cpu: number | null;
  nofile: number;
  /** Directory for generated config files. */
  tmpDir: string;
  edgewayEntry: string;
  /** scripts/gateway-child.js of the same build, for edgeway-durable. */
  gatewayChildEntry: string;
  /** Directory holding the harness's own compiled scripts (aedes-server.js). */
  binDir: string;
  /** Absolute path of aedes' entry module, so aedes-server.js can run from binDir. */
  aedesEntry: string;
  mosquittoBin: string;
  /** Add `set_tcp_nodelay true` (stock mosquitto keeps Nagle on). */
  mosquittoNodelay: boolean;
  readyTimeoutMs: number;
}

export interface RunningBroker {
  name: BrokerName;
  pid: number;
  port: number;
  child: ChildProcess;
  /** Last few KB of the broker's stdout+stderr, for error reports. */
  output: () => string;
  stop: () => Promise<void>;
}

/** Ask the kernel for a free port (tiny race until the broker binds it; fine on loopback). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, HOST, () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Whether something accepts TCP connections on HOST:port. */
export function probe(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: HOST, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

function built(entry: string): string {
  if (!existsSync(entry)) throw new Error(`${entry} not found — is the edgeway gateway built yet?`);
  return entry;
}

/** The config both edgeway kinds run with: one listener, storage in the harness's temp dir. */
function edgewayConfig(port: number, env: BrokerEnv): string {
  const file = path.join(env.tmpDir, `edgeway-${port}.yaml`);
  const db = path.join(env.tmpDir, `edgeway-${port}.db`);
  writeFileSync(file, `listeners:\n  - protocol: mqtt\n    host: ${HOST}\n    port: ${port}\nstorage:\n  path: ${db}\n  sync: normal\n`);
  return file;
}

/** argv for each broker; writes whatever config file the broker needs. */
function commandFor(name: BrokerName, port: number, env: BrokerEnv): string[] {
  switch (name) {
    case 'edgeway':
      return [process.execPath, ...shebangNodeFlags(built(env.edgewayEntry)), env.edgewayEntry, '--config', edgewayConfig(port, env)];
    case 'edgeway-durable':
      // The same gateway and Node flags, plus an outbox for every topic the fan-in workloads
      // publish (sensors/<i>/temp): each message is appended, each QoS 1 PUBACK waits for the
      // group commit that contains it.
      return [
        process.execPath,
        ...shebangNodeFlags(built(env.edgewayEntry)),
        built(env.gatewayChildEntry),
        edgewayConfig(port, env),
        'sensors/#',
      ];
    case 'mosquitto': {
      const file = path.join(env.tmpDir, `mosquitto-${port}.conf`);
      // Limits spelled out at their documented defaults so the comparison is
      // against stock mosquitto even if a system-wide config changes them.
      writeFileSync(
        file,
        [
          `listener ${port} ${HOST}`,
          'allow_anonymous true',
          'persistence false',
          'max_inflight_messages 20',
          'max_queued_messages 1000',
          'log_dest stderr',
          'log_type error',
          'log_type warning',
          'connection_messages false',
          ...(env.mosquittoNodelay ? ['set_tcp_nodelay true'] : []),
          '',
        ].join('\n'),
      );
      return [env.mosquittoBin, '-c', file];
    }
    case 'aedes':
      return [
        process.execPath,
        path.join(env.binDir, 'aedes-server.js'),
        ...['--port', String(port), '--host', HOST, '--aedes', env.aedesEntry],
      ];
  }
}

/**
 * Start a broker and resolve once it is ready: either it prints a line
 * containing "listening" (edgeway, our aedes wrapper) or its TCP port accepts
 * a connection (mosquitto logs nothing at our log level). Rejects on early
 * exit or after env.readyTimeoutMs.
 */
export async function startBroker(name: BrokerName, env: BrokerEnv): Promise<RunningBroker> {
  const port = await freePort();
  const child = spawnTracked(commandFor(name, port, env), { cpu: env.cpu, nofile: env.nofile });
  const pid = child.pid!;
  let out = '';
  child.stdout?.setEncoding('utf8');
  let sawListening = false;
  child.stdout?.on('data', (s: string) => {
    out = (out + s).slice(-8192);
    if (/listening/i.test(s)) sawListening = true;
  });
  const errTail = captureTail(child.stderr);
  const output = (): string => `${out}${errTail()}`.trim();
  const broker: RunningBroker = { name, pid, port, child, output, stop: () => stopChild(child) };

  const deadline = Date.now() + env.readyTimeoutMs;
  // Bounded poll: every 50 ms until ready, exited, or the deadline.
  while (!sawListening && !(await probe(port))) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${name} exited during start-up (${child.exitCode ?? child.signalCode}):\n${output()}`);
    }
    if (Date.now() > deadline) {
      await broker.stop();
      throw new Error(`${name} not ready on ${HOST}:${port} after ${env.readyTimeoutMs} ms:\n${output()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return broker;
}

/**
 * The Node flags in the entry script's `#!/usr/bin/env -S node FLAGS` line, so the benchmark runs
 * edgeway exactly as the `edgeway` command and the systemd unit do.
 */
export function shebangNodeFlags(entry: string): string[] {
  const firstLine = readFileSync(entry, 'utf8').split('\n', 1)[0] ?? '';
  const match = /^#!\S*env -S node((?:\s+--\S+)*)\s*$/.exec(firstLine);
  return match?.[1] ? match[1].trim().split(/\s+/) : [];
}
