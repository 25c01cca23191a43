/**
 * Serial bridge latency: from a line written to a pty to an MQTT subscriber receiving it.
 *
 *   npm run build && node dist/scripts/serial-latency.js [--count 1000] [--format kv|json|raw] [--timeout 60]
 *
 * Starts socat (a pty pair), the real gateway (dist/gateway/main.js) as a child process with the
 * gateway end configured as a serial port, an mqtt.js subscriber, and plays the device on the
 * other end. One line at a time (ping-pong), so each sample is pure latency with no queueing:
 * t0 just before the device's write, t1 when the subscriber's 'message' event fires; both in this
 * process, on one monotonic clock. Bounded in count, per-line timeout and total time; socat and the
 * gateway are killed by PID at the end, also on failure.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { connectAsync, type MqttClient } from 'mqtt';
import { SerialPort } from 'serialport';
import { freePort } from './bench/brokers';
import { percentile } from './bench/stats';

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '1000' },
    format: { type: 'string', default: 'kv' },
    timeout: { type: 'string', default: '60' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help === true) {
  process.stdout.write('Usage: node dist/scripts/serial-latency.js [--count N] [--format kv|json|raw] [--timeout SECONDS]\n');
  process.exit(0);
}
const COUNT = Math.max(10, Math.min(100_000, Number(values.count)));
const FORMAT = values.format === 'json' || values.format === 'raw' ? values.format : 'kv';
const TOTAL_TIMEOUT_MS = Math.max(5, Number(values.timeout)) * 1000;
const LINE_TIMEOUT_MS = 2000;
const WARMUP = 50;

const MAIN = join(__dirname, '..', 'gateway', 'main.js');
const children: ChildProcess[] = [];
const dir = mkdtempSync(join(tmpdir(), 'edgeway-serial-latency-'));

function cleanup(): void {
  for (const child of children) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGTERM');
      } catch {
        // gone
      }
    }
  }
  rmSync(dir, { recursive: true, force: true });
}

async function until(predicate: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function lineFor(i: number): { line: string; topic: string; payload: string } {
  switch (FORMAT) {
    case 'json':
      return { line: `{"seq":${i},"temp":21.5}\n`, topic: 'sensors/lat/seq', payload: String(i) };
    case 'raw':
      return { line: `seq ${i}\n`, topic: 'sensors/lat', payload: `seq ${i}` };
    default:
      return { line: `seq=${i}\n`, topic: 'sensors/lat/seq', payload: String(i) };
  }
}

async function main(): Promise<void> {
  const started = Date.now();
  const gwPath = join(dir, 'gw');
  const devPath = join(dir, 'dev');
  const socat = spawn('socat', [`pty,raw,echo=0,link=${gwPath}`, `pty,raw,echo=0,link=${devPath}`], { stdio: 'ignore' });
  children.push(socat);
  await until(() => existsSync(gwPath) && existsSync(devPath), 5000, 'socat links');

  const port = await freePort();
  const config = join(dir, 'edgeway.yaml');
  writeFileSync(
    config,
    `listeners:\n  - protocol: mqtt\n    port: ${port}\nsys:\n  interval: 0\nlog:\n  level: warn\nstorage:\n  path: ${join(dir, 'edgeway.db')}\n` +
      `serial:\n  - name: lat\n    path: ${gwPath}\n    baudRate: 115200\n    format: ${FORMAT}\n    statusInterval: 0\n`,
  );
  // The flags of the gateway's shebang, so this measures what `edgeway` runs.
  const gateway = spawn(process.execPath, ['--max-semi-space-size=2', MAIN, '--config', config], { stdio: ['ignore', 'ignore', 'inherit'] });
  children.push(gateway);

  let client: MqttClient | undefined;
  for (let i = 0; client === undefined; i++) {
    try {
      client = await connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 2000 }, false);
    } catch (err) {
      if (i > 100) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  let online = false;
  let waiting: { topic: string; payload: string; resolve: (t: bigint) => void } | undefined;
  client.on('message', (topic, payload) => {
    const t1 = process.hrtime.bigint();
    if (topic === 'edgeway/serial/lat/status') online = payload.toString().includes('"state":"online"');
    if (waiting !== undefined && topic === waiting.topic && payload.toString() === waiting.payload) {
      const w = waiting;
      waiting = undefined;
      w.resolve(t1);
    }
  });
  // After the handler: the retained status arrives right after SUBACK.
  await client.subscribeAsync(['sensors/#', 'edgeway/serial/lat/status'], { qos: 0 });
  await until(() => online, 5000, 'the serial port to be online');

  const device = new SerialPort({ path: devPath, baudRate: 115200, autoOpen: false });
  await new Promise<void>((resolve, reject) => device.open((err) => (err ? reject(err) : resolve())));

  const samples: number[] = [];
  for (let i = 0; i < COUNT + WARMUP; i++) {
    if (Date.now() - started > TOTAL_TIMEOUT_MS) throw new Error(`total timeout after ${samples.length} samples`);
    const { line, topic, payload } = lineFor(i);
    const received = new Promise<bigint>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`line ${i} not received within ${LINE_TIMEOUT_MS} ms`)), LINE_TIMEOUT_MS);
      waiting = {
        topic,
        payload,
        resolve: (t) => {
          clearTimeout(timer);
          resolve(t);
        },
      };
    });
    const t0 = process.hrtime.bigint();
    device.write(line);
    const t1 = await received;
    if (i >= WARMUP) samples.push(Number(t1 - t0) / 1e6);
  }
  await new Promise<void>((resolve) => device.close(() => resolve()));
  await client.endAsync(true);

  samples.sort((a, b) => a - b);
  const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
  const fmt = (ms: number) => `${ms.toFixed(3)} ms`;
  process.stdout.write(
    `serial latency, pty write → MQTT subscriber (format ${FORMAT}, ${samples.length} lines one at a time after ${WARMUP} warm-up, node ${process.version}):\n` +
      `  p50 ${fmt(percentile(samples, 50))}  p90 ${fmt(percentile(samples, 90))}  p99 ${fmt(percentile(samples, 99))}  max ${fmt(samples[samples.length - 1] as number)}  mean ${fmt(mean)}  min ${fmt(samples[0] as number)}\n`,
  );
}

main().then(
  () => {
    cleanup();
    process.exit(0);
  },
  (err: unknown) => {
    process.stderr.write(`serial-latency: ${err instanceof Error ? err.message : String(err)}\n`);
    cleanup();
    process.exit(1);
  },
);
