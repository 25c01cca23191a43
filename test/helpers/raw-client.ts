import net from 'node:net';
import { generate, parser as createParser, type Packet } from 'mqtt-packet';

/**
 * A bare MQTT client over a real TCP socket, for tests that need exact control of the bytes:
 * protocol violations, DUP flags, re-sent packets, unacknowledged messages.
 */
export class RawClient {
  readonly received: Packet[] = [];
  closed = false;
  private waiters: (() => void)[] = [];
  private readonly parser;

  private constructor(
    readonly socket: net.Socket,
    readonly protocolVersion: number,
  ) {
    this.parser = createParser({ protocolVersion });
    this.parser.on('packet', (p: Packet) => {
      this.received.push(p);
      this.wake();
    });
    socket.on('data', (chunk: Buffer) => this.parser.parse(chunk));
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => {});
  }

  /** `localAddress`: the source address, e.g. 127.0.0.2 (on Linux all of 127/8 is local) to act as another machine. */
  static connectSocket(port: number, protocolVersion = 4, localAddress?: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port, ...(localAddress === undefined ? {} : { localAddress }) }, () => {
        socket.off('error', reject);
        resolve(new RawClient(socket, protocolVersion));
      });
      socket.once('error', reject);
    });
  }

  /** Opens a socket, sends CONNECT and waits for CONNACK; returns both, whatever the CONNACK says. */
  static async open(port: number, connect: Partial<Extract<Packet, { cmd: 'connect' }>> = {}, localAddress?: string): Promise<{ client: RawClient; connack: Extract<Packet, { cmd: 'connack' }> }> {
    const client = await RawClient.connectSocket(port, connect.protocolVersion ?? 4, localAddress);
    client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: '', keepalive: 0, ...connect });
    return { client, connack: await client.next('connack') };
  }

  /** Opens a socket, sends CONNECT and waits for CONNACK; throws if it refused. */
  static async connect(port: number, connect: Partial<Extract<Packet, { cmd: 'connect' }>> = {}): Promise<RawClient> {
    const { client, connack } = await RawClient.open(port, connect);
    if ((connack.returnCode ?? connack.reasonCode ?? 0) !== 0) {
      client.destroy();
      throw new Error(`CONNACK refused: ${connack.returnCode ?? connack.reasonCode}`);
    }
    return client;
  }

  send(packet: Packet): void {
    this.socket.write(generate(packet, { protocolVersion: this.protocolVersion }));
  }

  sendBytes(bytes: Buffer | number[]): void {
    this.socket.write(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes));
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** Removes and returns the first received packet of type `cmd` (any type if omitted). */
  async next<C extends Packet['cmd']>(cmd?: C, timeoutMs = 3000): Promise<Extract<Packet, { cmd: C }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = this.received.findIndex((p) => cmd === undefined || p.cmd === cmd);
      if (index >= 0) return this.received.splice(index, 1)[0] as Extract<Packet, { cmd: C }>;
      if (this.closed) throw new Error(`connection closed while waiting for ${cmd ?? 'a packet'}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${cmd ?? 'a packet'}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Resolves when the server has closed the connection; rejects after `timeoutMs`. */
  async waitClosed(timeoutMs = 3000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timed out waiting for the server to close the connection');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Waits `ms` and returns the packets of type `cmd` that arrived (for "nothing arrives" checks). */
  async collect<C extends Packet['cmd']>(cmd: C, ms: number): Promise<Extract<Packet, { cmd: C }>[]> {
    await new Promise((r) => setTimeout(r, ms));
    const out = this.received.filter((p) => p.cmd === cmd) as Extract<Packet, { cmd: C }>[];
    this.received.splice(0, this.received.length, ...this.received.filter((p) => p.cmd !== cmd));
    return out;
  }

  /** Closes the socket without DISCONNECT (an ungraceful close). */
  destroy(): void {
    this.socket.destroy();
  }

  /** Sends DISCONNECT and closes. */
  disconnect(): void {
    if (this.closed) return;
    this.send({ cmd: 'disconnect' });
    this.socket.end();
  }
}

/** An MQTT Variable Byte Integer (a remaining length), for packets built byte by byte. */
export function varInt(n: number): Buffer {
  const out: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return Buffer.from(out);
}
