import type { Broker } from './broker';

/**
 * $SYS topics with Mosquitto's names, published retained every `interval` seconds so that a
 * `mosquitto_sub -t '$SYS/#'` sees current values at once. Values that have not changed since the
 * last publication are not published again (as Mosquitto does), except the uptime.
 */
export class SysPublisher {
  private timer: NodeJS.Timeout | null = null;
  private readonly last = new Map<string, string>();
  /** Values of adapters (storage, outbox…), by topic under `$SYS/broker/`. */
  private readonly extra: (() => Iterable<readonly [string, string]>)[] = [];

  constructor(
    private readonly broker: Broker,
    private readonly intervalSeconds: number,
    private readonly version: string,
  ) {}

  start(): void {
    if (this.timer !== null || this.intervalSeconds === 0) return;
    this.publishNow();
    this.timer = setInterval(() => this.publishNow(), this.intervalSeconds * 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** Adds values published with the broker's own; `read` returns [topic below $SYS/broker/, value] pairs. */
  addValues(read: () => Iterable<readonly [string, string]>): void {
    this.extra.push(read);
  }

  /** The current $SYS values, by topic. */
  snapshot(): Map<string, string> {
    const b = this.broker;
    const m = b.metrics;
    const connected = b.clients.size;
    const total = b.sessions.size;
    const mem = process.memoryUsage();
    const values = new Map<string, string>([
      ['$SYS/broker/version', `edgeway ${this.version}`],
      ['$SYS/broker/uptime', `${Math.floor((Date.now() - b.startedAt) / 1000)} seconds`],
      ['$SYS/broker/clients/connected', String(connected)],
      ['$SYS/broker/clients/active', String(connected)],
      ['$SYS/broker/clients/disconnected', String(total - connected)],
      ['$SYS/broker/clients/inactive', String(total - connected)],
      ['$SYS/broker/clients/total', String(total)],
      ['$SYS/broker/clients/maximum', String(m.clientsMaximum)],
      ['$SYS/broker/messages/received', String(m.packetsReceived)],
      ['$SYS/broker/messages/sent', String(m.packetsSent)],
      ['$SYS/broker/publish/messages/received', String(m.publishReceived)],
      ['$SYS/broker/publish/messages/sent', String(m.publishSent)],
      ['$SYS/broker/publish/messages/dropped', String(m.publishDropped)],
      ['$SYS/broker/publish/denied', String(m.denied.publish)],
      ['$SYS/broker/subscriptions/denied', String(m.denied.subscribe)],
      ['$SYS/broker/publish/messages/not readable', String(m.denied.read)],
      ['$SYS/broker/bytes/received', String(m.bytesReceived)],
      ['$SYS/broker/bytes/sent', String(m.bytesSent)],
      // Now, against limits.maxQueuedBytesTotal and limits.maxOutgoingBytesTotal (as /metrics edgeway_queued_bytes, edgeway_outgoing_bytes).
      ['$SYS/broker/bytes/queued', String(b.queueBudget.used)],
      ['$SYS/broker/bytes/outgoing', String(b.outgoingBudget.used)],
      ['$SYS/broker/retained messages/count', String(b.retained.size)],
      ['$SYS/broker/subscriptions/count', String(b.subscriptions.size)],
      ['$SYS/broker/heap/current', String(mem.heapUsed)],
      ['$SYS/broker/heap/maximum', String(mem.heapTotal)],
    ]);
    // How often each limit was hit (as /metrics edgeway_limit_hits_total), e.g. limits/loginFailures.
    for (const [limit, hits] of Object.entries(m.limitHits)) values.set(`$SYS/broker/limits/${limit}`, String(hits));
    for (const read of this.extra) for (const [name, value] of read()) values.set(`$SYS/broker/${name}`, value);
    return values;
  }

  publishNow(): void {
    for (const [topic, value] of this.snapshot()) {
      if (topic !== '$SYS/broker/uptime' && this.last.get(topic) === value) continue;
      this.last.set(topic, value);
      this.broker.publish({ topic, payload: Buffer.from(value), qos: 0, retain: true }, null);
    }
  }
}
