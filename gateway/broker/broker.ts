import net, { type AddressInfo, type Server } from 'node:net';
import type { Server as TlsServer } from 'node:tls';
import type { Packet } from 'mqtt-packet';
import { AddressLimits } from './address-limits';
import { Connection, MAX_HELD_ACKS, type CloseReason, type ConnectionHost } from './connection';
import { dispatchPacket, handleParseError } from './handlers/dispatch';
import { encodeAck, encodePublish } from './encode';
import { encodePublishV5, encodePublishV5WithoutAlias, forwardedProperties, withSubscriptionIds } from './outgoing';
import { EdgewayError, errorMessage, ReasonCode } from './errors';
import { Hooks, type ClientInfo } from './hooks';
import { RateLimitedLog, type LogFields, type Logger } from './logger';
import { LoginBackoff } from './login-backoff';
import { ByteBudget } from './memory-budget';
import { BrokerMetrics, type LimitName } from './metrics';
import { detachedPayload, type Outbox } from './outbox';
import { ParserPool } from './parser-pool';
import type { SessionStore } from './persistence';
import { RetainedMessages } from './retained';
import { Session, type SharedOrigin } from './session';
import { SharedGroup } from './shared-subscriptions';
import { expiryTime, SessionExpiry } from './session-expiry';
import { DelayedWills } from './delayed-wills';
import { hasExpired, withExpiry } from './incoming';
import { SysPublisher } from './sys-topics';
import { sharedFilter, topicFilterError, topicNameError } from './topic';
import { TopicTree } from './topic-tree';
import type { Transport } from './transport';
import type { TlsEvents } from './tls-listener';
import type { BrokerOptions, Message, QoS, SubscriptionOptions } from './types';

/** TLS material of a listener: PEM file paths (config/schema.ts), read at start and by reloadCertificates. */
export interface TlsListenerFiles {
  readonly cert: string;
  readonly key: string;
  readonly ca?: string | undefined;
  readonly minVersion: 'TLSv1.2' | 'TLSv1.3';
  readonly requireCertificate: boolean;
  readonly useIdentityAsUsername: boolean;
}

/** A listener: plain MQTT over TCP, MQTT over TLS, MQTT over WebSockets (plain or TLS). */
export type ListenerSpec =
  | { readonly protocol: 'mqtt'; readonly host: string; readonly port: number }
  | ({ readonly protocol: 'mqtts'; readonly host: string; readonly port: number } & TlsListenerFiles)
  | { readonly protocol: 'ws'; readonly host: string; readonly port: number; readonly path: string }
  | ({ readonly protocol: 'wss'; readonly host: string; readonly port: number; readonly path: string } & TlsListenerFiles);

/**
 * A subscription as stored in the topic tree: a session with its options, an in-process handler
 * (an adapter, e.g. the serial bridge's command topic), which has no session, or a shared
 * subscription, whose members are sessions (shared-subscriptions.ts).
 */
export type Subscriber =
  | { readonly session: Session; readonly options: SubscriptionOptions; readonly handler?: undefined; readonly group?: undefined }
  | { readonly session: null; readonly options: SubscriptionOptions; readonly handler: InProcessHandler; readonly group?: undefined }
  | { readonly session: null; readonly options: SubscriptionOptions; readonly handler?: undefined; readonly group: SharedGroup };

/** What a session's overlapping subscriptions add to one delivery (MQTT 5): identifiers, Retain As Published. */
interface DeliveryOptions {
  ids: number[] | undefined;
  retainAsPublished: boolean;
}

/** What became of an in-process publication (GatewayContext.publish). */
export type InProcessOutcome = 'routed' | 'denied' | 'expired';

/** Receives messages for an in-process subscription; must not throw (errors are logged). */
export type InProcessHandler = (message: Message) => void;

/**
 * What an adapter gets from the broker (DESIGN.md "Layering"): in-process publish and subscribe
 * through the same routing, retained handling and hooks as network clients, the hooks, and a
 * logger. Not the broker object itself.
 */
export interface GatewayContext {
  readonly logger: Logger;
  readonly hooks: Hooks;
  /**
   * Publishes as an in-process client; `source` names it in the outbox (default: the adapter's
   * name). Throws EdgewayError EDGEWAY_ERR_INVALID_TOPIC on an invalid topic. Says whether the
   * message was routed, refused by the authorisation hooks (an ACL), or had expired on its way.
   */
  publish(message: Message, source?: string): InProcessOutcome;
  /** Subscribes an in-process handler; returns the function that unsubscribes it. */
  subscribe(filter: string, handler: InProcessHandler): () => void;
  /** Why `publish` would refuse this topic (the broker's rules and limits), or null if it would not. */
  topicError(topic: string): string | null;
}

/** TLS (mqtts, wss) support, loaded with the first such listener (footprint of plain-TCP gateways). */
function loadTlsListener(): typeof import('./tls-listener') {
  return require('./tls-listener') as typeof import('./tls-listener');
}

/** MQTT over WebSockets (ws, wss), loaded with the first such listener. */
function loadWsListener(): typeof import('./ws-listener') {
  return require('./ws-listener') as typeof import('./ws-listener');
}

/** Why a verified client certificate is refused on a listener with useIdentityAsUsername. */
const NO_CERTIFICATE_CN = 'the client certificate has no single subject CN, which useIdentityAsUsername takes as the user name';

/** A listener as a URL for logs (`mqtts://0.0.0.0:8883`, `ws://127.0.0.1:8083/mqtt`), with the port it got once listening. */
function listenerName(spec: ListenerSpec, server: Server | undefined): string {
  const address = server?.address();
  const port = address !== null && typeof address === 'object' ? address.port : spec.port;
  const host = spec.host.includes(':') ? `[${spec.host}]` : spec.host;
  return `${spec.protocol}://${host}:${port}${spec.protocol === 'ws' || spec.protocol === 'wss' ? spec.path : ''}`;
}

/** Topics whose uplink decision is remembered at most (broker.uplinkTakes). */
const UPLINK_DECISIONS_MAX = 10_000;

/** Tree keys of in-process subscribers start with NUL, which no client identifier may contain. */
let inProcessCounter = 0;

type BrokerState = 'idle' | 'running' | 'stopping' | 'stopped';

/**
 * The MQTT broker core: listeners, connections, sessions, routing and retained messages.
 * Imports nothing from adapters/; adapters reach it through hooks and `publish`.
 */
export class Broker implements ConnectionHost {
  readonly metrics = new BrokerMetrics();
  readonly hooks = new Hooks();
  readonly limits: BrokerOptions['limits'];
  /** Connected clients by client id (state 'connected' only). */
  readonly clients = new Map<string, Connection>();
  /** Every session, connected or not, by client id. */
  readonly sessions = new Map<string, Session>();
  readonly subscriptions = new TopicTree<Subscriber>();
  /** Shared subscriptions by their whole `$share/…` filter. */
  readonly sharedGroups = new Map<string, SharedGroup>();
  readonly retained: RetainedMessages;
  readonly startedAt = Date.now();
  readonly parserPool = new ParserPool();
  /** Ends offline sessions when their expiry interval has passed. */
  private readonly sessionExpiry = new SessionExpiry(this.sessions, (session) => this.expireSession(session));
  /** MQTT 5 wills waiting for their Will Delay Interval. */
  readonly delayedWills = new DelayedWills((clientId, will) => this.publishWill(will, clientId));
  /** Connections open and opened per source address (limits.perAddress), checked at accept. */
  readonly addressLimits: AddressLimits;
  /** Failed-login back-off per source address (limits.loginBackoff), used by handlers/connect.ts. */
  readonly loginBackoff: LoginBackoff;
  /** Bytes of the messages waiting in all session queues together (limits.maxQueuedBytesTotal). */
  readonly queueBudget: ByteBudget;
  /** Bytes waiting to be sent on all connections together (limits.maxOutgoingBytesTotal; connection.ts). */
  readonly outgoingBudget: ByteBudget;

