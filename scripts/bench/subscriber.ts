/**
 * The single subscriber of the fan-in scenarios (1, 3, 6), in the load
 * generator's main event loop.
 *
 * (A worker_thread subscriber was tried: on a shared core the extra
 * cross-thread wake-ups made throughput erratic, and under QoS 1 the busy
 * publisher thread starved it of CPU. Keeping one loop and bounding the
 * publishers' work was both faster and repeatable.)
 */
import { PKT_PUBLISH, RawClient, encodePubacks, publishPacketId } from './wire';

export interface SubscriberOptions {
  host: string;
  port: number;
  clientId: string;
  topic: string;
  qos: 0 | 1;
  /** Read at most this many msg/s (pause/resume the socket); 0 = as fast as possible. */
  maxRate?: number;
  /** MQTT protocol level: 4 (3.1.1, the default) or 5. */
  protocolVersion?: 4 | 5;
}

export class FaninSubscriber {
  delivered = 0;
  private readonly ackIds = new Uint16Array(65536);
  private nAcks = 0;
  private stopped = false;

  private constructor(
    readonly client: RawClient,
    opts: SubscriberOptions,
    /** Called once per received chunk, after counting and PUBACKing it. */
    private onChunk: () => void = () => undefined,
  ) {
    client.scanner.onPacket = (type, flags, buf, bodyStart) => {
      if (type !== PKT_PUBLISH) return;
      this.delivered++;
      if ((flags & 0x06) !== 0) {
        this.ackIds[this.nAcks++] = publishPacketId(buf, bodyStart);
        if (this.nAcks === this.ackIds.length) this.flushAcks();
      }
    };
    const maxRate = opts.maxRate ?? 0;
    const t0 = process.hrtime.bigint();
    // Registered after the scanner's own 'data' listener: runs once per chunk.
    client.socket.on('data', () => {
      // One PUBACK write per chunk rather than per message.
      this.flushAcks();
      if (maxRate > 0 && !this.stopped) this.throttle(t0, maxRate);
      this.onChunk();
    });
  }

  static async connect(opts: SubscriberOptions): Promise<FaninSubscriber> {
    const client = await RawClient.connect({ host: opts.host, port: opts.port, clientId: opts.clientId, keepalive: 60, protocolVersion: opts.protocolVersion ?? 4 });
    await client.subscribe(opts.topic, opts.qos);
    return new FaninSubscriber(client, opts);
  }

  setOnChunk(cb: () => void): void {
    this.onChunk = cb;
  }

  /** Pause the socket while we are ahead of maxRate, so the broker sees a genuinely slow reader. */
  private throttle(t0: bigint, maxRate: number): void {
    const allowed = (Number(process.hrtime.bigint() - t0) / 1e9) * maxRate;
    if (this.delivered > allowed) {
      this.client.socket.pause();
      setTimeout(() => this.client.socket.resume(), ((this.delivered - allowed) / maxRate) * 1000);
    }
  }

  private flushAcks(): void {
    if (this.nAcks === 0) return;
    this.client.socket.write(encodePubacks(this.ackIds, this.nAcks));
    this.nAcks = 0;
  }

  close(): void {
    this.stopped = true;
    this.client.close();
  }
}
