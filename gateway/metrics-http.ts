import http from 'node:http';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { ClusterStats, DownlinkStats } from '../adapters/redis';
import type { MetricsConfig } from '../config/schema';
import type { Gateway } from './app';
import { EdgewayError, errorMessage, type Logger } from './broker';

/**
 * `/metrics` (Prometheus text format 0.0.4) and `/healthz` (JSON) on their own HTTP listener
 * (issue 6), off unless the config has a `metrics` section.
 *
 * The exposition is written here rather than with prom-client: loading prom-client alone costs
 * 12.5 MB of RSS on Node 20 (measured: 41.5 → 54.0 MB, most of it @opentelemetry/api), a quarter
 * of the gateway's idle footprint on a Pi, for a format that is a few lines of text. Every value is
 * read at scrape time from the counters the gateway keeps anyway; nothing is stored per scrape.
 */

type Labels = Readonly<Record<string, string>>;
type Sample = readonly [Labels, number];

/** The keys of `S` whose values are numbers: what a counter can be read from. */
type NumericKey<S> = { [K in keyof S]: S[K] extends number ? K : never }[keyof S];
/** A counter read from a stats object: its key there, its name, its HELP. */
type CounterOf<S> = readonly [key: NumericKey<S>, name: string, help: string];

/**
 * The downlink's and cluster link's counters, named after their `$SYS/broker/downlink/…` and
 * `…/cluster/…` topics: a counter added to DownlinkStats or ClusterStats is one line here.
 */
const DOWNLINK_COUNTERS: readonly CounterOf<DownlinkStats>[] = [
  ['delivered', 'edgeway_downlink_delivered_total', 'Downlink stream entries published into the broker'],
  ['invalid', 'edgeway_downlink_invalid_total', 'Downlink stream entries skipped (no topic, a bad qos or retain, an invalid topic; each logged)'],
  ['expired', 'edgeway_downlink_expired_total', 'Downlink stream entries whose Message Expiry Interval ran out before they were read (not delivered)'],
  ['denied', 'edgeway_downlink_denied_total', 'Downlink stream entries the ACL refused (user redis; also in edgeway_authorization_denied_total)'],
  ['failures', 'edgeway_downlink_failures_total', 'Downlink stream reads that failed (retried)'],
];
const CLUSTER_COUNTERS: readonly CounterOf<ClusterStats>[] = [
  ['sent', 'edgeway_cluster_sent_total', 'Messages sent to the other gateways of the cluster'],
  ['received', 'edgeway_cluster_received_total', 'Messages received from the other gateways of the cluster'],
  ['dropped', 'edgeway_cluster_dropped_total', 'Messages not shared with the other gateways: Redis away or slow'],
  ['invalid', 'edgeway_cluster_invalid_total', 'Cluster messages not published here: not understood, invalid MQTT 5 properties, or refused by the broker'],
  ['expired', 'edgeway_cluster_expired_total', 'Cluster messages whose MQTT 5 Message Expiry ran out on the way or in the retained hash'],
];

/** Scrapes served at once at most; more wait in the kernel's backlog. */
const MAX_CONNECTIONS = 8;
const REQUEST_TIMEOUT_MS = 5000;
/** monitorEventLoopDelay's sampling period (ms). */
const LAG_RESOLUTION_MS = 20;

/**
 * Event-loop lag (s) from a monitorEventLoopDelay value (ns). Node records the whole time between
 * two of its sampling timers, so an idle loop reads as the resolution itself (20 ms: found by the
 * soak test, whose idle gateway showed a 20 ms median "lag"); the lag is what exceeds it.
 */
export function eventLoopLagSeconds(histogramNs: number): number {
  return Math.max(0, histogramNs - LAG_RESOLUTION_MS * 1e6) / 1e9;
}

export type HealthStatus = 'ok' | 'degraded' | 'unhealthy';

export interface Health {
  readonly status: HealthStatus;
  readonly checks: Readonly<Record<string, { readonly status: HealthStatus; readonly detail: string }>>;
}

/** What the endpoint reads: the running gateway's parts. */
export type MetricsSource = Pick<Gateway, 'broker' | 'storage' | 'redis' | 'serialStatus'>;

export class MetricsServer {
  private readonly server: http.Server;
  private readonly lag: IntervalHistogram;