  private state: BrokerState = 'idle';
  private readonly servers: Server[] = [];
  /** The mqtts and wss listeners, whose certificates reloadCertificates() renews. */
  private readonly tlsListeners: { readonly spec: Extract<ListenerSpec, TlsListenerFiles>; readonly server: TlsServer }[] = [];
  /** Every open socket, including those that have not sent CONNECT yet. */
  private readonly connections = new Set<Connection>();
  private dirty: Connection[] = [];
  private flushScheduled = false;
  readonly sys: SysPublisher;
  private readonly limitLogs = new Map<LimitName, RateLimitedLog>();
  /**
   * Changes handed to storage (sessions, retained, outbox) so far. A PUBLISH handler compares it
   * before and after routing to know whether its acknowledgement must wait for a commit.
   */
  storageChanges = 0;
  /** The storage's session store, counting each change (see storageChanges); null without storage. */
  private readonly sessionStore: SessionStore | null;
  private readonly uplinkTopics: TopicTree<true> | null = null;
  private readonly uplinkDecisions = new Map<string, boolean>();
  /** Messages were added to the outbox in this turn of the event loop (one durable() at its end). */
  private outboxAdded = false;
  private storageTickScheduled = false;
  /** Settles the acknowledgements held in this turn (see durableBarrier). */
  private turnBarrier: { promise: Promise<void>; resolve: () => void; reject: (err: unknown) => void } | null = null;
  private readonly storageFailLog: RateLimitedLog;
  private readonly handlerErrorLog = new RateLimitedLog((m, f) => this.logger.error(m, f));
  /** Publications refused by authorizePublish (clients, wills, in-process publishers), logged at a bounded rate. */
  private readonly deniedLog = new RateLimitedLog((m, f) => this.logger.warn(m, f));

  constructor(
    readonly options: BrokerOptions,
    readonly logger: Logger,
  ) {
    this.limits = options.limits;
    this.retained = new RetainedMessages(options.limits.maxRetained, options.limits.maxRetainedBytes);
    this.queueBudget = new ByteBudget(options.limits.maxQueuedBytesTotal);
    this.outgoingBudget = new ByteBudget(options.limits.maxOutgoingBytesTotal);
    this.sys = new SysPublisher(this, options.sysInterval, options.version);
    this.sessionStore = options.storage === undefined ? null : countingSessionStore(options.storage.sessions, this);
    if (options.uplink !== undefined) {
      this.uplinkTopics = new TopicTree<true>();
      for (const filter of options.uplink.topics) this.uplinkTopics.set(filter, filter, true);
    }
    this.storageFailLog = new RateLimitedLog((m, f) => this.logger.error(m, f));
    const { perAddress, loginBackoff } = options.limits;
    this.addressLimits = new AddressLimits(perAddress);
    // Waiting logins per address are capped like its connections, loopback included.
    this.loginBackoff = new LoginBackoff(loginBackoff, perAddress.maxTracked, perAddress.maxConnections, {
      failed: (address, failures, delayMs) => this.limitHit('loginFailures', 'login failed', { address, failures, delayMs }),
      delayed: (address, failures, delayMs) => this.limitHit('loginDelayed', 'login attempt delayed: failed logins from this address', { address, failures, delayMs }),
      queueFull: (address, maxWaiting) => this.limitHit('loginQueueFull', 'login attempt refused: too many waiting from this address', { address, maxWaiting }),
    });
  }

  get maxPacketSize(): number {
    return this.limits.maxPacketSize;
  }

