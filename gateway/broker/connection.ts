import type { Packet } from 'mqtt-packet';
import { packetSize } from './encode';
import { ReasonCode } from './errors';
import { decodeCommonPackets, type FastPacketSink } from './fast-decode';
import type { LoginAttempt } from './login-backoff';
import type { ByteBudget } from './memory-budget';
import { encodeV5, type Mqtt5State } from './mqtt5';
import { ParserPool, type ParserOwner, type PooledParser } from './parser-pool';
import type { ClientInfo } from './hooks';
import type { Session } from './session';
import type { Transport } from './transport';
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
  /** Re-authentication (MQTT 5 AUTH) refused the client. */
  | 'auth-failed'
  /** Its login is no longer valid after a reload of the users (removed, password changed). */
  | 'auth-revoked'
  | 'server-shutdown'
  /** The storage closed before the commit acknowledgements waited for: not sent, the client re-sends. */
  | 'storage-failure'
  /** A packet handler threw (a bug): the connection is closed, the process keeps serving (Broker.onPacket). */
  | 'internal-error';

/**
 * The reason code of the DISCONNECT an MQTT 5 client gets when the server closes its connection
 * (MQTT 5.0 section 3.14.2.1); none where the connection is already gone or never was connected.
 */
const DISCONNECT_REASON: Partial<Record<CloseReason, number>> = {
  'keepalive-timeout': ReasonCode.KeepAliveTimeout,
  'session-taken-over': ReasonCode.SessionTakenOver,
  'server-shutdown': ReasonCode.ServerShuttingDown,
  'protocol-error': ReasonCode.ProtocolError,
  'malformed-packet': ReasonCode.MalformedPacket,
  'packet-too-large': ReasonCode.PacketTooLarge,
  'storage-failure': ReasonCode.UnspecifiedError,
  'internal-error': ReasonCode.UnspecifiedError,
  'auth-failed': ReasonCode.NotAuthorized,
  'auth-revoked': ReasonCode.AdministrativeAction,
};

/** What the connection needs from the broker; keeps the connection testable and the broker's surface small. */
export interface ConnectionHost {
  onPacket(conn: Connection, packet: Packet): void;
  onParseError(conn: Connection, err: Error): void;
  onClose(conn: Connection, reason: CloseReason, detail: string): void;
  /** Called on the first write in a tick so the broker flushes this connection once per tick. */
  scheduleFlush(conn: Connection): void;
  onBackpressureTimeout(conn: Connection): void;
  /** The commit that held acknowledgements of `conn` will not come (storage closed). */
  onStorageFailure(conn: Connection, err: unknown): void;
  /** `conn` holds MAX_HELD_ACKS acknowledgements; reading it pauses until a commit releases them. */
  onHeldAckLimit(conn: Connection): void;
  countBytesReceived(n: number): void;
  countBytesSent(n: number): void;
  readonly maxPacketSize: number;
  readonly backpressureTimeout: number;
  readonly parserPool: ParserPool;
  /** Bytes waiting on all connections together (limits.maxOutgoingBytesTotal); each adds its share. */
  readonly outgoingBudget: ByteBudget;
}

let generationCounter = 0;

/**
 * Acknowledgements one connection may hold while they wait for a commit: the QoS 1/2 packet id
 * space. A well-behaved client cannot have more unacknowledged; one that reuses ids without
 * waiting is paused (not read) until commits release some, so held acks stay bounded.
 */
export const MAX_HELD_ACKS = 65_535;

/** Acknowledgements waiting for the same commit, plus the immediate ones queued behind them. */
interface HeldAcks {
  readonly barrier: Promise<void>;
  readonly packets: Buffer[];
  committed: boolean;
  /** How many of `packets` end an incoming QoS 1/2 exchange (MQTT 5 Receive Maximum). */
  ending: number;
}

/** Largest split packet the fast path keeps for the next chunk; bigger ones go to mqtt-packet. */
const MAX_FAST_TAIL = 4096;

/** The connection a socket belongs to, so one set of listener functions serves every socket. */
const CONNECTION = Symbol('edgeway.connection');
type OwnedSocket = Transport & { [CONNECTION]: Connection };