  constructor(
    private readonly gateway: MetricsSource,
    private readonly config: MetricsConfig,
    private readonly logger: Logger,
  ) {
    this.lag = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
    this.server = http.createServer((req, res) => this.handle(req, res));
    this.server.maxConnections = MAX_CONNECTIONS;
    this.server.requestTimeout = REQUEST_TIMEOUT_MS;
    this.server.headersTimeout = REQUEST_TIMEOUT_MS;
    this.server.keepAliveTimeout = REQUEST_TIMEOUT_MS;
  }

  /** Rejects with EDGEWAY_ERR_LISTEN (or EDGEWAY_ERR_ADDR_IN_USE) when the port cannot be opened. */
  async start(): Promise<void> {
    this.lag.enable();
    const { host, port } = this.config;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        const code = err.code === 'EADDRINUSE' ? 'EDGEWAY_ERR_ADDR_IN_USE' : 'EDGEWAY_ERR_LISTEN';
        reject(new EdgewayError(code, `metrics: cannot listen on ${host}:${port}: ${err.code === 'EADDRINUSE' ? 'address already in use' : errorMessage(err)}`));
      };
      this.server.once('error', onError);
      this.server.listen({ host, port }, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
    this.server.on('error', (err) => this.logger.warn('metrics: server error', { error: errorMessage(err) }));
    this.logger.info('metrics listening', { address: host, port: this.port, paths: '/metrics,/healthz' });
  }

  get port(): number {
    const address = this.server.address();
    return typeof address === 'object' && address !== null ? address.port : this.config.port;
  }