  get backpressureTimeout(): number {
    return this.limits.backpressureTimeout;
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** Opens every listener; on failure closes the ones already open and rejects. Idempotent. */
  async start(listeners: readonly ListenerSpec[]): Promise<AddressInfo[]> {
    if (this.state === 'running') return this.addresses();
    if (this.state !== 'idle') throw new EdgewayError('EDGEWAY_ERR_STOPPED', 'broker was stopped; create a new one');
    this.state = 'running';
    this.loadRetained();
    this.loadSessions();
    try {
      for (const spec of listeners) await this.listen(spec);
    } catch (err) {
      await this.stop();
      throw err;
    }
    this.sys.start();
    return this.addresses();
  }

  /** Restores the stored retained messages before any client can subscribe. */
  private loadRetained(): void {
    const store = this.options.storage?.retained;
    if (store === undefined) return;
    let loaded = 0;
    const now = Date.now();
    for (const msg of store.load()) {
      if (hasExpired(msg, now)) {
        store.save(msg.topic, null); // expired while the gateway was down
        continue;
      }
      const stored = this.retained.store(msg);
      if (stored === 'ok') loaded++;
      else this.limitHit(stored, 'stored retained message not restored: limit reached', { topic: msg.topic });
    }
    this.logger.info('retained messages restored', { count: loaded });
  }

  /**
   * Restores the stored persistent sessions (subscriptions, queued and inflight messages, incoming
   * QoS 2 ids) before any client can connect. Beyond limits.maxSessions the most recently used
   * are kept; the others are deleted from the store and their messages counted as dropped.
   */
  private loadSessions(): void {
    const store = this.sessionStore;
    if (store === null || this.options.storage === undefined) return;
    const stored = this.options.storage.sessions.load();
    // Connected when the gateway stopped (null) counts as the most recent.
    stored.sort((a, b) => (b.disconnectedAt ?? Infinity) - (a.disconnectedAt ?? Infinity));
    let messages = 0;
    let expired = 0;
    const now = Date.now();
    for (const s of stored) {
      // Expired while the gateway was down: it ends now (MQTT 5.0 section 3.1.2.11.2).
      if (s.disconnectedAt !== null && expiryTime(s.disconnectedAt, s.expiryInterval) <= now) {
        store.sessionDeleted(s.clientId);
        expired++;
        continue;
      }
      if (this.sessions.size >= this.limits.maxSessions) {
        this.metrics.publishDropped += s.messages.length;
        this.limitHit('maxSessions', 'stored session not restored: maxSessions reached', { clientId: s.clientId, droppedMessages: s.messages.length, maxSessions: this.limits.maxSessions });
        store.sessionDeleted(s.clientId);
        continue;
      }
      const session = new Session(s.clientId, s.expiryInterval, this.limits.maxQueued, this.limits.maxQueuedBytes, this.queueBudget, store);
      // The most recently used sessions come first: they keep their messages when the budget runs out.
      const dropped = session.restore(s);
      if (dropped.maxQueued > 0) {
        this.metrics.publishDropped += dropped.maxQueued;
        this.limitHit('maxQueued', 'stored queued messages beyond the queue limits not restored', { clientId: s.clientId, dropped: dropped.maxQueued, maxQueued: this.limits.maxQueued, maxQueuedBytes: this.limits.maxQueuedBytes });
      }
      if (dropped.maxQueuedBytesTotal > 0) {
        this.metrics.publishDropped += dropped.maxQueuedBytesTotal;
        this.limitHit('maxQueuedBytesTotal', 'stored queued messages beyond the global queue budget not restored', { clientId: s.clientId, dropped: dropped.maxQueuedBytesTotal, maxQueuedBytesTotal: this.limits.maxQueuedBytesTotal });
      }
      this.sessions.set(s.clientId, session);
      for (const [filter, options] of session.subscriptions) this.route(session, filter, options);
      messages += session.queue.length + session.inflight.size;
      this.sessionExpiry.watch(session);
    }
    this.logger.info('persistent sessions restored', { count: this.sessions.size, messages, expired });
  }

  addresses(): AddressInfo[] {
    return this.servers.map((s) => s.address() as AddressInfo);
  }

  private listen(spec: ListenerSpec): Promise<void> {
    let server: Server;
    try {
      server = this.createServer(spec);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const where = `${spec.host}:${spec.port}`;
        if (err.code === 'EADDRINUSE') {
          reject(new EdgewayError('EDGEWAY_ERR_ADDR_IN_USE', `cannot listen on ${where}: address already in use (is another MQTT broker running?)`));
        } else {
          reject(new EdgewayError('EDGEWAY_ERR_LISTEN', `cannot listen on ${where}: ${err.code ?? err.message}`));
        }
      });
      server.listen({ host: spec.host, port: spec.port }, () => {
        server.removeAllListeners('error');
        // After listening, a server error must not crash the process: log it and keep serving.
        server.on('error', (err) => this.logger.error('listener error', { error: err.message }));
        this.servers.push(server);
        if (spec.protocol === 'mqtts' || spec.protocol === 'wss') this.tlsListeners.push({ spec, server: server as TlsServer });
        const addr = server.address() as AddressInfo;
        this.logger.info('listening', { protocol: spec.protocol, address: addr.address, port: addr.port, ...(spec.protocol === 'ws' || spec.protocol === 'wss' ? { path: spec.path } : {}) });
        resolve();
      });
    });
  }

  /**
   * The server of one listener. TLS and WebSocket code is required here, on first use, so a
   * gateway with plain-TCP listeners only never loads `node:tls`, `node:http` or `ws`.
   */
  private createServer(spec: ListenerSpec): Server {
    // The port the listener got (port 0 in tests) is known only once it listens: named on use.
    let server: Server | undefined;
    const name = (): string => listenerName(spec, server);
    const onSocket = (socket: Transport, certificateUsername?: string): void => this.handleSocket(socket, certificateUsername);
    switch (spec.protocol) {
      case 'mqtt': {
        // Admission is a 'connection' listener too, added first: it runs before handleSocket.
        server = net.createServer();
        this.admitAtAccept(server);
        server.on('connection', (socket: net.Socket) => {
          if (!socket.destroyed) onSocket(socket);
        });
        return server;
      }
      case 'mqtts': {
        const tls = loadTlsListener();
        const events = this.tlsEvents(name);
        server = tls.createMqttsServer(spec, name(), this.limits.connectTimeout, events, (socket) => {
          if (!spec.useIdentityAsUsername) return onSocket(socket);
          const cn = tls.certificateCommonName(socket);
          if (cn === null) {
            const remote = tls.remoteOf(socket);
            socket.destroy();
            events.handshakeFailed(NO_CERTIFICATE_CN, remote);
            return;
          }
          onSocket(socket, cn);
        });
        this.admitAtAccept(server, tls.markRefusedAtAccept);
        return server;
      }
      case 'ws':
      case 'wss': {
        const tls = spec.protocol === 'wss' ? loadTlsListener() : undefined;
        const refusedLog = new RateLimitedLog((m, f) => this.logger.warn(m, f));
        const ws = loadWsListener().createWsServer({
          path: spec.path,
          tls: spec.protocol === 'wss' ? tls?.tlsServerOptions(spec, name(), this.limits.connectTimeout) : undefined,
          maxPayload: this.limits.maxPacketSize,
          requestTimeoutMs: this.limits.connectTimeout,
          identify:
            tls !== undefined && spec.protocol === 'wss' && spec.useIdentityAsUsername
              ? (socket) => tls.certificateCommonName(socket) ?? new Error(NO_CERTIFICATE_CN)
              : undefined,
          onConnection: onSocket,
          onRefused: (reason, remote) => {
            this.metrics.webSocketRefused++;
            refusedLog.emit('WebSocket listener refused a request', { listener: name(), reason, remote, count: this.metrics.webSocketRefused });
          },
        });
        if (tls !== undefined) tls.watchHandshakes(ws as TlsServer, this.tlsEvents(name));
        server = ws;
        this.admitAtAccept(ws, tls?.markRefusedAtAccept);
        return ws;
      }
    }
  }

  /**
   * Per-address caps (limits.perAddress), applied to every TCP socket as it is accepted — on TLS
   * and WebSocket listeners before the handshake or HTTP upgrade, which cost far more than a plain
   * accept and would otherwise be free to flood. The count is given back when that socket closes.
   * `refused`: told of each socket closed here (a TLS server still reports it as a failed handshake).
   */
  private admitAtAccept(server: Server, refused?: (raw: net.Socket) => void): void {
    server.on('connection', (raw: net.Socket) => {
      const admission = this.addressLimits.admit(raw.remoteAddress);
      if (admission.admitted) {
        const { address } = admission;
        // Untracked (exempt loopback): nothing to give back, no listener to pay for.
        if (address !== null) raw.once('close', () => this.addressLimits.release(address));
        return;
      }
      // Nothing was read: closing now is the cheapest answer, and no CONNACK can be sent anyway.
      raw.destroy();
      refused?.(raw);
      const { maxConnections, connectionsPerSecond, connectionBurst } = this.limits.perAddress;
      if (admission.limit === 'perAddressConnections') this.limitHit(admission.limit, 'connection closed at accept: too many open from this address', { address: admission.address, maxConnections });
      else this.limitHit(admission.limit, 'connection closed at accept: this address connects too often', { address: admission.address, connectionsPerSecond, connectionBurst });
    });
  }

  /** Counts failed handshakes of one TLS listener and logs them at a bounded rate. */
  private tlsEvents(listener: () => string): TlsEvents {
    const log = new RateLimitedLog((m, f) => this.logger.warn(m, f));
    return {
      handshakeFailed: (reason, remote) => {
        this.metrics.tlsHandshakeFailures++;
        log.emit('TLS handshake failed; connection closed', { listener: listener(), reason, remote, count: this.metrics.tlsHandshakeFailures });
      },
    };
  }

  /**
   * Re-reads the certificate, key and CA of every TLS listener (SIGHUP: renewed certificates).
   * New connections use the new files; established ones keep theirs. A listener whose files
   * cannot be read or used keeps its old certificate, and the error says why.
   */
  reloadCertificates(): { readonly listener: string; readonly error?: string }[] {
    if (this.tlsListeners.length === 0) return [];
    const tls = loadTlsListener();
    return this.tlsListeners.map(({ spec, server }) => {
      const listener = listenerName(spec, server);
      try {
        tls.reloadSecureContext(server, spec, listener);
        this.logger.info('TLS certificates reloaded', { listener, cert: spec.cert });
        return { listener };
      } catch (err) {
        this.logger.error('TLS certificates not reloaded; the listener keeps its current ones', { listener, error: errorMessage(err) });
        return { listener, error: errorMessage(err) };
      }
    });
  }

  /**
   * Closes listeners and all connections (wills of connected clients are published, as on any
   * ungraceful server-side close). Idempotent; bounded by `timeoutMs`.
   */
  async stop(timeoutMs = 5000): Promise<void> {
    if (this.state === 'stopped' || this.state === 'stopping') return;
    this.state = 'stopping';
    this.sys.stop();
    this.sessionExpiry.stop();
    const closing = this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    for (const conn of [...this.connections]) conn.close('server-shutdown', 'broker stopping', true);
    // HTTP requests of a ws/wss listener that never became a WebSocket would hold its close.
    for (const s of this.servers) (s as Server & { closeAllConnections?: () => void }).closeAllConnections?.();
    this.delayedWills.flush();
    this.flush();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(closing), new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    if (timer) clearTimeout(timer);
    this.servers.length = 0;
    this.tlsListeners.length = 0;
    this.state = 'stopped';
  }

  /**
   * Takes ownership of an accepted connection: a TCP socket, a TLS socket after its handshake, or
   * a WebSocket. `certificateUsername`: the CN of a verified client certificate on a listener with
   * useIdentityAsUsername (handlers/connect.ts uses it instead of the CONNECT user name). Its TCP
   * socket passed the per-address caps at accept (admitAtAccept).
   */
  handleSocket(socket: Transport, certificateUsername?: string): void {
    if (this.state !== 'running') {
      socket.destroy();
      return;
    }
    this.metrics.connectionsAccepted++;
    const conn = new Connection(socket, this);
    if (certificateUsername !== undefined) conn.certificateUsername = certificateUsername;
    this.connections.add(conn);
    conn.start(this.limits.connectTimeout);
  }

  // ---- ConnectionHost ----

  onPacket(conn: Connection, packet: Packet): void {
    this.metrics.packetsReceived++;
    try {
      dispatchPacket(this, conn, packet);
    } catch (err) {
      this.onHandlerError(conn, packet, err);
    }
  }

  /**
   * A bug in a packet handler (or a hook that broke its "must not throw" contract) costs the one
   * connection whose packet hit it, not the process: thrown out of a socket's 'data' event it would
   * be an uncaught exception (the fuzzer found three such packets, issue 9). The handler may have
   * left the connection's state half-changed, so it is closed; counted and logged at a bounded rate.
   */
  private onHandlerError(conn: Connection, packet: Packet, err: unknown): void {
    this.metrics.handlerErrors++;
    this.handlerErrorLog.emit('internal error while handling a packet; connection closed', {
      clientId: conn.clientId,
      remote: conn.remote,
      packet: packet.cmd,
      error: err instanceof Error ? (err.stack ?? err.message) : String(err),
      count: this.metrics.handlerErrors,
    });
    conn.close('internal-error', `internal error handling ${packet.cmd}`);
  }

  onParseError(conn: Connection, err: Error): void {
    handleParseError(this, conn, err);
  }

  onClose(conn: Connection, reason: CloseReason, detail: string): void {
    this.connections.delete(conn);
    if (conn.loginAttempt !== null) {
      this.loginBackoff.abandon(conn.loginAttempt);
      conn.loginAttempt = null;
    }
    // Counted here, before the early return below, as an oversized packet may come before CONNECT.
    if (reason === 'packet-too-large') {
      this.limitHit('maxPacketSize', 'packet larger than maxPacketSize; client disconnected', { remote: conn.remote, clientId: conn.clientId, maxPacketSize: this.limits.maxPacketSize });
    } else if (reason === 'connect-timeout') {
      this.limitHit('connectTimeout', 'connection closed: no CONNECT in time', { remote: conn.remote, connectTimeout: this.limits.connectTimeout });
    }
    if (conn.clientId === '' || this.clients.get(conn.clientId) !== conn) {
      // Limits hit are logged above at a bounded rate: a flood of such sockets must not flood the log.
      if (reason !== 'socket-closed' && reason !== 'connect-refused' && reason !== 'connect-timeout' && reason !== 'packet-too-large') {
        this.logger.info('connection closed before CONNECT completed', { remote: conn.remote, reason, detail });
      }
      return;
    }
    this.clients.delete(conn.clientId);
    const session = conn.session;
    if (session !== null && session.owner === conn.generation) {
      // Not while stopping: every member is leaving, and the messages are safer where they are.
      if (this.sharedGroups.size > 0 && this.state === 'running') this.redistributeShared(session);
      if (session.expiryInterval === 0) {
        this.destroySession(session);
      } else {
        session.setOwner(null);
        this.sessionExpiry.watch(session);
      }
    }
    const level = reason === 'client-disconnect' || reason === 'socket-closed' || reason === 'server-shutdown' ? 'info' : 'warn';
    this.logger[level]('client disconnected', { clientId: conn.clientId, remote: conn.remote, reason, detail });
    // [MQTT-3.1.2-8] the will is published on any close other than DISCONNECT
    // (and [MQTT-3.1.2-10] the DISCONNECT handler clears it); with an MQTT 5 Will Delay Interval,
    // once that has passed or the session ended, unless the session is resumed first.
    const will = conn.will;
    conn.will = null;
    // A will is a publication of its client: one to a topic it may not write is dropped here, when
    // it would be published — as Mosquitto 2.0 does (the CONNECT carrying it is not refused).
    if (will !== null && (this.hooks.authorizePublish.length === 0 || this.mayPublish(clientInfo(conn), conn.clientId, will.topic))) {
      const delay = conn.mqtt5?.willDelay ?? 0;
      if (delay > 0 && session !== null && this.sessions.get(conn.clientId) === session && session.owner === null) {
        this.delayedWills.schedule(conn.clientId, will, Math.min(delay, session.expiryInterval));
      } else {
        this.publishWill(will, conn.clientId);
      }
    }
    const info = clientInfo(conn);
    for (const hook of this.hooks.clientDisconnected) hook(info);
  }

  scheduleFlush(conn: Connection): void {
    this.dirty.push(conn);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // setImmediate, not nextTick: the writes caused by every socket read in this turn of the
      // event loop go out in one write per subscriber.
      setImmediate(this.flush);
    }
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    const dirty = this.dirty;
    this.dirty = [];
    for (const conn of dirty) conn.flushOutput();
  };

  onBackpressureTimeout(conn: Connection): void {
    this.limitHit('backpressureTimeouts', 'a subscriber did not drain in time; resuming its publisher', { clientId: conn.clientId, timeoutMs: this.limits.backpressureTimeout });
  }

  onHeldAckLimit(conn: Connection): void {
    this.limitHit('heldAcks', 'client holds too many acknowledgements waiting for storage; reading it paused', { clientId: conn.clientId, limit: MAX_HELD_ACKS });
  }

  countBytesReceived(n: number): void {
    this.metrics.bytesReceived += n;
  }

  countBytesSent(n: number): void {
    this.metrics.packetsSent++;
    this.metrics.bytesSent += n;
  }

  // ---- limits ----

  /** Counts a limit hit and logs it at a bounded rate. */
  limitHit(limit: LimitName, msg: string, fields: Record<string, string | number>): void {
    this.metrics.limitHits[limit]++;
    let log = this.limitLogs.get(limit);
    if (log === undefined) {
      log = new RateLimitedLog((m, f) => this.logger.warn(m, f));
      this.limitLogs.set(limit, log);
    }
    log.emit(msg, { limit, ...fields, count: this.metrics.limitHits[limit] });
  }

  // ---- authorisation (hooks.ts: authorizePublish, authorizeSubscribe, authorizeRead) ----

  /**
   * May `client` (null: the in-process publisher `source`) publish to `topic`? First deny wins; a
   * refusal is counted and logged at a bounded rate. Callers check the hook array's length first,
   * so a gateway without hooks pays one comparison.
   */
  mayPublish(client: ClientInfo | null, source: string, topic: string): boolean {
    for (const hook of this.hooks.authorizePublish) {
      if (hook(client, source, topic)) continue;
      this.metrics.denied.publish++;
      this.deniedLog.emit('publication not authorised; message dropped', { clientId: client?.clientId ?? source, username: client?.username, topic, count: this.metrics.denied.publish });
      return false;
    }
    return true;
  }

  /** May `client` subscribe to `filter`? Counted when refused (the client learns it from SUBACK). */
  maySubscribe(client: ClientInfo, filter: string): boolean {
    for (const hook of this.hooks.authorizeSubscribe) {
      if (hook(client, filter)) continue;
      this.metrics.denied.subscribe++;
      return false;
    }
    return true;
  }

  /**
   * May the client of `session` receive a message on `topic`? Checked per delivery, because a
   * wildcard subscription can match topics its client may not read. A session restored from
   * storage whose client has not connected since has no identity yet: its messages are checked
   * when they are sent (pump).
   */
  private mayRead(session: Session, topic: string): boolean {
    if (this.readAllowed(session, topic)) return true;
    this.metrics.denied.read++;
    return false;
  }

  /** mayRead without counting a refusal (a caller that tries other sessions counts once itself). */
  private readAllowed(session: Session, topic: string): boolean {
    const client = session.client;
    if (client === null) return true;
    for (const hook of this.hooks.authorizeRead) if (!hook(client, topic)) return false;
    return true;
  }

  /**
   * Closes the connected clients `revoked` picks (a reload removed their user or changed its
   * password): MQTT 5 clients get DISCONNECT 0x98 "administrative action". Returns how many.
   */
  disconnectClients(revoked: (client: ClientInfo) => boolean, detail: string): number {
    let closed = 0;
    for (const conn of [...this.clients.values()]) {
      if (!revoked(clientInfo(conn))) continue;
      conn.close('auth-revoked', detail);
      closed++;
    }
    return closed;
  }

  // ---- subscriptions ----

  /** Adds or replaces a subscription of `session`: kept in the session, routed in the topic tree. */
  subscribe(session: Session, filter: string, options: SubscriptionOptions): void {
    session.setSubscription(filter, options);
    this.route(session, filter, options);
  }

  /** Removes a subscription of `session`; false if it had none with exactly this filter [MQTT-3.10.4-1]. */
  unsubscribe(session: Session, filter: string): boolean {
    if (!session.removeSubscription(filter)) return false;
    this.unroute(session, filter);
    return true;
  }

  /** Puts a subscription in the topic tree: the session under its filter, or into its shared group. */
  private route(session: Session, filter: string, options: SubscriptionOptions): void {
    const shared = sharedFilter(filter);
    if (shared === null) {
      this.subscriptions.set(filter, session.clientId, { session, options });
      return;
    }
    let group = this.sharedGroups.get(filter);
    if (group === undefined) {
      group = new SharedGroup(filter, shared);
      this.sharedGroups.set(filter, group);
      this.subscriptions.set(group.filter, sharedKey(group), { session: null, options: SHARED_OPTIONS, group });
    }
    group.set(session, options);
  }

  private unroute(session: Session, filter: string): void {
    const group = this.sharedGroups.get(filter);
    if (group === undefined) {
      this.subscriptions.delete(filter, session.clientId);
      return;
    }
    group.remove(session);
    if (group.size > 0) return;
    this.sharedGroups.delete(filter);
    this.subscriptions.delete(group.filter, sharedKey(group));
  }

  private readonly isConnected = (session: Session): boolean => this.connectionOf(session) !== undefined;

  /**
   * Delivers `msg` to one member of a shared subscription, in turn (shared-subscriptions.ts), with
   * that member's options; never to `except`. False when no member can take it.
   */
  private deliverShared(group: SharedGroup, msg: Message, origin: Connection | null, except?: Session): boolean {
    const checkRead = this.hooks.authorizeRead.length > 0;
    let unreadable = false;
    // A member whose client may not read the topic is passed over, not handed a message deliver()
    // would then drop: another member that may read it takes it (as the other members would have
    // had the first one never subscribed). Dropped, and counted once, only when none may.
    const member = group.pick(this.isConnected, msg.qos > 0, (session) => {
      if (session === except) return false;
      if (!checkRead || this.readAllowed(session, msg.topic)) return true;
      unreadable = true;
      return false;
    });
    if (member === undefined) {
      if (unreadable) this.metrics.denied.read++;
      return false;
    }
    const { options } = member;
    const qos = (options.qos < msg.qos ? options.qos : msg.qos) as QoS;
    const ids = options.subscriptionId === undefined ? undefined : [options.subscriptionId];
    this.deliver(member.session, withSubscriptionIds(msg, ids), qos, options.retainAsPublished && msg.retain, origin, { group: group.key, message: msg });
    return true;
  }

  /**
   * A member of shared subscriptions is leaving: the messages of those subscriptions it has not
   * been sent yet, and the QoS 1 ones it has not acknowledged, go to another connected member
   * (MQTT 5.0 section 4.8.2 allows it for QoS 1 once the connection is lost; QoS 2 ones already
   * sent stay, [MQTT-4.8.2-4]). Without another connected member they stay with the session.
   */
  private redistributeShared(session: Session): void {
    const taken = session.takeShared((key) => this.sharedGroups.get(key)?.hasConnected(this.isConnected, session) === true);
    if (taken.length === 0) return;
    let moved = 0;
    for (const item of taken) {
      const group = this.sharedGroups.get(item.shared.group);
      if (group !== undefined && this.deliverShared(group, item.shared.message, null, session)) moved++;
    }
    this.logger.info('shared subscription messages handed to other members', { clientId: session.clientId, moved, lost: taken.length - moved });
  }

  // ---- sessions ----

  /** Publishes a will now; its Message Expiry Interval counts from here. */
  private publishWill(will: Message, clientId: string): void {
    this.publish(withExpiry(will, Date.now()), null, clientId);
  }

  /** An offline session reached its expiry: it ends with everything in it. */
  private expireSession(session: Session): void {
    this.logger.info('session expired', { clientId: session.clientId, expiryInterval: session.expiryInterval, droppedMessages: session.queue.length + session.inflight.size });
    this.destroySession(session);
  }

  destroySession(session: Session): void {
    for (const filter of session.subscriptions.keys()) this.unroute(session, filter);
    session.clear();
    if (this.sessions.get(session.clientId) !== session) return;
    this.sessions.delete(session.clientId);
    // The session ends: a will waiting for its delay goes out now [MQTT-3.1.2-8].
    this.delayedWills.publishNow(session.clientId);
  }

  /**
   * Creates a session, first making room under limits.maxSessions by evicting the session that has
   * been offline longest (its queued messages go with it, counted as dropped). Returns null when
   * every session belongs to a connected client.
   */
  createSession(clientId: string, expiryInterval: number): Session | null {
    if (this.sessions.size >= this.limits.maxSessions) {
      let oldest: Session | undefined;
      for (const candidate of this.sessions.values()) {
        if (candidate.owner === null && (oldest === undefined || candidate.disconnectedAt < oldest.disconnectedAt)) oldest = candidate;
      }
      if (oldest === undefined) return null;
      const lost = oldest.queue.length + oldest.inflight.size;
      this.metrics.publishDropped += lost;
      this.limitHit('maxSessions', 'session store full; the longest-offline session was discarded', { evictedClientId: oldest.clientId, droppedMessages: lost, maxSessions: this.limits.maxSessions });
      this.destroySession(oldest);
    }
    const session = new Session(clientId, 0, this.limits.maxQueued, this.limits.maxQueuedBytes, this.queueBudget, this.sessionStore);
    session.setExpiryInterval(expiryInterval);
    this.sessions.set(clientId, session);
    return session;
  }

  /** The connection that currently owns `session`, if the client is connected. */
  connectionOf(session: Session): Connection | undefined {
    if (session.owner === null) return undefined;
    const conn = this.clients.get(session.clientId);
    return conn !== undefined && conn.generation === session.owner ? conn : undefined;
  }

  // ---- routing ----

  /**
   * Routes an accepted message: retained store, then every matching session once, at the highest
   * granted QoS of its overlapping subscriptions (3.1.1 section 3.3.5). `origin` is the publishing
   * connection (for backpressure), or null for in-process publishers (serial, wills, $SYS), then
   * named by `source` in the outbox. Returns false when nothing took the message: no subscriber
   * and not the outbox (MQTT 5 acknowledges that with "no matching subscribers").
   */
  publish(msg: Message, origin: Connection | null, source = 'gateway'): boolean {
    // Retained and QoS 1/2 messages may be kept (store, queues, inflight); QoS 0 is only copied
    // into outgoing packets, so only the former need a payload of their own.
    if (msg.retain || msg.qos > 0) msg = ownPayload(msg);
    if (msg.retain) {
      const stored = this.retained.store(msg);
      if (stored !== 'ok') {
        this.limitHit(stored, 'retained message store full; retained copy not kept', { topic: msg.topic, maxRetained: this.limits.maxRetained, maxRetainedBytes: this.limits.maxRetainedBytes });
      } else if (this.options.storage !== undefined && !msg.topic.startsWith('$SYS/')) {
        // $SYS values are regenerated at start; everything else survives a restart.
        this.options.storage.retained.save(msg.topic, msg.payload.length === 0 ? null : msg);
        this.storageChanges++;
      }
    }
    const from = origin === null ? source : origin.clientId;
    let taken = false;
    const uplink = this.options.uplink;
    if (uplink !== undefined && this.uplinkTopics !== null && (origin !== null || uplink.skipSource?.(from) !== true)) taken = this.toOutbox(uplink.outbox, msg, from);
    if (this.hooks.published.length > 0) {
      const info = origin === null ? null : clientInfo(origin);
      for (const hook of this.hooks.published) hook(msg, info, from);
    }
    const targets = new Map<string, Subscriber>();
    // MQTT 5 options that change one session's delivery, gathered only when a subscription has them.
    let special: Map<Session, DeliveryOptions> | undefined;
    let groups: SharedGroup[] | undefined;
    const originId = origin === null ? undefined : origin.clientId;
    this.subscriptions.match(msg.topic, (clientId, sub) => {
      if (sub.group !== undefined) {
        (groups ??= []).push(sub.group);
        return;
      }
      const options = sub.options;
      if (options.noLocal && clientId === originId) return; // [MQTT-3.8.3-3]
      if (sub.session !== null && (options.subscriptionId !== undefined || (options.retainAsPublished && msg.retain))) {
        special = addDeliveryOptions(special ?? new Map(), sub.session, options);
      }
      const prev = targets.get(clientId);
      if (prev === undefined || options.qos > prev.options.qos) targets.set(clientId, sub);
    });
    // A shared subscription gets its own copy, besides any of the member's own subscriptions (4.8.2).
    if (groups !== undefined) for (const group of groups as SharedGroup[]) this.deliverShared(group, msg, origin);
    if (targets.size === 0) return taken || groups !== undefined;
    // Encode once for every QoS 0 recipient of the same protocol family (convention 7); an MQTT 5
    // client that takes topic aliases gets its own.
    let shared: Buffer | undefined;
    let sharedV5: Buffer | undefined;
    // The clock only matters for a message that expires (its remaining interval).
    const now = msg.expiresAt === undefined ? 0 : Date.now();
    const specials = special as Map<Session, DeliveryOptions> | undefined;
    for (const sub of targets.values()) {
      if (sub.session === null) {
        this.callInProcess(sub.handler as InProcessHandler, msg); // shared groups are not targets
        continue;
      }
      const qos = (sub.options.qos < msg.qos ? sub.options.qos : msg.qos) as QoS;
      const options = specials?.get(sub.session);
      if (options !== undefined) {
        // Retain As Published [MQTT-3.3.1-12] [MQTT-3.3.1-13]; identifiers make the packet this session's own.
        this.deliver(sub.session, withSubscriptionIds(msg, options.ids), qos, options.retainAsPublished && msg.retain, origin);
        continue;
      }
      if (qos !== 0) {
        this.deliver(sub.session, msg, qos, false, origin);
        continue;
      }
      const conn = this.connectionOf(sub.session);
      if (conn === undefined) continue; // QoS 0 is not queued for absent clients (3.1.1 section 3.1.2.4)
      if (this.hooks.authorizeRead.length > 0 && !this.mayRead(sub.session, msg.topic)) continue;
      const state = conn.mqtt5;
      let bytes: Buffer | null;
      if (state === null) {
        bytes = shared ??= encodePublish(msg, 0, false, false, 0, 4);
      } else if (state.outAliases === null) {
        bytes = sharedV5 ??= encodePublishV5WithoutAlias(msg, 0, false, false, 0, forwardedProperties(msg, now));
        if (bytes.length > state.maxPacketSize) bytes = null;
      } else {
        bytes = encodePublishV5(state, msg, 0, false, false, 0, forwardedProperties(msg, now));
      }
      if (bytes === null) this.tooLargeForClient(conn, msg);
      else this.writeQos0(conn, bytes, origin);
    }
    return true;
  }

  // ---- storage: outbox and durable acknowledgements ----

  /** Whether the uplink takes `topic`: a tree walk, remembered per topic (sensors repeat theirs). */
  private uplinkTakes(topic: string): boolean {
    let selected = this.uplinkDecisions.get(topic);
    if (selected !== undefined) return selected;
    selected = false;
    this.uplinkTopics?.match(topic, () => {
      selected = true;
    });
    // Bounded: a client inventing topics only costs the walk again after the cache restarts.
    if (this.uplinkDecisions.size >= UPLINK_DECISIONS_MAX) this.uplinkDecisions.clear();
    this.uplinkDecisions.set(topic, selected);
    return selected;
  }

  /**
   * Adds a message to the outbox if the uplink takes its topic (true), at once (see Outbox.add:
   * inputs kept until the end of the turn were pretenured by V8); its durability is awaited once
   * per turn.
   */
  private toOutbox(outbox: Outbox, msg: Message, source: string): boolean {
    if (!this.uplinkTakes(msg.topic)) return false;
    // The payload may still be a view of the socket chunk: the outbox copies what it keeps (the
    // SQLite one encodes it into a block at once), so no copy per message here.
    outbox.add({ topic: msg.topic, payload: msg.payload, qos: msg.qos, retain: msg.retain, arrivedAt: Date.now(), source, properties: msg.properties });
    this.outboxAdded = true;
    this.storageChanges++;
    this.scheduleStorageTick();
    return true;
  }

  /**
   * The commit an acknowledgement must wait for: none when nothing stored changed since `before`
   * (a `storageChanges` value read before handling the packet), else this turn's barrier.
   */
  durableSince(before: number): Promise<void> | null {
    return this.storageChanges === before ? null : this.durableBarrier();
  }

  /**
   * A promise that settles once everything stored in this turn of the event loop is durable: the
   * outbox batch appended and the storage's commit done. One per turn, shared by every
   * acknowledgement held in it.
   */
  durableBarrier(): Promise<void> {
    if (this.turnBarrier === null) {
      let resolve!: () => void;
      let reject!: (err: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      // Handled here too: should every acknowledgement waiting for it be dropped (their
      // connections closed), a rejection must not become an unhandled one.
      promise.catch(() => undefined);
      this.turnBarrier = { promise, resolve, reject };
      this.scheduleStorageTick();
    }
    return this.turnBarrier.promise;
  }

  private scheduleStorageTick(): void {
    if (this.storageTickScheduled) return;
    this.storageTickScheduled = true;
    // setImmediate: every message read in this turn goes into one append (one group commit).
    setImmediate(this.storageTick);
  }

  private readonly storageTick = (): void => {
    this.storageTickScheduled = false;
    const barrier = this.turnBarrier;
    this.turnBarrier = null;
    const waits: Promise<unknown>[] = [];
    if (this.outboxAdded && this.options.uplink !== undefined) {
      this.outboxAdded = false;
      waits.push(this.outboxDurable(this.options.uplink.outbox));
    }
    if (barrier === null) return;
    if (this.options.storage !== undefined) waits.push(this.options.storage.durable());
    Promise.all(waits).then(barrier.resolve, barrier.reject);
  };

  private outboxDurable(outbox: Outbox): Promise<unknown> {
    const durable = outbox.durable();
    // The outbox counts and logs refusals (a full outbox under drop-new) and failed commits; a
    // failure must not become an unhandled rejection when no acknowledgement waits for it.
    durable.catch(() => undefined);
    return durable;
  }

  /**
   * The storage closed before the commit that acknowledgements of `conn` waited for (failed
   * commits are retried and do not end here). The messages are not durable, so
   * they are not acknowledged: the connection is closed, and the client sends them again when it
   * reconnects.
   */
  onStorageFailure(conn: Connection, err: unknown): void {
    this.metrics.storageFailures++;
    this.storageFailLog.emit('storage closed before a commit; unacknowledged messages will be re-sent by the client', { clientId: conn.clientId, error: errorMessage(err) });
    conn.close('storage-failure', `storage closed before the commit: ${errorMessage(err)}`);
  }

  private callInProcess(handler: InProcessHandler, msg: Message): void {
    try {
      handler(msg);
    } catch (err) {
      this.logger.error('in-process subscriber failed', { topic: msg.topic, error: errorMessage(err) });
    }
  }

  /** The narrow interface adapters use; `name` tags their log lines. */
  context(name: string): GatewayContext {
    const base = this.logger;
    const tag = (fields?: LogFields): LogFields => ({ adapter: name, ...fields });
    const logger: Logger = {
      debug: (m, f) => base.debug(m, tag(f)),
      info: (m, f) => base.info(m, tag(f)),
      warn: (m, f) => base.warn(m, tag(f)),
      error: (m, f) => base.error(m, tag(f)),
    };
    return {
      logger,
      hooks: this.hooks,
      publish: (message, source) => this.publishInProcess(message, source ?? name),
      topicError: (topic) => topicNameError(topic, this.limits.maxTopicLevels)?.message ?? null,
      subscribe: (filter, handler) => this.subscribeInProcess(filter, handler),
    };
  }

  /**
   * Publish from inside the process (serial readings, downlink): validated like a client's PUBLISH;
   * a Message Expiry Interval among its properties counts from now, as for a client's — unless the
   * message comes with its `expiresAt` (from another gateway of a cluster, where it was published).
   */
  publishInProcess(message: Message, source = 'gateway'): InProcessOutcome {
    const invalid = topicNameError(message.topic, this.limits.maxTopicLevels);
    if (invalid !== null) {
      throw new EdgewayError('EDGEWAY_ERR_INVALID_TOPIC', `invalid topic ${JSON.stringify(message.topic)}: ${invalid.message}`, ReasonCode.TopicNameInvalid);
    }
    this.metrics.publishReceived++;
    // Serial ports and the Redis downlink pass the same authorisation as clients, as internal users (adapters/auth).
    if (this.hooks.authorizePublish.length > 0 && !this.mayPublish(null, source, message.topic)) return 'denied';
    if (message.expiresAt !== undefined && hasExpired(message, Date.now())) {
      // Expired on its way here: no subscriber gets it [MQTT-3.3.2-5]; but a retained one did
      // replace the topic's retained message where it was published, so it does here too.
      this.metrics.publishExpired++;
      if (message.retain) this.dropRetained(message.topic);
      return 'expired';
    }
    const expiring = message.expiresAt === undefined && message.properties?.messageExpiryInterval !== undefined;
    this.publish(expiring ? withExpiry(message, Date.now()) : message, null, source);
    return 'routed';
  }

  subscribeInProcess(filter: string, handler: InProcessHandler): () => void {
    const invalid = topicFilterError(filter, this.limits.maxTopicLevels);
    if (invalid !== null) {
      throw new EdgewayError('EDGEWAY_ERR_INVALID_TOPIC', `invalid topic filter ${JSON.stringify(filter)}: ${invalid.message}`, ReasonCode.TopicFilterInvalid);
    }
    const key = `\u0000in-process:${++inProcessCounter}`;
    this.subscriptions.set(filter, key, { session: null, options: IN_PROCESS_OPTIONS, handler });
    return () => {
      this.subscriptions.delete(filter, key);
    };
  }

  private writeQos0(conn: Connection, bytes: Buffer, origin: Connection | null): void {
    const buffered = conn.bufferedBytes;
    if (buffered > this.limits.maxOutgoingBytes) {
      this.dropQos0(conn, origin, 'maxOutgoingBytes', 'subscriber not reading; QoS 0 message dropped', { bufferedBytes: buffered });
      return;
    }
    // Beyond the global budget no subscriber gets more than outgoingHighWater waiting, so that many
    // slow readers cannot add up to maxOutgoingBytes each. This tick's batch counts too: a reader
    // whose kernel buffer still takes everything would otherwise get a whole turn's worth of
    // messages at once (found by the test: 20 such readers, 2 MiB each). A reader that keeps up
    // rarely has that much waiting.
    if (buffered > this.limits.outgoingHighWater && this.outgoingBudget.exceeded) {
      this.dropQos0(conn, origin, 'maxOutgoingBytesTotal', 'sockets of all clients at their global budget; QoS 0 message to a subscriber with a backlog dropped', { bufferedBytes: buffered, outgoingBytes: this.outgoingBudget.used });
      return;
    }
    conn.write(bytes);
    this.metrics.publishSent++;
    this.applyBackpressure(conn, origin);
  }

  private dropQos0(conn: Connection, origin: Connection | null, limit: LimitName, msg: string, fields: Record<string, number>): void {
    this.metrics.publishDropped++;
    this.limitHit(limit, msg, { clientId: conn.clientId, ...fields });
    // Pause the publisher too: reading it only to drop what it sends would burn the CPU that
    // the subscribers who do keep up need.
    this.applyBackpressure(conn, origin);
  }

  private applyBackpressure(subscriber: Connection, origin: Connection | null): void {
    // What the kernel has not taken yet is the signal of a slow reader; this turn's batch only
    // counts once it grows large (half the hard limit), so a fast subscriber receiving a big
    // batch does not make every publisher stop and start again on each turn.
    if (origin !== null && (subscriber.socketBacklog > this.limits.outgoingHighWater || subscriber.bufferedBytes > this.limits.maxOutgoingBytes / 2)) {
      if (origin.waitFor(subscriber)) this.metrics.limitHits.backpressurePauses++;
    }
  }

  /**
   * The PUBLISH of `msg` for `conn`: the direct encoding for 3.1/3.1.1, outgoing.ts for MQTT 5.
   * Null when it exceeds an MQTT 5 client's Maximum Packet Size (counted): the caller then drops
   * the message as if it had been sent [MQTT-3.1.2-25].
   */
  private publishPacket(conn: Connection, msg: Message, qos: QoS, retain: boolean, dup: boolean, packetId: number): Buffer | null {
    const state = conn.mqtt5;
    if (state === null) return encodePublish(msg, qos, retain, dup, packetId, conn.protocolVersion);
    const bytes = encodePublishV5(state, msg, qos, retain, dup, packetId, forwardedProperties(msg, Date.now()));
    if (bytes === null) this.tooLargeForClient(conn, msg);
    return bytes;
  }

  private tooLargeForClient(conn: Connection, msg: Message): void {
    this.metrics.publishDropped++;
    this.limitHit('clientMaxPacketSize', "message larger than the client's Maximum Packet Size; not sent to it", { clientId: conn.clientId, topic: msg.topic, maxPacketSize: conn.mqtt5?.maxPacketSize ?? 0 });
  }

  /**
   * Delivers one message to one session at `qos`, queueing when inflight is full or the client is
   * away. `shared`: it came through a shared subscription (another member may take it over).
   */
  deliver(session: Session, msg: Message, qos: QoS, retain: boolean, origin: Connection | null, shared?: SharedOrigin): void {
    if (this.hooks.authorizeRead.length > 0 && !this.mayRead(session, msg.topic)) return;
    const conn = this.connectionOf(session);
    if (qos === 0) {
      const bytes = conn === undefined ? null : this.publishPacket(conn, msg, 0, retain, false, 0);
      if (bytes !== null) this.writeQos0(conn as Connection, bytes, origin);
      return;
    }
    if (conn !== undefined && session.queue.length === 0 && session.inflight.size < conn.inflightLimit) {
      this.sendInflight(session, conn, msg, qos, retain, undefined, shared);
      this.applyBackpressure(conn, origin);
      return;
    }
    const refused = session.enqueue(msg, qos, retain, shared);
    if (refused === null) return;
    this.metrics.publishDropped++;
    if (refused === 'maxQueued') {
      this.limitHit(refused, 'session queue full; message dropped', { clientId: session.clientId, maxQueued: this.limits.maxQueued, maxQueuedBytes: this.limits.maxQueuedBytes });
    } else {
      // First come, first served (README "Limits"): whoever would have to wait in a queue now, connected or not.
      this.limitHit(refused, 'queues of all sessions at their global budget; message dropped', { clientId: session.clientId, maxQueuedBytesTotal: this.limits.maxQueuedBytesTotal });
    }
  }

  private sendInflight(session: Session, conn: Connection, msg: Message, qos: 1 | 2, retain: boolean, ord?: number, shared?: SharedOrigin): void {
    const packetId = session.allocatePacketId();
    const bytes = this.publishPacket(conn, msg, qos, retain, false, packetId);
    if (bytes === null) {
      if (ord !== undefined) session.discard(ord);
      return;
    }
    session.addInflight(packetId, msg, qos, retain, ord, shared);
    conn.write(bytes);
    this.metrics.publishSent++;
  }

  /** Moves queued messages into free inflight slots; called after an acknowledgement frees one. */
  pump(session: Session): void {
    const conn = this.connectionOf(session);
    if (conn === undefined) return;
    while (session.inflight.size < conn.inflightLimit) {
      const next = session.dequeue();
      if (next === undefined) return;
      // Waited past its Message Expiry Interval: not sent [MQTT-3.3.2-5].
      if (next.message.expiresAt !== undefined && hasExpired(next.message, Date.now())) {
        session.discard(next.ord);
        this.metrics.publishExpired++;
        continue;
      }
      // Queued before its client's identity was known (restored session), or before an ACL reload.
      if (this.hooks.authorizeRead.length > 0 && !this.mayRead(session, next.message.topic)) {
        session.discard(next.ord);
        continue;
      }
      this.sendInflight(session, conn, next.message, next.qos, next.retain, next.ord, next.shared);
    }
  }

  /**
   * After a persistent session is resumed: re-send unacknowledged PUBLISH with DUP and PUBREL for
   * released QoS 2 messages, in their original order [MQTT-4.4.0-1], then drain the queue.
   */
  resumeSession(session: Session, conn: Connection): void {
    for (const [packetId, entry] of session.inflight) {
      if (entry.state === 'publish') {
        const bytes = this.publishPacket(conn, entry.message, entry.qos, entry.retain, true, packetId);
        // Too large for the client's new Maximum Packet Size: as if it had been delivered.
        if (bytes === null) session.completeInflight(packetId);
        else conn.write(bytes);
      } else {
        conn.write(encodeAck('pubrel', packetId, 0, conn.protocolVersion));
      }
    }
    this.pump(session);
  }

  /** Sends the retained messages matching a new subscription, flagged retained [MQTT-3.3.1-8]. */
  sendRetained(session: Session, filter: string, options: SubscriptionOptions): void {
    const now = Date.now();
    const ids = options.subscriptionId === undefined ? undefined : [options.subscriptionId];
    for (const msg of this.retained.matching(filter)) {
      if (hasExpired(msg, now)) {
        this.dropRetained(msg.topic); // expired: gone for every later subscriber too [MQTT-3.3.2-5]
        this.metrics.publishExpired++;
        continue;
      }
      const qos = (options.qos < msg.qos ? options.qos : msg.qos) as QoS;
      this.deliver(session, withSubscriptionIds(msg, ids), qos, true, null);
    }
  }

  /** Removes the retained message of `topic`, from storage too. */
  private dropRetained(topic: string): void {
    this.retained.delete(topic);
    if (this.options.storage !== undefined) {
      this.options.storage.retained.save(topic, null);
      this.storageChanges++;
    }
  }
}