// Socket listeners shared by all connections (`this` is the socket): a few closures per
// connection are a measurable part of the memory of an idle connection.
function onSocketData(this: OwnedSocket, chunk: Buffer): void {
  this[CONNECTION].onData(chunk);
}
function onSocketError(this: OwnedSocket, err: NodeJS.ErrnoException): void {
  // A WebSocket transport reports what its framing refused (ws-listener.ts) with these codes.
  if (err.code === 'EDGEWAY_ERR_PACKET_TOO_LARGE') this[CONNECTION].close('packet-too-large', err.message);
  else if (err.code === 'EDGEWAY_ERR_PROTOCOL') this[CONNECTION].close('protocol-error', err.message);
  else this[CONNECTION].close('socket-error', err.code ?? err.message);
}
function onSocketClose(this: OwnedSocket): void {
  this[CONNECTION].close('socket-closed', 'connection closed by peer');
}
function onSocketDrain(this: OwnedSocket): void {
  this[CONNECTION].onDrain();
}
function onConnectTimeout(conn: Connection, timeoutMs: number): void {
  if (conn.state === 'awaiting-connect' || conn.state === 'authenticating') {
    conn.close('connect-timeout', `no CONNECT within ${timeoutMs} ms`);
  }
}
function onBackpressureTimeout(conn: Connection): void {
  conn.onBackpressureTimeout();
}
function onKeepaliveTimer(conn: Connection): void {
  conn.checkKeepalive();
}

export class Connection implements ParserOwner, FastPacketSink {
  /** Unique per connection; a session records the generation that owns it (convention 9). */
  readonly generation = ++generationCounter;
  state: ConnectionState = 'awaiting-connect';
  clientId = '';
  /** The authenticated user name (hooks.ts ClientInfo.username); undefined for anonymous clients. */
  username: string | undefined = undefined;
  /**
   * The subject CN of the verified TLS client certificate, set by a listener with
   * useIdentityAsUsername: it replaces the user name of CONNECT, and no password is checked.
   */
  certificateUsername: string | undefined = undefined;
  /** Who the client is, for the hooks: one object from authentication on (broker.ts clientInfo). */
  info: ClientInfo | null = null;
  /** 0 until CONNECT tells; then 3, 4 or 5. */
  protocolVersion = 0;
  /** Keepalive from CONNECT, in seconds; 0 disables it. */
  keepalive = 0;
  will: Message | null = null;
  session: Session | null = null;
  /** MQTT 5 state (mqtt5.ts); null for 3.1/3.1.1 clients. */
  mqtt5: Mqtt5State | null = null;
  /**
   * Outgoing QoS 1/2 messages this client may have unacknowledged: limits.maxInflight, lowered to
   * an MQTT 5 client's Receive Maximum [MQTT-3.3.4-9]. Set at CONNECT.
   */
  inflightLimit = 0;
  /**
   * Packets written this tick, not yet handed to the socket. One socket.write per tick of their
   * concatenation costs far less than one per packet (each write allocates stream bookkeeping),
   * which is what fan-in to one subscriber does thousands of times a second.
   */
  private outChunks: Buffer[] = [];
  private outBytes = 0;
  /**
   * What this connection counts in host.outgoingBudget: this tick's packets, plus what the socket
   * held after the last flush if that write returned false. Node does not sum socket buffers, so
   * the sum is kept here: added at write, brought up to date at flush and at 'drain' (which such a
   * write guarantees), removed at close. Until 'drain' it may count bytes the kernel has taken
   * already; after a write that returned true it leaves out what the socket still holds (less
   * than the socket's own high-water mark).
   */
  private outgoingShare = 0;
  /** Packets that arrived while an asynchronous authentication was running (bounded), or null. */
  pending: Packet[] | null = null;
  /** This connection's place in the login back-off of its address (login-backoff.ts) while its CONNECT is authenticated. */
  loginAttempt: LoginAttempt | null = null;

