import { isUtf8 } from 'node:buffer';
import type { Socket } from 'node:net';
import { parser as createParser, type Packet } from 'mqtt-packet';
import { packetSize } from './encode';
import type { Session } from './session';
import type { Message } from './types';

/**
 * Connection life cycle (DESIGN.md convention 2): one union, one transition function.
 *   awaiting-connect → authenticating → connected → closed
 *   any state → closed
 */
export type ConnectionState = 'awaiting-connect' | 'authenticating' | 'connected' | 'closed';

const allowedTransitions: Record<ConnectionState, readonly ConnectionState[]> = {
  'awaiting-connect': ['authenticating', 'closed'],
  authenticating: ['connected', 'closed'],
  connected: ['closed'],
  closed: [],
};

/** Why a connection ended; decides whether the will is published (3.1.1 section 3.1.2.5). */
export type CloseReason =
  | 'client-disconnect'
  | 'socket-closed'
  | 'socket-error'
  | 'keepalive-timeout'
  | 'connect-timeout'
  | 'protocol-error'
  | 'malformed-packet'
  | 'packet-too-large'
  | 'session-taken-over'
  | 'connect-refused'
  | 'server-shutdown';

/** What the connection needs from the broker; keeps the connection testable and the broker's surface small. */
export interface ConnectionHost {
  onPacket(conn: Connection, packet: Packet): void;
  onParseError(conn: Connection, err: Error): void;
  onClose(conn: Connection, reason: CloseReason, detail: string): void;
  /** Called before the first write in a tick so the broker can cork and flush once per tick. */
  scheduleFlush(conn: Connection): void;
  onBackpressureTimeout(conn: Connection): void;
  countBytesReceived(n: number): void;
  countBytesSent(n: number): void;
  readonly maxPacketSize: number;
  readonly backpressureTimeout: number;
}

let generationCounter = 0;

/** The parts of mqtt-packet's parser that `rejectMalformedUtf8` hooks into (private API of mqtt-packet 9). */
interface ParserInternals {
  _parseString(...args: unknown[]): string | null;
  _emitError(err: Error): void;
  _pos: number;
  _list: { slice(start: number, end: number): Buffer };
  packet: { cmd?: string };
}

/**
 * [MQTT-1.5.3-1] a packet containing ill-formed UTF-8 closes the connection. mqtt-packet decodes
 * strings with Buffer#toString, which silently substitutes U+FFFD, and a length comparison after
 * the fact cannot catch every case: a truncated 4-byte sequence (F0 9F 98) becomes one 3-byte
 * U+FFFD. So the raw bytes of each string are checked while parsing, and an ill-formed one is a
 * parse error (the packet is not emitted; the broker closes the connection). Only strings that
 * decoded to something containing U+FFFD are re-checked, so the common path costs one `includes`.
 * CONNECT is left to its handler, which refuses any client identifier containing U+FFFD with
 * CONNACK 2 before closing.
 */
function rejectMalformedUtf8<P extends object>(parser: P): P {
  const internals = parser as unknown as ParserInternals;
  const parseString = internals._parseString;
  // Should a future mqtt-packet rename it, fall back to the handlers' own (weaker) checks.
  if (typeof parseString !== 'function') return parser;
  internals._parseString = function (this: ParserInternals, ...args: unknown[]): string | null {
    const start = this._pos + 2; // after the two-byte length prefix
    const result = parseString.apply(this, args);
    if (result !== null && result.includes('\uFFFD') && this.packet.cmd !== 'connect' && !isUtf8(this._list.slice(start, this._pos))) {
      this._emitError(new Error('malformed UTF-8 string [MQTT-1.5.3-1]'));
    }
    return result;
  };
  return parser;
}

export class Connection {
  /** Unique per connection; a session records the generation that owns it (convention 9). */
  readonly generation = ++generationCounter;
  readonly remote: string;
  state: ConnectionState = 'awaiting-connect';
  clientId = '';
  protocolVersion = 4;
  /** Keepalive from CONNECT, in seconds; 0 disables it. */
  keepalive = 0;
  will: Message | null = null;
  session: Session | null = null;
  /** Set while the socket is corked, until the broker's per-tick flush. */
  corked = false;
  /** Packets that arrived while an asynchronous authentication was running (bounded). */
  readonly pending: Packet[] = [];