/** A message kept beyond this tick, with its payload detached from the socket chunk (detachedPayload). */
function ownPayload(msg: Message): Message {
  const payload = detachedPayload(msg.payload);
  return payload === msg.payload ? msg : { ...msg, payload };
}

/** Adds one matching subscription's identifier and Retain As Published to a session's delivery. */
function addDeliveryOptions(special: Map<Session, DeliveryOptions>, session: Session, options: SubscriptionOptions): Map<Session, DeliveryOptions> {
  let delivery = special.get(session);
  if (delivery === undefined) {
    delivery = { ids: undefined, retainAsPublished: false };
    special.set(session, delivery);
  }
  if (options.subscriptionId !== undefined) (delivery.ids ??= []).push(options.subscriptionId);
  if (options.retainAsPublished) delivery.retainAsPublished = true;
  return special;
}

/** The topic-tree key of a shared subscription: NUL, which no client identifier contains, then its `$share/…` filter. */
function sharedKey(group: SharedGroup): string {
  return `\u0000${group.key}`;
}

/** A shared subscription's entry in the topic tree carries no options of its own: each member has its own. */
const SHARED_OPTIONS: SubscriptionOptions = { qos: 2, noLocal: false, retainAsPublished: false, retainHandling: 0 };

/** In-process subscribers receive every message at the publisher's QoS; delivery is a function call. */
const IN_PROCESS_OPTIONS: SubscriptionOptions = { qos: 2, noLocal: false, retainAsPublished: true, retainHandling: 0 };

