/**
 * The load of a chaos run and the observer that watches it: numbered QoS 1 publishers, numbered
 * serial sensors, a `sensors/#` observer (what the gateway routed, in order), and the
 * subscriber that stops reading. Each records what it did for scripts/chaos/accounting.ts.
 */
import { once } from 'node:events';
import { connectAsync, type MqttClient } from 'mqtt';
import { generate } from 'mqtt-packet';
import type { Device, PtyPair } from '../../test/helpers/pty';
import { RawClient } from '../../test/helpers/raw-client';
import type { MqttRecord, Observation, SerialRecord } from './accounting';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The topic a publisher's messages go to (inside the uplink's `sensors/#`). */
export const mqttTopic = (clientId: string): string => `sensors/mqtt/${clientId}`;

/** One mqtt.js connection attempt, bounded; undefined when the gateway is not there. */
async function tryConnect(url: string, clientId: string, protocolVersion: 4 | 5): Promise<MqttClient | undefined> {
  try {
    // reconnectPeriod 0: each connection is a fresh client object, so mqtt.js never re-sends a
    // message of an earlier connection (a re-send would be a legitimate QoS 1 duplicate, and the
    // accounting counts every duplicate against the gateway).
    const client = await connectAsync(url, { clientId, protocolVersion, clean: true, reconnectPeriod: 0, connectTimeout: 2000, keepalive: 10 }, false);
    client.on('error', () => undefined);
    return client;
  } catch {
    return undefined;
  }
}

/** Stops a loop: `stop()` ends it at its next turn. */
abstract class Loop {
  protected stopped = false;
  private done: Promise<void> = Promise.resolve();

  start(): void {
    this.done = this.loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
  }

  protected abstract loop(): Promise<void>;
}

/**
 * A client publishing `1, 2, 3, …` at QoS 1 on its own topic every `intervalMs`, at most
 * `maxInflight` unacknowledged. A number is used only once, on one connection; when the connection
 * dies, its unacknowledged messages stay "sent, not acknowledged" and are never re-sent.
 */
export class Publisher extends Loop {
  readonly records: { source: string; n: number; sentAt: number; acked: boolean }[] = [];
  private client: MqttClient | undefined;
  private inflight = 0;
  private next = 1;

  constructor(
    readonly clientId: string,
    private readonly url: string,
    private readonly protocolVersion: 4 | 5,
    private readonly intervalMs: number,
    private readonly maxInflight = 100,
  ) {
    super();
  }

  /** Acknowledged so far (for progress lines). */
  get acked(): number {
    return this.records.reduce((n, r) => n + (r.acked ? 1 : 0), 0);
  }

  protected async loop(): Promise<void> {
    while (!this.stopped) {
      const client = this.client;
      if (client === undefined || !client.connected) {
        this.drop();
        this.client = await tryConnect(this.url, this.clientId, this.protocolVersion);
        if (this.client === undefined) await sleep(200);
        continue;
      }
      if (this.inflight < this.maxInflight) this.publish(client);
      await sleep(this.intervalMs);
    }
    // Let the last acknowledgements arrive (bounded), then close.
    const deadline = Date.now() + 10_000;
    while (this.inflight > 0 && this.client?.connected === true && Date.now() < deadline) await sleep(20);
    this.drop();
  }

  private publish(client: MqttClient): void {
    const record = { source: this.clientId, n: this.next++, sentAt: Date.now(), acked: false };
    this.records.push(record);
    this.inflight++;
    client.publish(mqttTopic(this.clientId), String(record.n), { qos: 1 }, (err) => {
      if (err === undefined || err === null) record.acked = true;
      if (this.client === client) this.inflight--;
    });
  }

  private drop(): void {
    const client = this.client;
    this.client = undefined;
    this.inflight = 0;
    client?.end(true);
  }
}

/**
 * A sensor on the device end of a pty, writing `{"n":1}`, `{"n":2}`, … every `intervalMs`. A
 * number counts as sent once it was handed to the pty; while unplugged it writes nothing.
 */
export class Sensor extends Loop {
  readonly records: SerialRecord[] = [];
  private device: Device | undefined;
  private next = 1;

  constructor(
    readonly port: string,
    readonly pty: PtyPair,
    private readonly intervalMs: number,
    private readonly openDevice: (path: string) => Promise<Device>,
  ) {
    super();
  }

  /** Starts socat and opens the device end before the gateway's link appears (a powered device being plugged in). */
  async plug(): Promise<void> {
    await this.pty.start(5000, async () => {
      this.device = await this.openDevice(this.pty.devicePath);
    });
  }

  /** The device disappears: its end is closed and socat stopped (both links vanish). */
  async unplug(): Promise<void> {
    const device = this.device;
    this.device = undefined;
    await device?.close();
    await this.pty.stop();
  }

  protected async loop(): Promise<void> {
    while (!this.stopped) {
      const device = this.device;
      if (device !== undefined) {
        const record = { port: this.port, n: this.next, sentAt: Date.now() };
        try {
          await device.write(`{"n":${record.n}}\n`);
          this.records.push(record);
          this.next++;
        } catch {
          // Unplugged during the write: not sent; the number is used for the next reading.
        }
      }
      await sleep(this.intervalMs);
    }
  }
}