  /** Borrowed from the pool only while a packet is partly received (parser-pool.ts). */
  private parser: PooledParser | null = null;
  private lastActivity = Date.now();
  private keepaliveTimer: NodeJS.Timeout | null = null;
  /** Subscribers this connection (as a publisher) waits for before it reads again (lazy). */
  private waitingFor: Set<Connection> | null = null;
  /** Publishers paused because this connection (as a subscriber) could not keep up (lazy). */
  private pausedPublishers: Set<Connection> | null = null;
  private backpressureTimer: NodeJS.Timeout | null = null;
  /** Packets parsed after this connection was paused, processed in order on resume (lazy). */
  private deferred: Packet[] | null = null;
  /** The start of a common packet split across chunks, kept for the fast path (≤ MAX_FAST_TAIL). */
  private tail: Buffer | null = null;
  /** Acknowledgements waiting for commits, oldest first (lazy; null when none are held). */
  private held: HeldAcks[] | null = null;
  private heldCount = 0;
  /** Reading paused because MAX_HELD_ACKS are held. */
  private heldPaused = false;
  private deferredNext = 0;
  /** As a subscriber: made a publisher wait a whole backpressureTimeout; publishers no longer wait for it until it drains. */
  private stalled = false;

  constructor(
    readonly socket: Transport,
    private readonly host: ConnectionHost,
  ) {}

  /** "address:port" of the peer, for logs (computed on demand: most connections never log it twice). */
  get remote(): string {
    return `${this.socket.remoteAddress ?? '?'}:${this.socket.remotePort ?? '?'}`;
  }

  /** Attaches socket listeners and the connect timeout; called once by the broker after accept. */
  start(connectTimeoutMs: number): void {
    const socket = this.socket as OwnedSocket;
    socket[CONNECTION] = this;
    socket.setNoDelay(true);
    socket.on('data', onSocketData);
    socket.on('error', onSocketError);
    socket.on('close', onSocketClose);
    socket.on('drain', onSocketDrain);
    // A socket that never sends CONNECT must not hold resources forever.
    this.armConnectTimeout(connectTimeoutMs);
  }

