/**
 * The soak's MQTT load: many long-lived connections, mostly idle — publishers sending one message
 * every few seconds (QoS 0 and 1), subscribers on a group topic or on `sensors/#` (QoS 0 and 1,
 * acknowledging), MQTT 3.1.1 and 5 alternating. Raw sockets (scripts/bench/wire.ts), so a thousand
 * of them cost this process little. A connection that drops is counted and opened again.
 */
import { connectMany, encodePubacks, encodePublish, PKT_PUBACK, PKT_PUBLISH, publishPacketId, RawClient } from '../bench/wire';

/** Topic groups: a message on `sensors/soak/<g>/value` reaches the subscribers of group g. */
const GROUPS = 50;
/** Subscribers on `sensors/#`, which receive every message. */
const WILDCARD_SUBSCRIBERS = 2;
/** A QoS 1 publisher with this many unacknowledged messages skips its turn (bounded). */
const MAX_UNACKED = 100;
const PINGREQ = Buffer.from([0xc0, 0x00]);
const KEEPALIVE_S = 60;
/** Connections opened again per tick at most, so a gateway that refuses is not hammered. */
const REOPEN_PER_TICK = 20;

export interface LoadCounters {
  published: number;
  acked: number;
  received: number;
  /** Connections that closed without the soak closing them. */
  dropped: number;
  reopened: number;
  /** Turns skipped by a QoS 1 publisher with MAX_UNACKED waiting. */
  skipped: number;
}

interface Member {
  readonly index: number;
  readonly role: 'publisher' | 'subscriber';
  readonly protocolVersion: 4 | 5;
  readonly qos: 0 | 1;
  readonly topic: string;
  client: RawClient | undefined;
  unacked: number;
  nextId: number;
  reopening: boolean;
}

export class SoakLoad {
  readonly counters: LoadCounters = { published: 0, acked: 0, received: 0, dropped: 0, reopened: 0, skipped: 0 };
  private readonly members: Member[];
  private timers: NodeJS.Timeout[] = [];
  private stopped = false;
  private turn = 0;

  constructor(
    private readonly port: number,
    connections: number,
    private readonly publishIntervalMs: number,
  ) {
    const subscribers = Math.round(connections * 0.4);
    this.members = Array.from({ length: connections }, (_, i): Member => {
      const role = i < subscribers ? 'subscriber' : 'publisher';
      const group = i % GROUPS;
      const topic = role === 'subscriber' ? (i < WILDCARD_SUBSCRIBERS ? 'sensors/#' : `sensors/soak/${group}/#`) : `sensors/soak/${group}/value`;
      return { index: i, role, protocolVersion: i % 2 === 0 ? 4 : 5, qos: Math.floor(i / 2) % 2 === 0 ? 0 : 1, topic, client: undefined, unacked: 0, nextId: 1, reopening: false };
    });
  }

  get connected(): number {
    return this.members.reduce((n, m) => n + (m.client !== undefined && !m.client.closed ? 1 : 0), 0);
  }

  /** Opens every connection (subscribers first), then starts publishing and pinging. */
  async start(): Promise<void> {
    const clients = await connectMany(this.members.length, 20, (i) => ({ host: '127.0.0.1', port: this.port, clientId: `soak-${i}`, keepalive: KEEPALIVE_S, protocolVersion: (this.members[i] as Member).protocolVersion }));
    for (const [i, client] of clients.entries()) await this.attach(this.members[i] as Member, client);
    // Publishing is spread over the interval: each 100 ms tick, one slice of the publishers.
    const slices = Math.max(1, Math.round(this.publishIntervalMs / 100));
    this.timers.push(setInterval(() => this.publishSlice(slices), 100));
    // PINGREQ from everyone every KEEPALIVE/3, spread over 1 s ticks; idle subscribers need it.
    const pingSlices = Math.round(KEEPALIVE_S / 3);
    let ping = 0;
    this.timers.push(
      setInterval(() => {
        const slice = ping++ % pingSlices;
        for (const m of this.members) if (m.index % pingSlices === slice && m.client !== undefined && !m.client.closed) m.client.socket.write(PINGREQ);
        this.reopenDropped();
      }, 1000),
    );
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    for (const m of this.members) m.client?.close();
  }

  private async attach(m: Member, client: RawClient): Promise<void> {
    if (m.role === 'subscriber') await client.subscribe(m.topic, m.qos);
    m.client = client;
    m.unacked = 0;
    client.scanner.onPacket = (type, flags, buf, bodyStart) => {
      if (type === PKT_PUBLISH) {
        this.counters.received++;
        if (((flags >> 1) & 3) === 1) client.socket.write(encodePubacks(Uint16Array.of(publishPacketId(buf, bodyStart)), 1));
      } else if (type === PKT_PUBACK) {
        this.counters.acked++;
        m.unacked = Math.max(0, m.unacked - 1);
      }
    };
    client.socket.once('close', () => {
      if (!this.stopped && m.client === client) this.counters.dropped++;
    });
  }

  private publishSlice(slices: number): void {
    const slice = this.turn++ % slices;
    for (const m of this.members) {
      if (m.role !== 'publisher' || m.index % slices !== slice || m.client === undefined || m.client.closed) continue;
      if (m.qos === 1 && m.unacked >= MAX_UNACKED) {
        this.counters.skipped++;
        continue;
      }
      const id = m.nextId;
      m.nextId = (m.nextId % 65_535) + 1;
      if (m.qos === 1) m.unacked++;
      m.client.socket.write(encodePublish(m.topic, Buffer.from(`{"n":${this.counters.published},"at":${Date.now()}}`), m.qos, id, m.protocolVersion));
      this.counters.published++;
    }
  }

  private reopenDropped(): void {
    let budget = REOPEN_PER_TICK;
    for (const m of this.members) {
      if (budget === 0 || this.stopped) return;
      if (m.client === undefined || !m.client.closed || m.reopening) continue;
      budget--;
      m.reopening = true;
      RawClient.connect({ host: '127.0.0.1', port: this.port, clientId: `soak-${m.index}`, keepalive: KEEPALIVE_S, protocolVersion: m.protocolVersion })
        .then(async (client) => {
          if (this.stopped) return client.close();
          await this.attach(m, client);
          this.counters.reopened++;
        })
        .catch(() => undefined)
        .finally(() => (m.reopening = false));
    }
  }
}
