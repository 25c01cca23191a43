/**
 * Soak (issue 9 part 3): moderate mixed load for a long time, watching the gateway's resources.
 *
 *   npm run build && node dist/scripts/soak.js [--minutes 30] [--out ./soak-out] [--interval 5]
 *        [--connections 1000] [--publish-interval 5]
 *
 * The real gateway (dist/gateway/main.js, storage on, metrics on) with 1,000 MQTT connections
 * (scripts/soak/load.ts: 60 % publishers sending one message every --publish-interval seconds,
 * 40 % subscribers; QoS 0 and 1; MQTT 3.1.1 and 5), a serial sensor on a socat pty (10 readings/s),
 * and the uplink of `sensors/#` to a real redis-server. Every --interval seconds it samples the
 * gateway's RSS (/proc/<pid>/status), open descriptors (/proc/<pid>/fd), and from /metrics the
 * event-loop lag (since the previous scrape), outbox depth, uplink backlog and connected clients,
 * into <out>/soak.csv (written as it goes). At the end: <out>/soak.svg (a chart of the samples),
 * <out>/summary.json, <out>/gateway.log, and a summary on stdout.
 *
 * Exit 0: RSS and descriptors level off (the rule and its limits: scripts/soak/growth.ts); 1: one
 * of them grows without bound; 2: the run itself failed (the gateway exited, a process would not
 * start). Bounded in time; every process it starts is killed by PID at the end, also on Ctrl-C;
 * its temp folder is removed.
 */
import { appendFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import Redis from 'ioredis';
import { startGatewayProcess } from '../test/helpers/gateway';
import { freePort } from '../test/helpers/processes';
import { Device, PtyPair } from '../test/helpers/pty';
import { RedisServer } from '../test/helpers/redis';
import { rssKb } from './bench/proc';
import { median } from './bench/stats';
import { Sensor } from './chaos/sources';
import { runScript, type Cleanup } from './lib/cleanup';
import { scrapeMetrics } from './lib/metrics';
import { renderChart } from './soak/chart';
import { DEFAULT_GROWTH_LIMITS, judgeGrowth } from './soak/growth';
import { SoakLoad } from './soak/load';

const USAGE = `usage: node dist/scripts/soak.js [flags]
  --minutes M            how long the load runs (fractions allowed)          [30]
  --out DIR              where soak.csv, soak.svg, summary.json go            [./soak-out]
  --interval S           seconds between samples                             [5]
  --connections N        MQTT connections (60 % publishers, 40 % subscribers) [1000]
  --publish-interval S   seconds between two messages of one publisher       [5]
`;

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '30' },
    out: { type: 'string', default: './soak-out' },
    interval: { type: 'string', default: '5' },
    connections: { type: 'string', default: '1000' },
    'publish-interval': { type: 'string', default: '5' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help === true) {
  process.stdout.write(USAGE);
  process.exit(0);
}

function number(name: string, text: string | undefined, min: number, max: number): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n < min || n > max) {
    process.stderr.write(`--${name} must be a number from ${min} to ${max}, got ${String(text)}\n${USAGE}`);
    process.exit(2);
  }
  return n;
}

const MINUTES = number('minutes', values.minutes, 0.25, 7 * 24 * 60);
const INTERVAL_S = number('interval', values.interval, 0.5, 600);
const CONNECTIONS = Math.round(number('connections', values.connections, 1, 10_000));
const PUBLISH_INTERVAL_S = number('publish-interval', values['publish-interval'], 0.1, 3600);
const OUT = resolve(values.out as string);
const SERIAL_INTERVAL_MS = 100;

const CSV_COLUMNS = ['t_s', 'rss_mb', 'fds', 'lag_p50_ms', 'lag_p99_ms', 'lag_max_ms', 'outbox_messages', 'uplink_backlog', 'clients', 'heap_used_mb', 'published', 'received'] as const;
type Sample = Record<(typeof CSV_COLUMNS)[number], number>;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function openDescriptors(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return Number.NaN;
  }
}

/**
 * Entries ever added to the stream (XINFO STREAM `entries-added`, Redis ≥ 7): the stream itself is
 * trimmed to uplink.maxLen, so its length stops telling how much went up.
 */
async function streamEntriesAdded(port: number, stream: string): Promise<number> {
  const redis = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 1 });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    const info = (await redis.call('XINFO', 'STREAM', stream)) as unknown[];
    const at = info.indexOf('entries-added');
    return at < 0 ? Number.NaN : Number(info[at + 1]);
  } catch {
    return Number.NaN;
  } finally {
    redis.disconnect();
  }
}

