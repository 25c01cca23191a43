/**
 * The fuzzer's well-behaved client: mqtt.js, persistent session, subscribed at QoS 1 to its own
 * topic, publishing numbered QoS 1 messages to it while the fuzz connections do their worst. At
 * the end every message the gateway acknowledged must have come back (by sequence number).
 */
import mqtt, { type MqttClient } from 'mqtt';

export interface ReferenceStats {
  readonly level: 4 | 5;
  /** Messages the gateway acknowledged (PUBACK). */
  readonly acknowledged: number;
  readonly received: number;
  /** Acknowledged sequence numbers never received (at most the first 20 listed). */
  readonly missing: readonly number[];
  readonly missingCount: number;
  /** QoS 1 allows duplicates after a reconnect; counted, not a failure. */
  readonly duplicates: number;
  readonly reconnects: number;
  /** Publishes still unacknowledged at the end (the gateway stopped answering). */
  readonly unacknowledged: number;
}

/** Messages in flight at once: enough to keep the gateway busy, few enough to not flood it. */
const WINDOW = 8;
/** Pause between publishes: ~250 messages/s per client. */
const INTERVAL_MS = 4;

export class ReferenceClient {
  private client: MqttClient | null = null;
  private readonly topic: string;
  private nextSeq = 0;
  private inFlight = 0;
  private publishing = false;
  private readonly acked = new Set<number>();
  private readonly received = new Set<number>();
  private duplicates = 0;
  private reconnects = 0;
  /** When the gateway last acknowledged a publish (for the hang check). */
  lastAckAt = Date.now();
  private loop: Promise<void> | null = null;

  constructor(
    private readonly port: number,
    readonly level: 4 | 5,
    token: string,
  ) {
    this.topic = `fuzzref/${token}/v${level}`;
    this.clientId = `ref${level}-${token}`;
  }

  readonly clientId: string;

  /** Connects and subscribes; rejects after 10 s. */
  async start(): Promise<void> {
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${this.port}`, {
      protocolVersion: this.level,
      clientId: this.clientId,
      clean: false,
      ...(this.level === 5 ? { properties: { sessionExpiryInterval: 600 } } : {}),
      keepalive: 60,
      reconnectPeriod: 250,
      connectTimeout: 10_000,
    });
    this.client = client;
    client.on('connect', () => this.reconnects++); // after the first: each one is a reconnection
    client.on('error', () => {}); // reconnects on its own; counted above
    client.on('message', (_topic, payload) => {
      const seq = Number(payload.toString());
      if (this.received.has(seq)) this.duplicates++;
      else this.received.add(seq);
    });
    await client.subscribeAsync(this.topic, { qos: 1 });
    this.publishing = true;
    this.loop = this.publishLoop();
  }

  private async publishLoop(): Promise<void> {
    const client = this.client as MqttClient;
    while (this.publishing) {
      if (this.inFlight >= WINDOW) {
        await new Promise((r) => setTimeout(r, 1));
        continue;
      }
      const seq = this.nextSeq++;
      this.inFlight++;
      client.publishAsync(this.topic, String(seq), { qos: 1 }).then(
        () => {
          this.inFlight--;
          this.acked.add(seq);
          this.lastAckAt = Date.now();
        },
        () => this.inFlight--,
      );
      await new Promise((r) => setTimeout(r, INTERVAL_MS));
    }
  }

  /** Publishes in flight now. */
  get pending(): number {
    return this.inFlight;
  }

  /**
   * Stops publishing, waits (at most `timeoutMs`) for the acknowledgements in flight and for every
   * acknowledged message to come back, then disconnects.
   */
  async finish(timeoutMs: number): Promise<ReferenceStats> {
    this.publishing = false;
    await this.loop;
    const deadline = Date.now() + timeoutMs;
    const done = () => this.inFlight === 0 && [...this.acked].every((seq) => this.received.has(seq));
    while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const missing = [...this.acked].filter((seq) => !this.received.has(seq)).sort((a, b) => a - b);
    const stats: ReferenceStats = {
      level: this.level,
      acknowledged: this.acked.size,
      received: this.received.size,
      missing: missing.slice(0, 20),
      missingCount: missing.length,
      duplicates: this.duplicates,
      reconnects: this.reconnects,
      unacknowledged: this.inFlight,
    };
    await this.client?.endAsync(true).catch(() => {});
    return stats;
  }

  /** Closes at once (on a failed run). */
  abort(): void {
    this.publishing = false;
    this.client?.end(true);
  }
}

/**
 * A fresh client connects, subscribes, publishes one QoS 1 message and receives it: the gateway
 * still accepts and serves new connections. Resolves with null when it worked, else why not.
 */
export async function probeNewConnection(port: number, level: 4 | 5, timeoutMs: number): Promise<string | null> {
  let client: MqttClient | undefined;
  const work = (async () => {
    client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: level, clean: true, reconnectPeriod: 0, connectTimeout: timeoutMs });
    const topic = `fuzzprobe/${process.pid}/${level}`;
    const got = new Promise<string>((resolve) => client?.on('message', (_t, payload) => resolve(payload.toString())));
    await client.subscribeAsync(topic, { qos: 1 });
    await client.publishAsync(topic, 'probe', { qos: 1 });
    const payload = await got;
    return payload === 'probe' ? null : `received ${JSON.stringify(payload)}`;
  })();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => (timer = setTimeout(() => resolve(`no round trip within ${timeoutMs} ms`), timeoutMs)));
  try {
    return await Promise.race([work.catch((err: unknown) => String(err)), timeout]);
  } finally {
    clearTimeout(timer);
    await (client as MqttClient | undefined)?.endAsync(true).catch(() => {});
  }
}
