/**
 * TLS for the `mqtts` and `wss` listeners (issue 8): the PEM files of a listener read into a
 * secure context, re-read on SIGHUP (renewed certificates), client-certificate identities, and
 * handshake failures reported instead of crashing.
 *
 * Loaded by broker.ts only when such a listener is configured: `node:tls` costs idle memory a
 * plain-TCP gateway should not pay (scripts/bench/footprint.ts).
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import tls, { type SecureContextOptions, type TLSSocket, type TlsOptions } from 'node:tls';
import type { TlsListenerFiles } from './broker';
import { EdgewayError, errorMessage } from './errors';

/** What a TLS server reports to the broker. */
export interface TlsEvents {
  /**
   * A handshake failed: a plain-TCP client on the TLS port, a refused or missing client
   * certificate, an old protocol version, a timeout. The socket is already gone.
   */
  handshakeFailed(reason: string, remote: string): void;
}

/** The file contents of one listener, checked one by one so an error names the file at fault. */
export function readSecureContextOptions(files: TlsListenerFiles, listener: string): SecureContextOptions {
  const read = (what: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new EdgewayError('EDGEWAY_ERR_TLS_FILES', `listener ${listener}: cannot read the ${what} file ${path}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`);
    }
  };
  const check = (what: string, path: string, parse: () => unknown): void => {
    try {
      parse();
    } catch (err) {
      throw new EdgewayError('EDGEWAY_ERR_TLS_FILES', `listener ${listener}: the ${what} file ${path} is not a valid PEM ${what}: ${errorMessage(err)}`);
    }
  };
  const cert = read('certificate', files.cert);
  const key = read('key', files.key);
  const ca = files.ca === undefined ? undefined : read('CA', files.ca);
  check('certificate', files.cert, () => new X509Certificate(cert));
  check('key', files.key, () => createPrivateKey(key));
  if (ca !== undefined && files.ca !== undefined) check('CA', files.ca, () => new X509Certificate(ca));
  const options: SecureContextOptions = { cert, key, minVersion: files.minVersion, ...(ca === undefined ? {} : { ca }) };
  try {
    // What the checks above cannot see: a key that does not belong to the certificate.
    tls.createSecureContext(options);
  } catch (err) {
    throw new EdgewayError('EDGEWAY_ERR_TLS_FILES', `listener ${listener}: ${files.cert} and ${files.key} cannot be used together: ${errorMessage(err)}`);
  }
  return options;
}

/**
 * Server options of a TLS listener. The handshake must finish within the CONNECT timeout: a
 * client that opens the port and stalls the handshake holds a socket as long as one that never
 * sends CONNECT (Node's default is 120 s).
 */
export function tlsServerOptions(files: TlsListenerFiles, listener: string, handshakeTimeoutMs: number): TlsOptions {
  return {
    ...readSecureContextOptions(files, listener),
    handshakeTimeout: handshakeTimeoutMs,
    requestCert: files.requireCertificate,
    rejectUnauthorized: files.requireCertificate,
  };
}

/**
 * TCP sockets closed at accept by the per-address caps (Broker.admitAtAccept): the TLS
 * server still wraps them and reports a reset "handshake", which is not one.
 */
const refusedAtAccept = new WeakSet<Socket>();

export function markRefusedAtAccept(raw: Socket): void {
  refusedAtAccept.add(raw);
}

/** Reports every failed handshake of `server` (tls.Server or https.Server) to `events`. */
export function watchHandshakes(server: tls.Server, events: TlsEvents): void {
  // Asking for the peer's address now caches it in the TCP socket: after a reset mid-handshake it
  // can no longer be read, and the failure would be logged without it.
  server.on('connection', (raw: Socket) => void raw.remoteAddress);
  server.on('tlsClientError', (err: NodeJS.ErrnoException & { reason?: string }, socket: TLSSocket) => {
    const remote = remoteOf(socket);
    socket.destroy();
    // `_parent`: the TCP socket a server-side TLSSocket wraps (Node internal, hence the guard).
    const parent = (socket as TLSSocket & { _parent?: Socket | null })._parent;
    if (parent != null && refusedAtAccept.has(parent)) return;
    // OpenSSL's message spans lines and names its source file; its `reason` is the readable part.
    const reason = err.reason ?? err.message.trim();
    events.handshakeFailed(err.code === undefined ? reason : `${err.code}: ${reason}`, remote);
  });
}

/** A TLS server for MQTT (`mqtts`); `onSecure` gets each socket whose handshake succeeded. */
export function createMqttsServer(files: TlsListenerFiles, listener: string, handshakeTimeoutMs: number, events: TlsEvents, onSecure: (socket: TLSSocket) => void): tls.Server {
  const server = tls.createServer(tlsServerOptions(files, listener, handshakeTimeoutMs), onSecure);
  watchHandshakes(server, events);
  return server;
}

/**
 * Re-reads the listener's files into a new secure context (certificate renewal): new
 * connections get it, established ones keep theirs. Throws, leaving the old context in use,
 * when a file cannot be read or used.
 */
export function reloadSecureContext(server: tls.Server, files: TlsListenerFiles, listener: string): void {
  server.setSecureContext(readSecureContextOptions(files, listener));
}

/** "address:port" of a socket's peer, for logs: after a failed handshake, from the TCP socket under it. */
export function remoteOf(socket: TLSSocket): string {
  const peer = socket.remoteAddress === undefined ? (socket as TLSSocket & { _parent?: Socket })._parent : socket;
  return `${peer?.remoteAddress ?? '?'}:${peer?.remotePort ?? '?'}`;
}

/**
 * The user name a verified client certificate gives (useIdentityAsUsername): its subject CN.
 * Null when it has none, or several (which one would be the user is not ours to guess).
 */
export function certificateCommonName(socket: TLSSocket): string | null {
  const cn: unknown = socket.getPeerCertificate().subject?.CN;
  return typeof cn === 'string' && cn !== '' ? cn : null;
}