async function main(cleanup: Cleanup): Promise<number> {
  const t0 = Date.now();
  const lifetimeMs = (MINUTES * 60 + 600) * 1000;
  mkdirSync(OUT, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), 'edgeway-soak-'));
  cleanup.teardown(() => rmSync(dir, { recursive: true, force: true }));

  // Redis without persistence: the soak watches the gateway, not Redis' disk.
  const redis = await RedisServer.start(cleanup, { appendonly: false, lifetimeMs });
  const pty = new PtyPair(dir, 'soak');
  const sensor = new Sensor('soak', pty, SERIAL_INTERVAL_MS, (path) => Device.open(path));
  cleanup.teardown(() => sensor.unplug());
  await sensor.plug();

  const port = await freePort();
  const metricsPort = await freePort();
  const gatewayId = 'soak';
  const config = {
    listeners: [{ protocol: 'mqtt', host: '127.0.0.1', port }],
    log: { level: 'info' },
    storage: { path: join(dir, 'data', 'edgeway.db') },
    serial: [{ name: 'soak', path: pty.gatewayPath, format: 'json', statusInterval: 30 }],
    // The stream is trimmed so a long soak does not grow Redis' memory without bound.
    redis: { url: redis.url, gatewayId, uplink: { topics: ['sensors/#'], maxLen: 200_000 } },
    metrics: { host: '127.0.0.1', port: metricsPort },
  };
  const configPath = join(dir, 'edgeway.yaml');
  writeFileSync(configPath, JSON.stringify(config, null, 2));
  const gateway = await startGatewayProcess(cleanup, configPath, { cwd: dir, lifetimeMs });
  const pid = gateway.child.pid as number;
  const gatewayExited = (): boolean => gateway.child.exitCode !== null || gateway.child.signalCode !== null;
  cleanup.teardown(() => writeFileSync(join(OUT, 'gateway.log'), gateway.stdout + gateway.stderr));

  const load = new SoakLoad(port, CONNECTIONS, PUBLISH_INTERVAL_S * 1000);
  cleanup.teardown(() => load.stop());
  await load.start();
  sensor.start();
  process.stdout.write(`soak: ${CONNECTIONS} connections, serial every ${SERIAL_INTERVAL_MS} ms, uplink to redis :${redis.port}; gateway pid ${pid}; ${MINUTES} min, a sample every ${INTERVAL_S} s into ${OUT}\n`);

  const csvPath = join(OUT, 'soak.csv');
  writeFileSync(csvPath, `${CSV_COLUMNS.join(',')}\n`);
  const samples: Sample[] = [];
  const loadStart = Date.now();
  const end = loadStart + MINUTES * 60_000;
  let nextProgress = loadStart + 60_000;
  for (let next = loadStart + INTERVAL_S * 1000; next <= end; next += INTERVAL_S * 1000) {
    await sleep(Math.max(0, next - Date.now()));
    if (gatewayExited()) {
      process.stderr.write(`soak: the gateway exited (${gateway.child.exitCode ?? gateway.child.signalCode}) after ${((Date.now() - loadStart) / 60_000).toFixed(1)} min:\n${(gateway.stdout + gateway.stderr).split('\n').slice(-40).join('\n')}\n`);
      return 2;
    }
    const m = await scrapeMetrics(metricsPort).catch(() => new Map<string, number>());
    const metric = (name: string, scale = 1): number => (m.get(name) ?? Number.NaN) * scale;
    const sample: Sample = {
      t_s: (Date.now() - loadStart) / 1000,
      rss_mb: rssKb(pid) / 1024,
      fds: openDescriptors(pid),
      lag_p50_ms: metric('edgeway_eventloop_lag_seconds{quantile="0.5"}', 1000),
      lag_p99_ms: metric('edgeway_eventloop_lag_seconds{quantile="0.99"}', 1000),
      lag_max_ms: metric('edgeway_eventloop_lag_seconds{quantile="1"}', 1000),
      outbox_messages: metric('edgeway_outbox_messages'),
      uplink_backlog: metric('edgeway_uplink_backlog_messages'),
      clients: metric('edgeway_clients_connected'),
      heap_used_mb: metric('nodejs_heap_used_bytes', 1 / 1024 ** 2),
      published: load.counters.published,
      received: load.counters.received,
    };
    samples.push(sample);
    appendFileSync(csvPath, `${CSV_COLUMNS.map((c) => (Number.isFinite(sample[c]) ? Number(sample[c].toFixed(3)) : '')).join(',')}\n`);
    if (Date.now() >= nextProgress) {
      nextProgress += 60_000;
      process.stdout.write(`  ${(sample.t_s / 60).toFixed(1)} min: RSS ${sample.rss_mb.toFixed(1)} MB, ${sample.fds} fds, lag p99 ${sample.lag_p99_ms.toFixed(1)} ms, outbox ${sample.outbox_messages}, clients ${sample.clients}, published ${sample.published}, received ${sample.received}\n`);
    }
  }
  load.stop();
  await sensor.stop();

  const verdict = judgeGrowth(samples.map((s) => ({ t: s.t_s, rssMb: s.rss_mb, fds: s.fds })));
  const times = samples.map((s) => s.t_s);
  const svg = renderChart(
    `edgeway soak: ${CONNECTIONS} connections, ${MINUTES} min`,
    times,
    [
      { title: 'Resident memory', unit: 'MB', values: samples.map((s) => s.rss_mb) },
      { title: 'Open file descriptors', unit: 'count', values: samples.map((s) => s.fds) },
      { title: 'Event-loop lag p99 per sample', unit: 'ms', values: samples.map((s) => s.lag_p99_ms) },
      { title: 'Outbox depth', unit: 'messages', values: samples.map((s) => s.outbox_messages) },
    ],
    verdict.settledFrom,
  );
  writeFileSync(join(OUT, 'soak.svg'), svg);

  const finite = (xs: number[]): number[] => xs.filter(Number.isFinite);
  const lagP99 = finite(samples.map((s) => s.lag_p99_ms));
  const rss = finite(samples.map((s) => s.rss_mb));
  const summary = {
    minutes: MINUTES,
    connections: CONNECTIONS,
    samples: samples.length,
    rssMb: { first: rss[0], max: Math.max(...rss), last: rss.at(-1), settledStart: verdict.rssStartMb, settledEnd: verdict.rssEndMb, slopeSecondHalfMbPerHour: verdict.rssSlopeMbPerHour },
    fds: { first: samples[0]?.fds, max: Math.max(...finite(samples.map((s) => s.fds))), last: samples.at(-1)?.fds, settledStart: verdict.fdStart, settledEnd: verdict.fdEnd },
    eventLoopLagP99Ms: { median: median(lagP99), max: Math.max(...lagP99) },
    eventLoopLagMaxMs: Math.max(...finite(samples.map((s) => s.lag_max_ms))),
    outboxMax: Math.max(...finite(samples.map((s) => s.outbox_messages))),
    uplinkBacklogMax: Math.max(...finite(samples.map((s) => s.uplink_backlog))),
    clientsMin: Math.min(...finite(samples.map((s) => s.clients))),
    load: { ...load.counters, serialReadings: sensor.records.length },
    streamEntriesAdded: await streamEntriesAdded(redis.port, `edgeway:uplink:${gatewayId}`),
    limits: DEFAULT_GROWTH_LIMITS,
    findings: verdict.findings,
    pass: verdict.findings.length === 0,
  };
  writeFileSync(join(OUT, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
  const mb = (v: number | undefined): string => (v === undefined ? '—' : v.toFixed(1));
  process.stdout.write(
    [
      `soak summary (${MINUTES} min, ${samples.length} samples, ${((Date.now() - t0) / 60_000).toFixed(1)} min in all):`,
      `  RSS MB: first ${mb(summary.rssMb.first)}, max ${mb(summary.rssMb.max)}, last ${mb(summary.rssMb.last)}; settled ${mb(verdict.rssStartMb)} → ${mb(verdict.rssEndMb)}; second-half slope ${verdict.rssSlopeMbPerHour.toFixed(1)} MB/h (limits ${DEFAULT_GROWTH_LIMITS.rssSlopeMbPerHour} MB/h and +${DEFAULT_GROWTH_LIMITS.rssRiseMb} MB)`,
      `  descriptors: first ${summary.fds.first}, max ${summary.fds.max}, last ${summary.fds.last}; settled ${verdict.fdStart} → ${verdict.fdEnd} (limit +${DEFAULT_GROWTH_LIMITS.fdRise})`,
      `  event-loop lag p99 per sample: median ${summary.eventLoopLagP99Ms.median.toFixed(1)} ms, max ${summary.eventLoopLagP99Ms.max.toFixed(1)} ms; worst single delay ${summary.eventLoopLagMaxMs.toFixed(1)} ms`,
      `  outbox max ${summary.outboxMax}, uplink backlog max ${summary.uplinkBacklogMax}, clients connected min ${summary.clientsMin}`,
      `  load: published ${summary.load.published}, QoS 1 acknowledged ${summary.load.acked}, received ${summary.load.received}, dropped connections ${summary.load.dropped} (reopened ${summary.load.reopened}), serial readings ${summary.load.serialReadings}; entries added to the uplink stream ${summary.streamEntriesAdded} (published + serial: ${summary.load.published + summary.load.serialReadings})`,
      `  files: ${csvPath}, ${join(OUT, 'soak.svg')}, ${join(OUT, 'summary.json')}, ${join(OUT, 'gateway.log')}`,
      summary.pass ? 'PASS: RSS and descriptors level off' : `FAIL:\n${verdict.findings.map((f) => `  ${f}`).join('\n')}`,
      '',
    ].join('\n'),
  );
  return summary.pass ? 0 : 1;
}

runScript('soak', main);