  /**
   * (Re)starts the connect timeout, which bounds the time to CONNECT and its authentication; with
   * 0 it is suspended — while a login waits for the back-off of its address (handlers/connect.ts),
   * a wait the server imposes and bounds itself (login-backoff.ts).
   */
  armConnectTimeout(timeoutMs: number): void {
    if (this.state !== 'awaiting-connect' && this.state !== 'authenticating') return;
    if (this.keepaliveTimer) clearTimeout(this.keepaliveTimer);
    this.keepaliveTimer = timeoutMs > 0 ? setTimeout(onConnectTimeout, timeoutMs, this, timeoutMs) : null;
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

  onData(chunk: Buffer): void {
    // Closed but flushing a last packet (a refusing CONNACK, a DISCONNECT): nothing more is read.
    if (!this.isOpen) return;
    this.lastActivity = Date.now();
    this.host.countBytesReceived(chunk.length);
    let data = chunk;
    if (this.tail !== null) {
      data = Buffer.concat([this.tail, chunk]);
      this.tail = null;
    }
    // The fast path needs a packet boundary at the start (no parser holding a partial packet) and
    // a connected client, whose protocol level is known.
    if (this.parser === null && this.state === 'connected') {
      const { offset, incomplete, announced = -1 } = decodeCommonPackets(data, this, this.mqtt5 !== null);
      if (offset === data.length || this.state !== 'connected') return;
      if (incomplete && announced <= MAX_FAST_TAIL && data.length - offset <= MAX_FAST_TAIL) {
        // Under load chunk boundaries fall anywhere; keeping the few bytes of a split packet for
        // the next chunk keeps the stream on the fast path. Larger packets go to mqtt-packet,
        // which buffers without copying and enforces maxPacketSize as they arrive.
        this.tail = Buffer.from(data.subarray(offset));
        return;
      }
      if (offset > 0) data = data.subarray(offset);
    }
    const parser = (this.parser ??= this.host.parserPool.acquire(this, this.protocolVersion));
    const buffered = parser.parse(data);
    if (this.state === 'closed') return; // closed by a handler or a parse error; parser already returned
    // Enforce the packet size limit as soon as the length header is known, before buffering the
    // body: a client announcing 256 MB must not make us hold 256 MB.
    const length = ParserPool.announcedLength(parser);
    const announced = length < 0 ? -1 : packetSize(length);
    if (announced > this.host.maxPacketSize || buffered > this.host.maxPacketSize) {
      this.close('packet-too-large', `packet of ${Math.max(announced, buffered)} bytes exceeds maxPacketSize ${this.host.maxPacketSize}`);
      return;
    }
    if (buffered === 0 && ParserPool.isIdle(parser)) {
      this.parser = null;
      this.host.parserPool.release(parser);
    }
  }

  onParsedPacket(packet: Packet): void {
    // A packet that arrives whole within one chunk is parsed before onData can see its announced
    // length, so the limit is enforced here as well (README "Limits": maxPacketSize).
    const size = packetSize(packet.length ?? 0);
    if (size > this.host.maxPacketSize) {
      this.close('packet-too-large', `packet of ${size} bytes exceeds maxPacketSize ${this.host.maxPacketSize}`);
      return;
    }
    if (this.waitingFor !== null) {
      // Paused for a slow subscriber: the rest of this chunk waits too (at most one socket read,
      // ≤ 64 KiB), instead of being routed only to be dropped at maxOutgoingBytes.
      (this.deferred ??= []).push(packet);
      return;
    }
    this.host.onPacket(this, packet);
  }

  onFastPacket(packet: Packet): boolean {
    this.onParsedPacket(packet);
    return this.state === 'connected';
  }

  onParseError(err: Error): void {
    this.host.onParseError(this, err);
  }

  /** Starts keepalive supervision: dropped after 1.5 × keepalive of silence [MQTT-3.1.2-24]. */
  startKeepalive(): void {
    if (this.keepaliveTimer) clearTimeout(this.keepaliveTimer);
    this.keepaliveTimer = null;
    if (this.keepalive === 0) return;
    // One timer per connection, re-armed only when it fires: packets just update lastActivity,
    // which is far cheaper than refreshing a timer on every packet.
    this.keepaliveTimer = setTimeout(onKeepaliveTimer, this.keepalive * 1500, this);
  }

  checkKeepalive(): void {
    const limitMs = this.keepalive * 1500;
    if (this.waitingFor !== null) {
      // Paused for backpressure: the silence is ours (we are not reading), and the client may well
      // have sent packets that wait in the socket. Dropping it here would also publish its will.
      // resumeReading() restarts the count (lastActivity), so look again a full period later.
      this.keepaliveTimer = setTimeout(onKeepaliveTimer, limitMs, this);
      return;
    }
    const idle = Date.now() - this.lastActivity;
    if (idle >= limitMs) {
      this.close('keepalive-timeout', `no packet for ${idle} ms (keepalive ${this.keepalive} s)`);
      return;
    }
    this.keepaliveTimer = setTimeout(onKeepaliveTimer, limitMs - idle, this);
  }

  write(buf: Buffer): void {
    if (this.state === 'closed') return;
    if (this.outBytes === 0) this.host.scheduleFlush(this);
    this.host.countBytesSent(buf.length);
    this.outChunks.push(buf);
    this.outBytes += buf.length;
    this.outgoingShare += buf.length;
    this.host.outgoingBudget.used += buf.length;
  }

  /**
   * Sends an acknowledgement in order with the others [MQTT-4.6.0-2], [MQTT-4.6.0-4]: once
   * `barrier` (a commit) resolves, or at once when null and nothing is held. `ends` marks the
   * PUBACK, PUBCOMP (or failing PUBREC) that completes an incoming QoS 1/2 message: only once it
   * is sent does the message stop counting against an MQTT 5 client's quota (section 4.9).
   */
  sendAck(packet: Buffer, barrier: Promise<void> | null, ends = false): void {
    if (this.state === 'closed') return;
    let last = this.held === null ? undefined : this.held[this.held.length - 1];
    if (barrier === null && last === undefined) {
      this.write(packet);
      if (ends) this.inboundEnded(1);
      return;
    }
    if (barrier !== null && (last === undefined || last.barrier !== barrier)) {
      const group: HeldAcks = { barrier, packets: [], committed: false, ending: 0 };
      (this.held ??= []).push(group);
      barrier.then(
        () => this.releaseHeld(group),
        (err: unknown) => this.failHeld(err),
      );
      last = group;
    }
    (last as HeldAcks).packets.push(packet);
    if (ends) (last as HeldAcks).ending++;
    if (++this.heldCount >= MAX_HELD_ACKS && !this.heldPaused) {
      this.heldPaused = true;
      this.socket.pause();
      this.host.onHeldAckLimit(this);
    }
  }

  /** Sends the acknowledgements of every committed group at the head, in order. */
  private releaseHeld(group: HeldAcks): void {
    group.committed = true;
    const held = this.held;
    if (held === null || this.state === 'closed') return;
    while (held.length > 0 && (held[0] as HeldAcks).committed) {
      const next = held.shift() as HeldAcks;
      for (const packet of next.packets) this.write(packet);
      this.heldCount -= next.packets.length;
      if (next.ending > 0) this.inboundEnded(next.ending);
    }
    if (held.length === 0) {
      this.held = null;
      this.heldCount = 0;
    }
    if (this.heldPaused && this.heldCount < MAX_HELD_ACKS) {
      this.heldPaused = false;
      if (this.waitingFor === null && this.isOpen) this.socket.resume();
    }
  }

  /** `n` incoming QoS 1/2 exchanges were completed towards an MQTT 5 client. */
  private inboundEnded(n: number): void {
    const state = this.mqtt5;
    // Never below zero: a PUBREL may complete an exchange begun on an earlier connection.
    if (state !== null) state.inboundUnacked = Math.max(0, state.inboundUnacked - n);
  }

  /** The storage closed before the commit (shutdown): these acknowledgements are never sent. */
  private failHeld(err: unknown): void {
    const held = this.held;
    this.held = null;
    this.heldCount = 0;
    if (held !== null && this.state !== 'closed') this.host.onStorageFailure(this, err);
  }

  /** Hands this tick's packets to the socket in one write. Called by the broker once per tick. */
  flushOutput(): void {
    if (this.outBytes === 0) return;
    const chunks = this.outChunks;
    const data = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, this.outBytes);
    this.outChunks = [];
    this.outBytes = 0;
    if (this.socket.destroyed) {
      this.shareOutgoing(0);
      return;
    }
    const accepted = this.socket.write(data);
    // A write that returned true is followed by no 'drain' that would say when the socket emptied:
    // what it left in the socket (less than the socket's high-water mark) is not counted.
    this.shareOutgoing(accepted ? 0 : this.socket.writableLength);
    // When the socket takes it all without queueing, no 'drain' event will follow, so publishers
    // paused for this subscriber (because this tick's batch was large) are released now.
    if (accepted && this.pausedPublishers !== null) this.onDrain();
  }

