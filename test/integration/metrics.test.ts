/**
 * `/metrics` and `/healthz` of the real `edgeway` command (issue 6) while it runs with a serial
 * pty, storage and an uplink to a real redis-server: the exposition parsed by a Prometheus
 * text-format parser, the health status following Redis going away.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { startGatewayProcess } from '../helpers/gateway';
import { freePort, startProcess } from '../helpers/processes';
import { plugIn } from '../helpers/pty';
import { RedisServer } from '../helpers/redis';

// The package has no type declarations: its documented result shape.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const parsePrometheus = require('parse-prometheus-text-format') as (text: string) => {
  name: string;
  help: string;
  type: string;
  metrics: { value?: string; labels?: Record<string, string> }[];
}[];

const dir = mkdtempSync(join(tmpdir(), 'edgeway-metrics-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

async function get(port: number, path: string, method = 'GET'): Promise<{ status: number; type: string; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method });
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: await res.text() };
}

t.test('/metrics and /healthz with serial, storage and a live uplink; unhealthy once the backlog is too old', async (t) => {
  const redis = await RedisServer.start(t);
  const { pty, device } = await plugIn(t, dir, 'shed');
  const [mqttPort, metricsPort] = [await freePort(), await freePort()];
  const config = join(dir, 'edgeway.yaml');
  writeFileSync(
    config,
    [
      `listeners:\n  - protocol: mqtt\n    host: 127.0.0.1\n    port: ${mqttPort}`,
      `storage:\n  path: ${join(dir, 'db', 'edgeway.db')}`,
      `serial:\n  - name: shed\n    path: ${pty.gatewayPath}\n    baudRate: 115200\n    format: json`,
      `redis:\n  url: ${redis.url}\n  gatewayId: gw\n  reconnect: { initialDelay: 100, maxDelay: 200 }`,
      `metrics:\n  host: 127.0.0.1\n  port: ${metricsPort}\n  health:\n    maxBacklogAge: 1`,
      '',
    ].join('\n'),
  );
  const gw = await startGatewayProcess(t, config, { cwd: dir });
  t.match(gw.stdout, new RegExp(`metrics listening .*port=${metricsPort}`), 'the metrics line');

  await device.write('{"temp":21.5}\n');
  const pub = startProcess(t, 'mosquitto_pub', ['-h', '127.0.0.1', '-p', String(mqttPort), '-q', '1', '-t', 'sensors/x/y', '-m', 'hello'], 10_000);
  t.equal((await pub.exited).code, 0);
  const client = redis.client();
  const deadline = Date.now() + 10_000;
  while ((await client.xlen('edgeway:uplink:gw')) < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  t.equal(await client.xlen('edgeway:uplink:gw'), 2, 'the serial reading and the MQTT message went up');

  // Redis confirmed both; their deletion from the outbox rides on the next group commit.
  let metrics = await get(metricsPort, '/metrics');
  for (const until = Date.now() + 5000; !/^edgeway_outbox_messages 0$/m.test(metrics.body) && Date.now() < until; ) {
    await new Promise((r) => setTimeout(r, 50));
    metrics = await get(metricsPort, '/metrics');
  }
  t.equal(metrics.status, 200);
  t.match(metrics.type, /^text\/plain; version=0\.0\.4/);
  for (const line of metrics.body.trimEnd().split('\n')) {
    t.ok(/^# (HELP|TYPE) [a-z_]+ .+$|^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? (-?[0-9.e+-]+|NaN|[+-]Inf)$/.test(line), `exposition grammar: ${line}`);
  }
  const families = new Map(parsePrometheus(metrics.body).map((f) => [f.name, f]));
  const value = (name: string, labels: Record<string, string> = {}): number => {
    const sample = families.get(name)?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
    return sample?.value === undefined ? Number.NaN : Number(sample.value);
  };
  t.equal(families.get('edgeway_messages_received_total')?.type, 'COUNTER', 'counters typed as counters');
  t.equal(families.get('edgeway_clients_connected')?.type, 'GAUGE', 'gauges as gauges');
  t.ok(value('edgeway_messages_received_total') >= 1, 'messages in');
  t.ok(value('edgeway_bytes_received_total') > 0, 'bytes in');
  t.equal(value('edgeway_serial_port_up', { port: 'shed' }), 1, 'the serial port is up');
  t.equal(value('edgeway_serial_messages_published_total', { port: 'shed' }), 1, 'one reading published');
  t.equal(value('edgeway_serial_lines_dropped_total', { port: 'shed', reason: 'parse' }), 0, 'drops by reason');
  t.ok(value('edgeway_limit_hits_total', { limit: 'maxConnections' }) >= 0, 'limit hits by limit');
  t.ok(value('edgeway_storage_commits_total') >= 1, 'storage commits');
  t.equal(value('edgeway_uplink_delivered_total'), 2, 'uplink delivered');
  t.equal(value('edgeway_uplink_state', { state: 'disconnected' }), 0, 'uplink not disconnected');
  t.equal(value('edgeway_outbox_messages'), 0, 'outbox empty');
  t.ok(value('process_resident_memory_bytes') > 10e6, 'RSS');
  t.ok(value('edgeway_eventloop_lag_seconds', { quantile: '0.99' }) >= 0, 'event-loop lag');

  const healthy = await get(metricsPort, '/healthz');
  t.equal(healthy.status, 200);
  const h1 = JSON.parse(healthy.body) as { status: string; checks: Record<string, { status: string }> };
  t.equal(h1.status, 'ok', healthy.body);
  t.same(Object.keys(h1.checks).sort(), ['serial:shed', 'storage', 'uplink']);

  // Redis goes away and a message waits: degraded at once, unhealthy once older than 1 s.
  await redis.stop();
  const pub2 = startProcess(t, 'mosquitto_pub', ['-h', '127.0.0.1', '-p', String(mqttPort), '-q', '1', '-t', 'sensors/x/y', '-m', 'waiting'], 10_000);
  t.equal((await pub2.exited).code, 0);
  let degraded: { status: string; checks: Record<string, { status: string; detail: string }> } | undefined;
  for (const until = Date.now() + 5000; Date.now() < until && degraded?.checks.uplink?.status !== 'degraded'; await new Promise((r) => setTimeout(r, 50))) {
    degraded = JSON.parse((await get(metricsPort, '/healthz')).body) as typeof degraded;
  }
  t.equal(degraded?.checks.uplink?.status, 'degraded', `Redis down: ${degraded?.checks.uplink?.detail}`);
  t.equal(degraded?.status, 'degraded', 'overall degraded (HTTP 200)');
  await new Promise((r) => setTimeout(r, 1500));
  const unhealthy = await get(metricsPort, '/healthz');
  t.equal(unhealthy.status, 503, 'HTTP 503 when unhealthy');
  t.match(JSON.parse(unhealthy.body), { status: 'unhealthy', checks: { uplink: { status: 'unhealthy', detail: /oldest message waiting/ } } });
  const later = new Map(parsePrometheus((await get(metricsPort, '/metrics')).body).map((f) => [f.name, f]));
  t.equal(later.get('edgeway_outbox_messages')?.metrics[0]?.value, '1', 'the waiting message is counted');

  t.equal((await get(metricsPort, '/nope')).status, 404);
  t.equal((await get(metricsPort, '/metrics', 'POST')).status, 405);
  if (gw.child.pid !== undefined) process.kill(gw.child.pid, 'SIGTERM');
  t.equal((await gw.exited).code, 0, 'SIGTERM exits 0 with the metrics listener open');
});