/**
 * Who `conn`'s client is. From authentication on (client id and user name settled) it is one object
 * per connection — the authenticate hook, the session and the authorisation hooks see the same —
 * so adapters may key what they remember about a login by it (a WeakMap).
 */
export function clientInfo(conn: Connection): ClientInfo {
  if (conn.info !== null) return conn.info;
  const info: ClientInfo = { clientId: conn.clientId, remote: conn.remote, protocolVersion: conn.protocolVersion, username: conn.username };
  if (conn.state !== 'awaiting-connect') conn.info = info;
  return info;
}

/** Counts every change handed to the session store (Broker.storageChanges), then forwards it. */
function countingSessionStore(store: SessionStore, broker: { storageChanges: number }): SessionStore {
  return {
    load: () => store.load(),
    sessionSaved: (...a) => (broker.storageChanges++, store.sessionSaved(...a)),
    sessionDeleted: (...a) => (broker.storageChanges++, store.sessionDeleted(...a)),
    subscriptionSaved: (...a) => (broker.storageChanges++, store.subscriptionSaved(...a)),
    messageAdded: (...a) => (broker.storageChanges++, store.messageAdded(...a)),
    messageUpdated: (...a) => (broker.storageChanges++, store.messageUpdated(...a)),
    messageRemoved: (...a) => (broker.storageChanges++, store.messageRemoved(...a)),
    incomingQos2Saved: (...a) => (broker.storageChanges++, store.incomingQos2Saved(...a)),
  };
}