  async stop(): Promise<void> {
    this.lag.disable();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics' && path !== '/healthz') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: /metrics or /healthz\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    try {
      if (path === '/metrics') {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(req.method === 'HEAD' ? undefined : this.exposition());
      } else {
        const health = this.health();
        res.writeHead(health.status === 'unhealthy' ? 503 : 200, { 'content-type': 'application/json' }).end(req.method === 'HEAD' ? undefined : `${JSON.stringify(health)}\n`);
      }
    } catch (err) {
      this.logger.error('metrics: scrape failed', { path, error: errorMessage(err) });
      res.writeHead(500, { 'content-type': 'text/plain' }).end('internal error\n');
    }
  }

  /** The whole gateway as Prometheus metrics, read now. */
  exposition(): string {
    const out = new Exposition();
    const g = this.gateway;
    const b = g.broker;
    const m = b.metrics;
    out.gauge('edgeway_clients_connected', 'MQTT clients connected now', b.clients.size);
    out.gauge('edgeway_sessions', 'Sessions kept (connected and persistent disconnected ones)', b.sessions.size);
    out.counter('edgeway_connections_accepted_total', 'Connections accepted', m.connectionsAccepted);
    out.counter('edgeway_packets_received_total', 'MQTT packets received', m.packetsReceived);
    out.counter('edgeway_packets_sent_total', 'MQTT packets sent', m.packetsSent);
    out.counter('edgeway_bytes_received_total', 'Bytes received from MQTT clients', m.bytesReceived);
    out.counter('edgeway_bytes_sent_total', 'Bytes sent to MQTT clients', m.bytesSent);
    out.counter('edgeway_messages_received_total', 'PUBLISH messages received', m.publishReceived);
    out.counter('edgeway_messages_sent_total', 'PUBLISH messages sent', m.publishSent);
    out.counter('edgeway_messages_dropped_total', 'Messages not delivered to a subscriber because of a limit', m.publishDropped);
    out.counter('edgeway_messages_expired_total', 'MQTT 5 messages not sent from a queue or the retained store because they expired', m.publishExpired);
    out.counter('edgeway_authorization_denied_total', 'Refused by the ACL, by check: publish (messages, wills), subscribe (filters), read (deliveries)', Object.entries(m.denied).map(([check, n]) => [{ check }, n] as const));
    out.counter('edgeway_limit_hits_total', 'Times a limit was hit, by limit', Object.entries(m.limitHits).map(([limit, n]) => [{ limit }, n] as const));
    out.counter('edgeway_internal_errors_total', 'Connections closed because handling one of their packets failed (a bug: please report it with the log line)', m.handlerErrors);
    out.counter('edgeway_tls_handshake_failures_total', 'Failed TLS handshakes on mqtts and wss listeners (and client certificates without the CN useIdentityAsUsername needs)', m.tlsHandshakeFailures);
    out.counter('edgeway_websocket_refused_total', 'HTTP requests refused by ws and wss listeners (another path, no upgrade, bad or slow request)', m.webSocketRefused);
    out.gauge('edgeway_tracked_addresses', 'Source addresses remembered (limits.perAddress.maxTracked), by table', [
      [{ table: 'connections' }, b.addressLimits.tracked],
      [{ table: 'logins' }, b.loginBackoff.tracked],
    ]);
    out.gauge('edgeway_retained_messages', 'Retained messages kept', b.retained.size);
    out.gauge('edgeway_queued_bytes', 'Bytes of the QoS 1/2 messages waiting in all session queues: payloads plus 64 bytes each (limits.maxQueuedBytesTotal)', b.queueBudget.used);
    out.gauge('edgeway_outgoing_bytes', 'Bytes waiting to be sent on all client connections (limits.maxOutgoingBytesTotal)', b.outgoingBudget.used);
    out.gauge('edgeway_subscriptions', 'Subscriptions', b.subscriptions.size);

    const ports = g.serialStatus();
    out.gauge('edgeway_serial_port_up', 'Serial port open (1) or not (0)', ports.map((p) => [{ port: p.name }, p.state === 'online' ? 1 : 0] as const));
    out.counter('edgeway_serial_lines_read_total', 'Lines read from a serial port, dropped ones included', ports.map((p) => [{ port: p.name }, p.linesRead] as const));
    out.counter('edgeway_serial_lines_dropped_total', 'Lines dropped, by port and reason', ports.flatMap((p) => Object.entries(p.linesDropped).map(([reason, n]): Sample => [{ port: p.name, reason }, n as number])));
    out.counter('edgeway_serial_messages_published_total', 'Messages published from a serial port', ports.map((p) => [{ port: p.name }, p.messagesPublished] as const));
    out.counter('edgeway_serial_reconnects_total', 'Times a serial port came back after being lost or missing', ports.map((p) => [{ port: p.name }, p.reconnects] as const));

    const stored = g.storage;
    if (stored !== undefined) {
      const { storage, outbox } = stored;
      out.counter('edgeway_storage_commits_total', 'SQLite transactions committed', storage.counters.commits);
      out.counter('edgeway_storage_commits_failed_total', 'SQLite commits that failed (retried)', storage.counters.failedCommits);
      const lastHour = storage.diskWrites.lastHour;
      if (lastHour !== null) out.gauge('edgeway_storage_written_bytes_last_hour', 'Bytes the process wrote to storage over the last hour', lastHour);
      if (outbox !== undefined) {
        const s = outbox.stats();
        out.gauge('edgeway_outbox_messages', 'Messages waiting in the outbox', s.size);
        out.gauge('edgeway_outbox_bytes', 'Their bytes (payload, topic, source)', s.bytes);
        out.counter('edgeway_outbox_never_written_total', 'Messages the uplink delivered before their commit: never written to disk', s.neverWritten);
        out.counter('edgeway_outbox_dropped_total', 'Messages dropped at a bound of the outbox, by policy', [
          [{ policy: 'drop-oldest' }, s.droppedOldest],
          [{ policy: 'drop-new' }, s.droppedNew],
        ]);
      }
    }
    const redis = g.redis?.stats();
    if (redis !== undefined) {
      const { uplink, downlink, cluster } = redis;
      out.gauge('edgeway_uplink_state', 'Uplink state (1 for the current one)', (['disconnected', 'connected', 'draining'] as const).map((state) => [{ state }, uplink.state === state ? 1 : 0] as const));
      out.gauge('edgeway_uplink_backlog_messages', 'Messages not yet confirmed by Redis', uplink.backlog);
      out.gauge('edgeway_uplink_oldest_age_seconds', 'Age of the oldest of them', uplink.oldestAgeMs / 1000);
      out.counter('edgeway_uplink_delivered_total', 'Messages Redis confirmed', uplink.delivered);
      out.counter('edgeway_uplink_failures_total', 'Uplink batches that failed (retried)', uplink.failures);
      out.counter('edgeway_uplink_already_present_total', 'Of the messages Redis confirmed, those it already had (re-sent after a lost reply or a crash)', uplink.alreadyPresent);
      out.counter('edgeway_uplink_epoch_changes_total', 'Times the uplink moved to a new stream-id epoch: the stream had one of its ids with other content (database replaced or rolled back, two gateways with one id; each logged)', uplink.epochChanges);
      // Only when on: a missing series says "off", where a 0 would say "on, and nothing came".
      if (downlink !== undefined) out.countersOf(downlink, DOWNLINK_COUNTERS);
      if (cluster !== undefined) out.countersOf(cluster, CLUSTER_COUNTERS);
    }

    out.gauge('edgeway_eventloop_lag_seconds', 'Event-loop delay since the previous scrape', [
      [{ quantile: '0.5' }, eventLoopLagSeconds(this.lag.percentile(50))],
      [{ quantile: '0.99' }, eventLoopLagSeconds(this.lag.percentile(99))],
      [{ quantile: '1' }, eventLoopLagSeconds(this.lag.max)],
    ]);
    this.lag.reset();
    const mem = process.memoryUsage();
    out.gauge('process_resident_memory_bytes', 'Resident memory size in bytes', mem.rss);
    out.gauge('nodejs_heap_used_bytes', 'V8 heap used in bytes', mem.heapUsed);
    const cpu = process.cpuUsage();
    out.counter('process_cpu_seconds_total', 'User and system CPU time spent in seconds', (cpu.user + cpu.system) / 1e6);
    out.gauge('process_start_time_seconds', 'Start time of the process since the Unix epoch in seconds', Math.floor(b.startedAt / 1000));
    return out.text();
  }

  /**
   * Overall status: the worst of the checks. `unhealthy` (HTTP 503) when the storage cannot commit
   * or the uplink backlog is older than `health.maxBacklogAge`; `degraded` (200) when the gateway
   * runs without persistence, Redis is disconnected, or a serial port is not open.
   */
  health(): Health {
    const g = this.gateway;
    const checks: Record<string, { status: HealthStatus; detail: string }> = {};
    const stored = g.storage;
    checks.storage =
      stored === undefined
        ? { status: 'degraded', detail: 'running without persistence (the database could not be opened)' }
        : stored.storage.failing
          ? { status: 'unhealthy', detail: `commits failing (${stored.storage.counters.failedCommits} so far); changes kept in memory and retried` }
          : { status: 'ok', detail: `${stored.storage.counters.commits} commits` };
    // The downlink and cluster link are no checks of their own: they use the uplink's Redis, whose
    // loss this one reports, and their counters only say what happened since start (README).
    const uplink = g.redis?.stats().uplink;
    if (uplink !== undefined) {
      const maxAgeMs = this.config.health.maxBacklogAge * 1000;
      checks.uplink =
        uplink.oldestAgeMs > maxAgeMs
          ? { status: 'unhealthy', detail: `oldest message waiting ${Math.round(uplink.oldestAgeMs / 1000)} s (limit ${this.config.health.maxBacklogAge} s); ${uplink.backlog} waiting; ${uplink.state}` }
          : uplink.state === 'disconnected'
            ? { status: 'degraded', detail: `Redis disconnected${uplink.lastError === undefined ? '' : `: ${uplink.lastError}`}; ${uplink.backlog} waiting` }
            : { status: 'ok', detail: `${uplink.state}; ${uplink.backlog} waiting` };
    }
    for (const p of g.serialStatus()) {
      checks[`serial:${p.name}`] = p.state === 'online' ? { status: 'ok', detail: `online since ${new Date(p.since).toISOString()}` } : { status: 'degraded', detail: `${p.state}${p.lastError === null ? '' : `: ${p.lastError}`}` };
    }
    const rank: Record<HealthStatus, number> = { ok: 0, degraded: 1, unhealthy: 2 };
    const status = Object.values(checks).reduce<HealthStatus>((worst, c) => (rank[c.status] > rank[worst] ? c.status : worst), 'ok');
    return { status, checks };
  }
}