  /** Sets this connection's share of the global outgoing bytes: this tick's packets plus `socketBytes`. */
  private shareOutgoing(socketBytes: number): void {
    const share = this.outBytes + socketBytes;
    this.host.outgoingBudget.used += share - this.outgoingShare;
    this.outgoingShare = share;
  }

  /** Bytes handed to the socket that the kernel has not taken yet. */
  get socketBacklog(): number {
    return this.socket.writableLength;
  }

  /** Bytes waiting to be sent: this tick's packets plus the socket's own buffer. */
  get bufferedBytes(): number {
    return this.outBytes + this.socket.writableLength;
  }

  /**
   * Pauses reading from this connection (a publisher) until `subscriber` drains, or until the
   * backpressure timeout, so that one slow subscriber cannot stall publishers forever.
   */
  waitFor(subscriber: Connection): boolean {
    if (subscriber === this || this.state === 'closed' || subscriber.stalled) return false;
    const waitingFor = (this.waitingFor ??= new Set());
    if (waitingFor.has(subscriber)) return false;
    waitingFor.add(subscriber);
    (subscriber.pausedPublishers ??= new Set()).add(this);
    if (waitingFor.size === 1) {
      this.socket.pause();
      this.backpressureTimer = setTimeout(onBackpressureTimeout, this.host.backpressureTimeout, this);
    }
    return true;
  }

