/**
 * `/metrics` and `/healthz` of the real `edgeway` command (issue 6) while it runs with a serial
 * pty, storage and an uplink to a real redis-server: the exposition parsed by a Prometheus
 * text-format parser, the health status following Redis going away; and the downlink and cluster
 * counters of two gateways sharing one Redis after real traffic.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { waitFor } from '../helpers/broker';
import { startGatewayProcess } from '../helpers/gateway';
import { freePort, startProcess, waitForOutput } from '../helpers/processes';
import { plugIn } from '../helpers/pty';
import { RedisServer } from '../helpers/redis';
import { downlinkPositioned, gatewayClient, redisLines, startRedisGateway, stopGateway, waitForSubscribers } from '../helpers/redis-gateways';

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

/** A sample's value by name and labels, NaN when absent. */
type Read = (name: string, labels?: Record<string, string>) => number;

/** Scrapes `/metrics` (parsed) until `until` holds for it or 5 s passed; returns the last scrape. */
async function scrapeUntil(port: number, until: (value: Read) => boolean = () => true): Promise<{ value: Read; names: Set<string> }> {
  for (const deadline = Date.now() + 5000; ; await new Promise((r) => setTimeout(r, 50))) {
    const families = new Map(parsePrometheus((await get(port, '/metrics')).body).map((f) => [f.name, f]));
    const value: Read = (name, labels = {}) => {
      const sample = families.get(name)?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
      return sample?.value === undefined ? Number.NaN : Number(sample.value);
    };
    if (until(value) || Date.now() > deadline) return { value, names: new Set(families.keys()) };
  }
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
  t.equal(value('edgeway_downlink_delivered_total'), 0, 'downlink on (the default): its counters are there');
  t.notOk(families.has('edgeway_cluster_sent_total'), 'cluster mode off: no cluster series');
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

t.test('/metrics: uplink epoch, downlink and cluster counters after real traffic on two gateways sharing one Redis', async (t) => {
  const redis = await RedisServer.start(t);
  const r = redis.client();
  // A's uplink stream already written under a higher epoch: A continues under it (one epoch change).
  await r.xadd('edgeway:uplink:mx-a', '7-0', 'topic', 'seeded', 'payload', '');
  const [portA, portB, metricsA, metricsB] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const cluster = ['cluster:', '  enabled: true'];
  const a = await startRedisGateway(t, dir, { name: 'mx-a', port: portA, metricsPort: metricsA, redis: redisLines(redis.url, 'mx-a', cluster) });
  const b = await startRedisGateway(t, dir, { name: 'mx-b', port: portB, metricsPort: metricsB, redis: redisLines(redis.url, 'mx-b', ['downlink:', '  enabled: false', ...cluster]) });
  for (const [name, gw] of [['mx-a', a], ['mx-b', b]] as const) await waitForOutput(() => gw.stdout + gw.stderr, /redis: connected/, 10_000, `${name} connected to Redis`);
  await downlinkPositioned(a, 'mx-a');
  t.equal(await waitForSubscribers(r, 'edgeway:cluster', 2), 2, 'both gateways subscribed to the cluster channel');

  const idleB = await scrapeUntil(metricsB);
  t.equal(idleB.value('edgeway_cluster_sent_total'), 0, 'B: cluster counters there before any traffic, at 0');
  t.notOk([...idleB.names].some((n) => n.startsWith('edgeway_downlink_')), 'B: no downlink series, its downlink is off');

  // Cluster: one message published on A, two on B (different counts, so no counter can pass for another).
  const subA = await gatewayClient(t, portA, { clientId: 'mx-a-sub' });
  const subB = await gatewayClient(t, portB, { clientId: 'mx-b-sub' });
  const gotA: string[] = [];
  const gotB: string[] = [];
  subA.on('message', (topic, payload) => gotA.push(`${topic} ${payload.toString()}`));
  subB.on('message', (topic, payload) => gotB.push(`${topic} ${payload.toString()}`));
  await subA.subscribeAsync(['mx/#', 'cmd/#'], { qos: 1 });
  await subB.subscribeAsync('mx/#', { qos: 1 });
  await subA.publishAsync('mx/from-a', 'a', { qos: 1 });
  await subB.publishAsync('mx/from-b', 'b1', { qos: 1 });
  await subB.publishAsync('mx/from-b', 'b2', { qos: 1 });
  await waitFor(() => gotA.includes('mx/from-b b2') && gotB.includes('mx/from-a a'), 5000, 'the messages on the other gateway');
  let mA = await scrapeUntil(metricsA, (v) => v('edgeway_cluster_sent_total') === 1);
  let mB = await scrapeUntil(metricsB, (v) => v('edgeway_cluster_sent_total') === 2);
  for (const [name, m, sent, received] of [['A', mA, 1, 2], ['B', mB, 2, 1]] as const) {
    t.equal(m.value('edgeway_cluster_sent_total'), sent, `${name}: its own messages sent`);
    t.equal(m.value('edgeway_cluster_received_total'), received, `${name}: the other's messages received (its own echoes not counted)`);
    t.equal(m.value('edgeway_cluster_dropped_total'), 0, `${name}: nothing dropped`);
    t.equal(m.value('edgeway_cluster_expired_total'), 0, `${name}: nothing expired`);
  }

  // A frame no gateway understands: skipped and counted as invalid on both.
  await r.publish('edgeway:cluster', 'not a frame');
  const oneInvalid = (v: Read): boolean => v('edgeway_cluster_invalid_total') === 1;
  t.equal((await scrapeUntil(metricsA, oneInvalid)).value('edgeway_cluster_invalid_total'), 1, 'A: the bad frame counted as invalid');
  t.equal((await scrapeUntil(metricsB, oneInvalid)).value('edgeway_cluster_invalid_total'), 1, 'B: the bad frame counted as invalid');

  // Downlink on A: two valid entries are delivered, one without a topic is skipped, one expired.
  await r.xadd('edgeway:downlink:mx-a', '*', 'topic', 'cmd/valve', 'payload', 'open');
  await r.xadd('edgeway:downlink:mx-a', '*', 'payload', 'no topic');
  await r.xadd('edgeway:downlink:mx-a', '*', 'topic', 'cmd/valve', 'payload', 'stale', 'properties', '{"messageExpiryInterval":0}');
  await r.xadd('edgeway:downlink:mx-a', '*', 'topic', 'cmd/valve', 'payload', 'close');
  await waitFor(() => gotA.includes('cmd/valve close'), 5000, 'the downlink commands at the subscriber');
  mA = await scrapeUntil(metricsA, (v) => v('edgeway_downlink_invalid_total') === 1);
  t.equal(mA.value('edgeway_downlink_delivered_total'), 2, 'A: two downlink entries delivered');
  t.equal(mA.value('edgeway_downlink_invalid_total'), 1, 'A: the entry without a topic counted as invalid');
  t.equal(mA.value('edgeway_downlink_expired_total'), 1, 'A: the entry with no expiry left counted as expired, not delivered');
  t.notOk(gotA.includes('cmd/valve stale'), 'A: and not received');
  t.equal(mA.value('edgeway_downlink_failures_total'), 0, 'A: no failed downlink read');
  t.equal(mA.value('edgeway_cluster_sent_total'), 1, 'A: the downlink command was not shared with the cluster');

  // Uplink (sensors/#): A moved to the seeded epoch once, then wrote under it; nothing re-sent.
  await subA.publishAsync('sensors/mx', 'up 1', { qos: 1 });
  await subA.publishAsync('sensors/mx', 'up 2', { qos: 1 });
  const upA = await scrapeUntil(metricsA, (v) => v('edgeway_uplink_delivered_total') === 2 && v('edgeway_cluster_sent_total') === 3);
  t.equal(upA.value('edgeway_uplink_delivered_total'), 2, 'A: the sensors messages went up');
  t.equal(upA.value('edgeway_uplink_epoch_changes_total'), 1, 'A: one epoch change (the stream was ahead)');
  t.equal(upA.value('edgeway_uplink_already_present_total'), 0, 'A: nothing Redis already had');
  t.same((await r.xrange('edgeway:uplink:mx-a', '-', '+')).map(([id]) => id.split('-')[0]), ['7', '7', '7'], 'A wrote under the seeded epoch');
  t.equal(upA.value('edgeway_cluster_sent_total'), 3, 'A: the sensors messages were shared too');
  mB = await scrapeUntil(metricsB);
  t.equal(mB.value('edgeway_uplink_epoch_changes_total'), 0, 'B: no epoch change');

  // Redis away: a message published on A is not shared (dropped), the blocked downlink read fails.
  await redis.stop();
  await subA.publishAsync('mx/while-away', 'lost to the cluster', { qos: 1 });
  mA = await scrapeUntil(metricsA, (v) => v('edgeway_cluster_dropped_total') === 1 && v('edgeway_downlink_failures_total') >= 1);
  t.equal(mA.value('edgeway_cluster_dropped_total'), 1, 'A: the message published while Redis was away counted as dropped');
  t.ok(mA.value('edgeway_downlink_failures_total') >= 1, `A: the downlink read lost with the connection counted as a failure (${mA.value('edgeway_downlink_failures_total')})`);
  t.equal(mA.value('edgeway_cluster_sent_total'), 3, 'A: and not as sent');

  await stopGateway(t, a, 'mx-a');
  await stopGateway(t, b, 'mx-b');
});