/** Prometheus text format: HELP and TYPE once per metric, then its samples. */
class Exposition {
  private out = '';

  counter(name: string, help: string, samples: number | readonly Sample[]): void {
    this.add(name, 'counter', help, samples);
  }

  gauge(name: string, help: string, samples: number | readonly Sample[]): void {
    this.add(name, 'gauge', help, samples);
  }

  /** One counter per entry of `table`, each read from `stats`. */
  countersOf<S>(stats: S, table: readonly CounterOf<S>[]): void {
    for (const [key, name, help] of table) this.counter(name, help, stats[key] as number);
  }

  text(): string {
    return this.out;
  }

  private add(name: string, type: 'counter' | 'gauge', help: string, samples: number | readonly Sample[]): void {
    this.out += `# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}\n# TYPE ${name} ${type}\n`;
    for (const [labels, value] of typeof samples === 'number' ? [[{}, samples] as const] : samples) this.out += `${name}${formatLabels(labels)} ${formatValue(value)}\n`;
  }
}

function formatLabels(labels: Labels): string {
  const entries = Object.entries(labels);
  if (entries.length === 0) return '';
  return `{${entries.map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',')}}`;
}

function formatValue(value: number): string {
  if (Number.isFinite(value)) return String(value);
  return Number.isNaN(value) ? 'NaN' : value > 0 ? '+Inf' : '-Inf';
}
