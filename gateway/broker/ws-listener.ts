/**
 * MQTT over WebSockets (`ws` and `wss` listeners, issue 8; MQTT 5.0 section 6): an HTTP(S)
 * server that upgrades requests for the configured path, and a thin Transport over each
 * WebSocket so a Connection reads and writes it like a TCP socket.
 *
 * Loaded by broker.ts only when such a listener is configured: `ws` and `node:http` cost idle
 * memory a plain-TCP gateway should not pay (scripts/bench/footprint.ts).
 */
import { EventEmitter } from 'node:events';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket, TlsOptions } from 'node:tls';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { EdgewayError } from './errors';
import type { Transport } from './transport';

/** Subprotocols MQTT clients ask for: `mqtt` (3.1.1 and 5), `mqttv3.1` (3.1), in that preference. */
const SUBPROTOCOLS = ['mqtt', 'mqttv3.1'] as const;

export interface WsListenerOptions {
  readonly path: string;
  /** TLS server options for `wss`; undefined for `ws`. */
  readonly tls: TlsOptions | undefined;
  /** Largest WebSocket message accepted (limits.maxPacketSize): refused from its frame header. */
  readonly maxPayload: number;
  /** How long the HTTP upgrade request may take (limits.connectTimeout). */
  readonly requestTimeoutMs: number;
  /**
   * Checks the TLS client of an upgrade before it is accepted (useIdentityAsUsername): returns
   * the user name for the connection, or an Error to refuse it with 403. Absent: nothing to check.
   */
  readonly identify?: ((socket: TLSSocket) => string | Error) | undefined;
  /** An accepted WebSocket, with the user name `identify` gave. */
  readonly onConnection: (transport: Transport, certificateUsername: string | undefined) => void;
  /** An HTTP request or upgrade that was refused (wrong path, not a WebSocket, no identity). */
  readonly onRefused: (reason: string, remote: string) => void;
}

/** An HTTP (ws) or HTTPS (wss) server serving MQTT over WebSockets at `options.path`. */
export function createWsServer(options: WsListenerOptions): http.Server | https.Server {
  const timeouts = {
    // Bounded like a TCP client that never sends CONNECT; checked every second, not every 30 s.
    headersTimeout: options.requestTimeoutMs,
    requestTimeout: options.requestTimeoutMs,
    connectionsCheckingInterval: Math.min(1000, options.requestTimeoutMs),
  };
  const server = options.tls === undefined ? http.createServer(timeouts) : https.createServer({ ...options.tls, ...timeouts });
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: options.maxPayload,
    // Compression costs memory per connection and CPU per message, and invites zip bombs; MQTT
    // payloads from sensors are small. mqtt.js and browsers work without it.
    perMessageDeflate: false,
    clientTracking: false,
    handleProtocols: (offered: Set<string>) => SUBPROTOCOLS.find((p) => offered.has(p)) ?? false,
  });
  server.on('request', (req: IncomingMessage, res: http.ServerResponse) => {
    const atPath = pathOf(req) === options.path;
    options.onRefused(atPath ? 'not a WebSocket upgrade' : `no MQTT at ${pathOf(req)}`, remoteOf(req.socket));
    res.writeHead(atPath ? 426 : 404, { 'content-type': 'text/plain', connection: 'close', ...(atPath ? { upgrade: 'websocket' } : {}) });
    res.end(atPath ? `MQTT over WebSockets: connect with a WebSocket client to ${options.path}\n` : 'not found\n');
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = pathOf(req);
    if (path !== options.path) {
      options.onRefused(`no MQTT at ${path}`, remoteOf(socket as Socket));
      refuseUpgrade(socket, 404, 'Not Found');
      return;
    }
    let username: string | undefined;
    if (options.identify !== undefined) {
      const identity = options.identify(socket as TLSSocket);
      if (identity instanceof Error) {
        options.onRefused(identity.message, remoteOf(socket as Socket));
        refuseUpgrade(socket, 403, 'Forbidden');
        return;
      }
      username = identity;
    }
    // Invalid upgrade requests (wrong version, no key) are answered 400 by ws itself.
    wss.handleUpgrade(req, socket, head, (ws) => options.onConnection(new WsTransport(ws, socket as Socket), username));
  });
  // An error before the upgrade must not reach the process. Only HTTP errors are ours to report:
  // a peer that resets is just gone, and https re-emits failed TLS handshakes here, which the
  // broker already counts (tls-listener.ts watchHandshakes).
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    const code = err.code ?? '';
    if (code.startsWith('HPE_') || code.startsWith('ERR_HTTP_')) {
      options.onRefused(`bad HTTP request: ${code}`, remoteOf(socket as Socket));
      const status = code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
      if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    }
    socket.destroy();
  });
  return server;
}

function pathOf(req: IncomingMessage): string {
  const url = req.url ?? '';
  const query = url.indexOf('?');
  return query < 0 ? url : url.slice(0, query);
}

function remoteOf(socket: Socket): string {
  return `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
}

function refuseUpgrade(socket: Duplex, status: number, text: string): void {
  if (socket.writable) socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  // end() flushes the answer; a peer that does not read it must not keep the socket.
  setTimeout(() => socket.destroy(), 1000).unref();
}

/**
 * One WebSocket as a Transport. Written bytes go out as one binary message per write (the
 * Connection writes once per tick); received binary messages are MQTT bytes, which may hold
 * several packets or part of one (MQTT 5.0 section 6.0).
 *
 * Backpressure: `writableLength` is ws's bufferedAmount — the TCP socket's write buffer plus what
 * ws queued itself — so limits.maxOutgoingBytes and limits.outgoingHighWater see what waits for
 * the client; 'drain' is the TCP socket's. Reading pauses at the TCP socket (ws.pause()).
 */
class WsTransport extends EventEmitter implements Transport {
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;

  constructor(
    private readonly ws: WebSocket,
    private readonly raw: Socket,
  ) {
    super();
    this.remoteAddress = raw.remoteAddress;
    this.remotePort = raw.remotePort;
    ws.on('message', (data: RawData, isBinary: boolean) => {
      if (!isBinary) {
        // [MQTT-6.0.0-1] control packets travel in binary frames; anything else closes the connection.
        this.emit('error', new EdgewayError('EDGEWAY_ERR_PROTOCOL', 'WebSocket text frame received; MQTT needs binary frames'));
        return;
      }
      // binaryType 'nodebuffer' (the default): a Buffer, fragments already joined.
      this.emit('data', data as Buffer);
    });
    ws.on('error', (err: Error & { code?: string }) => {
      if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
        this.emit('error', new EdgewayError('EDGEWAY_ERR_PACKET_TOO_LARGE', `WebSocket message larger than maxPacketSize (${err.message})`));
      } else {
        this.emit('error', err);
      }
    });
    ws.on('close', () => this.emit('close'));
    raw.on('drain', () => this.emit('drain'));
  }

  write(data: Buffer): boolean {
    this.ws.send(data);
    return !this.raw.writableNeedDrain;
  }

  end(): void {
    // A close frame after what is queued; ws ends the TCP connection when the peer answers.
    this.ws.close(1000);
  }

  destroy(): void {
    this.ws.terminate();
  }

  pause(): void {
    this.ws.pause();
  }

  resume(): void {
    this.ws.resume();
  }

  get writableLength(): number {
    return this.ws.bufferedAmount;
  }

  get destroyed(): boolean {
    return this.ws.readyState !== WebSocket.OPEN || this.raw.destroyed;
  }

  setNoDelay(noDelay?: boolean): this {
    this.raw.setNoDelay(noDelay);
    return this;
  }
}