  private readonly parser = rejectMalformedUtf8(createParser());
  private lastActivity = Date.now();
  private keepaliveTimer: NodeJS.Timeout | null = null;
  /** Subscribers this connection (as a publisher) waits for before it reads again. */
  private readonly waitingFor = new Set<Connection>();
  /** Publishers paused because this connection (as a subscriber) could not keep up. */
  private readonly pausedPublishers = new Set<Connection>();
  private backpressureTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly socket: Socket,
    private readonly host: ConnectionHost,
  ) {
    this.remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
  }

  /** Attaches socket and parser listeners; called once by the broker after accept. */
  start(connectTimeoutMs: number): void {
    const { socket, parser } = this;
    socket.setNoDelay(true);
    parser.on('packet', (packet: Packet) => {
      // A packet that arrives whole within one chunk is parsed before onData can see its announced
      // length, so the limit is enforced here as well (README "Limits": maxPacketSize).
      const size = packetSize(packet.length ?? 0);
      if (size > this.host.maxPacketSize) {
        this.close('packet-too-large', `packet of ${size} bytes exceeds maxPacketSize ${this.host.maxPacketSize}`);
        return;
      }
      this.host.onPacket(this, packet);
    });
    parser.on('error', (err: Error) => this.host.onParseError(this, err));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err: NodeJS.ErrnoException) => this.close('socket-error', err.code ?? err.message));
    socket.on('close', () => this.close('socket-closed', 'connection closed by peer'));
    socket.on('drain', () => this.onDrain());
    // [MQTT-3.1.4-1]-adjacent: a socket that never sends CONNECT must not hold resources forever.
    this.keepaliveTimer = setTimeout(() => {
      if (this.state === 'awaiting-connect' || this.state === 'authenticating') {
        this.close('connect-timeout', `no CONNECT within ${connectTimeoutMs} ms`);
      }
    }, connectTimeoutMs);
  }

  transition(to: ConnectionState): void {
    if (!allowedTransitions[this.state].includes(to)) {
      throw new Error(`invalid connection state transition ${this.state} → ${to}`);
    }
    this.state = to;
  }

  get isOpen(): boolean {
    return this.state !== 'closed';
  }

  private onData(chunk: Buffer): void {
    this.lastActivity = Date.now();
    this.host.countBytesReceived(chunk.length);
    const buffered = this.parser.parse(chunk);
    // Enforce the packet size limit as soon as the length header is known, before buffering the
    // body: a client announcing 256 MB must not make us hold 256 MB.
    const pending = (this.parser as unknown as { packet?: { length?: number } }).packet;
    const announced = pending?.length === undefined || pending.length < 0 ? -1 : packetSize(pending.length);
    if (this.state !== 'closed' && (announced > this.host.maxPacketSize || buffered > this.host.maxPacketSize)) {
      this.close('packet-too-large', `packet of ${Math.max(announced, buffered)} bytes exceeds maxPacketSize ${this.host.maxPacketSize}`);
    }
  }

  /** Starts keepalive supervision: dropped after 1.5 × keepalive of silence [MQTT-3.1.2-24]. */
  startKeepalive(): void {
    if (this.keepaliveTimer) clearTimeout(this.keepaliveTimer);
    this.keepaliveTimer = null;
    if (this.keepalive === 0) return;
    const limitMs = this.keepalive * 1500;
    // One timer per connection, re-armed only when it fires: packets just update lastActivity,
    // which is far cheaper than refreshing a timer on every packet.
    const check = (): void => {
      const idle = Date.now() - this.lastActivity;
      if (idle >= limitMs) {
        this.close('keepalive-timeout', `no packet for ${idle} ms (keepalive ${this.keepalive} s)`);
        return;
      }
      this.keepaliveTimer = setTimeout(check, limitMs - idle);
    };
    this.keepaliveTimer = setTimeout(check, limitMs);
  }

  write(buf: Buffer): void {
    if (this.state === 'closed') return;
    if (!this.corked) this.host.scheduleFlush(this);
    this.host.countBytesSent(buf.length);
    this.socket.write(buf);
  }

  /** Bytes waiting in the socket's buffer (including corked writes). */
  get bufferedBytes(): number {
    return this.socket.writableLength;
  }

  /**
   * Pauses reading from this connection (a publisher) until `subscriber` drains, or until the
   * backpressure timeout, so that one slow subscriber cannot stall publishers forever.
   */
  waitFor(subscriber: Connection): boolean {
    if (subscriber === this || this.state === 'closed' || this.waitingFor.has(subscriber)) return false;
    this.waitingFor.add(subscriber);
    subscriber.pausedPublishers.add(this);
    if (this.waitingFor.size === 1) {
      this.socket.pause();
      this.backpressureTimer = setTimeout(() => {
        this.host.onBackpressureTimeout(this);
        this.resumeAll();
      }, this.host.backpressureTimeout);
    }
    return true;
  }

  private stopWaitingFor(subscriber: Connection): void {
    if (!this.waitingFor.delete(subscriber)) return;
    if (this.waitingFor.size === 0) this.resumeReading();
  }

  private resumeAll(): void {
    for (const subscriber of this.waitingFor) subscriber.pausedPublishers.delete(this);
    this.waitingFor.clear();
    this.resumeReading();
  }

  private resumeReading(): void {
    if (this.backpressureTimer) clearTimeout(this.backpressureTimer);
    this.backpressureTimer = null;
    if (this.state === 'closed') return;
    // While paused we did not read, so the client's silence was ours: do not count it against
    // its keepalive.
    this.lastActivity = Date.now();
    this.socket.resume();
  }

  private onDrain(): void {
    if (this.pausedPublishers.size === 0) return;
    const publishers = [...this.pausedPublishers];
    this.pausedPublishers.clear();
    for (const publisher of publishers) publisher.stopWaitingFor(this);
  }

  /**
   * Closes the connection once (idempotent). `flush` lets queued bytes such as a refusing CONNACK
   * reach the client before the socket closes; otherwise the socket is destroyed at once, as the
   * spec requires on a protocol violation.
   */
  close(reason: CloseReason, detail: string, flush = false): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.keepaliveTimer) clearTimeout(this.keepaliveTimer);
    this.keepaliveTimer = null;
    this.resumeAll();
    // Publishers waiting for us must not wait for a drain that will never come.
    this.onDrain();
    if (flush) {
      if (this.corked) {
        this.corked = false;
        this.socket.uncork();
      }
      this.socket.end();
      // Bounded: a peer that does not read must not keep the socket half-open.
      setTimeout(() => this.socket.destroy(), 1000).unref();
    } else {
      this.socket.destroy();
    }
    this.host.onClose(this, reason, detail);
  }
}