export interface StatusEvent {
  readonly port: string;
  readonly state: string;
  /** The gateway's `since` (ms since the epoch): when the port last changed state. */
  readonly since: number;
  /** When the observer received it. */
  readonly at: number;
}

/**
 * Subscribed to `sensors/#` and the serial status topics, QoS 0, reconnecting whenever the
 * gateway comes back. Records every numbered message in arrival order (= the gateway's routing
 * order on one connection), tagged with the connection it came on.
 */
export class Observer extends Loop {
  readonly observations: Observation[] = [];
  readonly statuses: StatusEvent[] = [];
  /** Connections so far; the current one's number while connected. */
  conn = 0;
  private client: MqttClient | undefined;
  private readonly highest = new Map<string, number>();

  constructor(private readonly url: string) {
    super();
  }

  get connected(): boolean {
    return this.client?.connected === true;
  }

  /** The highest reading of `port` seen so far (0: none). */
  lastSeen(port: string): number {
    return this.highest.get(port) ?? 0;
  }

  /** Resolves once a status `online` of `port` changed at or after `since` arrived; its arrival time. */
  async waitOnline(port: string, since: number, timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const e = this.statuses.find((s) => s.port === port && s.state === 'online' && s.since >= since);
      if (e !== undefined) return e.at;
      if (Date.now() > deadline) throw new Error(`serial port ${port} not seen online (since ${new Date(since).toISOString()}) within ${timeoutMs} ms`);
      await sleep(20);
    }
  }

  protected async loop(): Promise<void> {
    while (!this.stopped) {
      if (this.client?.connected === true) {
        await sleep(50);
        continue;
      }
      this.client?.end(true);
      this.client = await this.connect();
      if (this.client === undefined) await sleep(100);
    }
    this.client?.end(true);
  }

  private async connect(): Promise<MqttClient | undefined> {
    const client = await tryConnect(this.url, 'chaos-observer', 4);
    if (client === undefined) return undefined;
    const conn = ++this.conn;
    client.on('message', (topic, payload) => this.record(conn, topic, payload.toString('utf8')));
    try {
      await client.subscribeAsync({ 'sensors/#': { qos: 0 }, 'edgeway/serial/+/status': { qos: 0 } });
    } catch {
      client.end(true);
      return undefined;
    }
    return client;
  }

  private record(conn: number, topic: string, payload: string): void {
    const levels = topic.split('/');
    if (levels[0] === 'edgeway' && levels[3] === 'status') {
      try {
        const s = JSON.parse(payload) as { state?: unknown; since?: unknown };
        this.statuses.push({ port: levels[2] ?? '', state: String(s.state), since: Number(s.since), at: Date.now() });
      } catch {
        // not a status object: ignored
      }
      return;
    }
    const n = Number(payload);
    if (!Number.isInteger(n)) return;
    if (levels[1] === 'mqtt' && levels.length === 3) this.observations.push({ conn, kind: 'mqtt', source: levels[2] as string, n });
    else if (levels.length === 3 && levels[2] === 'n') {
      const port = levels[1] as string;
      this.observations.push({ conn, kind: 'serial', source: port, n });
      this.highest.set(port, Math.max(n, this.lastSeen(port)));
    }
  }
}

/**
 * A subscriber that stops reading (its socket paused after SUBACK) on `sensors/#` at QoS 1 and on
 * a flood topic, plus a QoS 0 flood of 8 KiB messages that fills its socket within a second: the
 * gateway's per-subscriber bounds and publisher back-pressure (`outgoingHighWater`,
 * `backpressureTimeout`) are then in play for every publisher on `sensors/#`.
 */
export async function stallSubscriber(port: number, durationMs: number): Promise<string> {
  const stalled = await RawClient.connect(port, { clientId: 'chaos-stalled', keepalive: 0 });
  const flooder = await RawClient.connect(port, { clientId: 'chaos-flood', keepalive: 0 });
  try {
    stalled.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'sensors/#', qos: 1 }, { topic: 'chaos/flood', qos: 0 }] });
    await stalled.next('suback');
    stalled.socket.pause();
    const packet = generate({ cmd: 'publish', topic: 'chaos/flood', payload: Buffer.alloc(8192, 0x66), qos: 0, retain: false, dup: false });
    const deadline = Date.now() + durationMs;
    let sent = 0;
    while (Date.now() < deadline && !flooder.closed) {
      sent++;
      if (!flooder.socket.write(packet)) {
        // The gateway stopped reading the flooder (back-pressure): wait, bounded by the window.
        const left = deadline - Date.now();
        if (left <= 0) break;
        await Promise.race([once(flooder.socket, 'drain'), sleep(left)]);
      } else if (sent % 16 === 0) await sleep(1);
    }
    return `flood ${sent} × 8 KiB`;
  } finally {
    stalled.destroy();
    flooder.destroy();
  }
}

/** The records of every publisher, as the accounting takes them. */
export function mqttRecords(publishers: readonly Publisher[]): MqttRecord[] {
  return publishers.flatMap((p) => p.records);
}