  onBackpressureTimeout(): void {
    this.host.onBackpressureTimeout(this);
    // Whoever did not drain in a whole backpressureTimeout is stuck, not slow: pausing publishers
    // for it again on their next message would slow every publisher to one read per timeout
    // (one device subscribed to '#' that never reads). Its own limits drop for it instead.
    if (this.waitingFor !== null) for (const subscriber of this.waitingFor) subscriber.stalled = true;
    this.resumeAll();
  }

  private stopWaitingFor(subscriber: Connection): void {
    if (this.waitingFor === null || !this.waitingFor.delete(subscriber)) return;
    if (this.waitingFor.size > 0) return;
    this.waitingFor = null; // null means "not paused" everywhere else
    this.resumeReading();
  }

  private resumeAll(): void {
    if (this.waitingFor === null) return;
    for (const subscriber of this.waitingFor) subscriber.pausedPublishers?.delete(this);
    this.waitingFor = null;
    this.resumeReading();
  }

  private resumeReading(): void {
    if (this.backpressureTimer) clearTimeout(this.backpressureTimer);
    this.backpressureTimer = null;
    if (this.state === 'closed') return;
    // While paused we did not read, so the client's silence was ours: do not count it against
    // its keepalive.
    this.lastActivity = Date.now();
    const deferred = this.deferred;
    if (deferred !== null) {
      // An index, not shift/splice: a publisher is typically resumed, sends one message, and is
      // paused again, hundreds of times per chunk.
      while (this.deferredNext < deferred.length && this.waitingFor === null && this.isOpen) {
        this.host.onPacket(this, deferred[this.deferredNext++] as Packet);
      }
      if (this.deferredNext < deferred.length) return; // paused again: the rest waits
      this.deferred = null;
      this.deferredNext = 0;
    }
    if (this.isOpen && this.waitingFor === null && !this.heldPaused) this.socket.resume();
  }

  onDrain(): void {
    this.shareOutgoing(0); // the socket is empty
    this.stalled = false;
    const publishers = this.pausedPublishers;
    if (publishers === null || publishers.size === 0) return;
    this.pausedPublishers = null;
    for (const publisher of publishers) publisher.stopWaitingFor(this);
  }

  /**
   * Closes the connection once (idempotent). `flush` lets queued bytes such as a refusing CONNACK
   * reach the client before the socket closes; otherwise the socket is destroyed at once, as the
   * spec requires on a protocol violation. An MQTT 5 client that was connected first gets a
   * DISCONNECT with `reasonCode` (by default the one of `reason`) and, unless it asked for none,
   * `detail` as its Reason String [MQTT-4.13.2-1].
   */
  close(reason: CloseReason, detail: string, flush = false, reasonCode = DISCONNECT_REASON[reason]): void {
    if (this.state === 'closed') return;
    if (this.state === 'connected' && this.mqtt5 !== null && reasonCode !== undefined) {
      this.write(encodeV5(this.mqtt5, { cmd: 'disconnect', reasonCode, properties: this.mqtt5.reason(detail) }));
      flush = true;
    }
    this.state = 'closed';
    if (this.keepaliveTimer) clearTimeout(this.keepaliveTimer);
    this.keepaliveTimer = null;
    this.deferred = null;
    this.tail = null;
    // Held acknowledgements are not sent: the client re-sends those messages on its next
    // connection; a re-sent QoS 2 id still held waits for the same commit (handlers/publish.ts).
    this.held = null;
    this.heldCount = 0;
    if (this.parser !== null) {
      // Possibly mid-parse (a handler closed us): detach it and let it go, never back to the pool.
      this.parser.owner = null;
      this.parser = null;
    }
    this.resumeAll();
    // Publishers waiting for us must not wait for a drain that will never come.
    this.onDrain();
    if (flush) {
      this.flushOutput();
      this.socket.end();
      // Bounded: a peer that does not read must not keep the socket half-open.
      setTimeout(() => this.socket.destroy(), 1000).unref();
    } else {
      this.outChunks = [];
      this.outBytes = 0;
      this.socket.destroy();
    }
    // Gone from the budget at once; a final flush above is bounded by the 1-s destroy.
    this.host.outgoingBudget.used -= this.outgoingShare;
    this.outgoingShare = 0;
    this.host.onClose(this, reason, detail);
  }
}
