/**
 * `mqtts` listeners (issue 8 part 4): mqtt.js and Mosquitto's CLI clients over TLS, client
 * certificates (required, taken as the user name), and clients that fail the handshake — a
 * plain-TCP MQTT client, an old TLS version, a stalled handshake — closed cleanly and counted
 * while the listener keeps serving. Certificates are made by `openssl` for each run.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { connectAsync, type IClientOptions } from 'mqtt';
import type { Credentials, ClientInfo } from '../../gateway/broker';
import { startBroker, waitFor, type TestBroker } from '../helpers/broker';
import { makeTestPki, type KeyPair } from '../helpers/certificates';
import { within } from '../helpers/mqtt-client';
import { startProcess, waitForOutput } from '../helpers/processes';
import { recordingLogger, tempDir } from '../helpers/sqlite';

const pki = makeTestPki(tempDir(t, 'edgeway-tls-'));
const alice = pki.clientCert('alice', 'alice');
const anonymousCert = pki.clientCert('no-cn', null);
const caPem = readFileSync(pki.ca);

interface TlsBroker extends TestBroker {
  readonly lines: ReturnType<typeof recordingLogger>['lines'];
}

/** A broker with one mqtts listener (plus `listener` settings) on a free port, stopped with the test. */
async function tlsBroker(t: Test, listener: Record<string, unknown> = {}, config: Record<string, unknown> = {}): Promise<TlsBroker> {
  const logger = recordingLogger();
  const tb = await startBroker(
    { listeners: [{ protocol: 'mqtts', host: '127.0.0.1', port: 0, cert: pki.server.cert, key: pki.server.key, ...listener }], ...config },
    logger,
  );
  t.teardown(() => tb.stop());
  return { ...tb, url: `mqtts://127.0.0.1:${tb.port}`, lines: logger.lines };
}

/** An mqtt.js client over TLS trusting the test CA; ended with the test. */
async function tlsClient(t: Test, tb: TestBroker, opts: IClientOptions = {}) {
  const c = await within(connectAsync(tb.url, { reconnectPeriod: 0, connectTimeout: 3000, ca: caPem, servername: 'localhost', ...opts }, false), 'mqtts connect');
  t.teardown(() => within(c.endAsync(true), 'mqtt.js end').catch(() => undefined));
  return c;
}

/** The first log line with `msg` (the tests match its fields). */
const logged = (tb: TlsBroker, msg: string) => tb.lines.find((l) => l.msg === msg);
const HANDSHAKE_FAILED = 'TLS handshake failed; connection closed';

const withCert = (pair: KeyPair): IClientOptions => ({ cert: readFileSync(pair.cert), key: readFileSync(pair.key) });

/** Resolves with the error mqtt.js reports, or rejects if the connection is accepted. */
async function refused(url: string, opts: IClientOptions): Promise<Error> {
  const c = connectAsync(url, { reconnectPeriod: 0, connectTimeout: 3000, ...opts }, false);
  const outcome = await within(
    c.then(
      async (client) => {
        await client.endAsync(true);
        return null;
      },
      (err: Error) => err,
    ),
    'mqtt.js to be refused',
  );
  if (outcome === null) throw new Error('the connection was accepted');
  return outcome;
}

t.test('mqtt.js publishes and subscribes over mqtts with the CA; the listening line names the protocol', async (t) => {
  const tb = await tlsBroker(t);
  t.match(logged(tb, 'listening'), { level: 'info', fields: { protocol: 'mqtts', port: tb.port } });
  const sub = await tlsClient(t, tb, { clientId: 'tls-sub' });
  await sub.subscribeAsync('farm/#', { qos: 1 });
  const got = new Promise<[string, string]>((resolve) => sub.on('message', (topic, payload) => resolve([topic, payload.toString()])));
  const pub = await tlsClient(t, tb, { clientId: 'tls-pub' });
  await pub.publishAsync('farm/shed/temp', '21.5', { qos: 1 });
  t.same(await within(got, 'the message over TLS'), ['farm/shed/temp', '21.5']);
  t.equal(tb.broker.metrics.tlsHandshakeFailures, 0, 'no failed handshake');
});

t.test('a client that does not trust the server certificate is refused by its own check', async (t) => {
  const tb = await tlsBroker(t);
  const err = await refused(tb.url, { servername: 'localhost' }); // no `ca`: the test CA is unknown
  t.match(err.message, /self[- ]signed|unable to verify|certificate/i, `mqtt.js: ${err.message}`);
});

t.test('mosquitto_sub and mosquitto_pub with --cafile; with --cert/--key on a listener that requires a certificate', async (t) => {
  for (const requireCertificate of [false, true]) {
    const tb = await tlsBroker(t, requireCertificate ? { ca: pki.ca, requireCertificate: true } : {});
    const tlsArgs = ['-h', '127.0.0.1', '-p', String(tb.port), '--cafile', pki.ca, ...(requireCertificate ? ['--cert', alice.cert, '--key', alice.key] : [])];
    const sub = startProcess(t, 'mosquitto_sub', [...tlsArgs, '-i', 'mosq-sub', '-t', 'lab/#', '-v', '-C', '1', '-W', '10'], 15_000);
    await waitFor(() => (tb.broker.sessions.get('mosq-sub')?.subscriptions.size ?? 0) > 0, 5000, 'mosquitto_sub to subscribe');
    const pub = startProcess(t, 'mosquitto_pub', [...tlsArgs, '-i', 'mosq-pub', '-t', 'lab/ph', '-m', '7.1', '-q', '1'], 15_000);
    t.equal((await pub.exited).code, 0, `mosquitto_pub exits 0 (requireCertificate ${requireCertificate}): ${pub.stderr}`);
    t.equal((await sub.exited).code, 0, `mosquitto_sub exits 0: ${sub.stderr}`);
    t.equal(sub.stdout, 'lab/ph 7.1\n', 'mosquitto_sub received the message over TLS');
  }
});

t.test('requireCertificate: a client without a certificate is refused cleanly and counted; one with a certificate is served', async (t) => {
  const tb = await tlsBroker(t, { ca: pki.ca, requireCertificate: true });
  const err = await refused(tb.url, { ca: caPem, servername: 'localhost' });
  t.ok(err.message.length > 0, `mqtt.js without a certificate fails: ${err.message}`);
  await waitFor(() => tb.broker.metrics.tlsHandshakeFailures === 1, 3000, 'the failure to be counted');
  t.match(logged(tb, HANDSHAKE_FAILED), { level: 'warn', fields: { listener: `mqtts://127.0.0.1:${tb.port}`, remote: /^127\.0\.0\.1:\d+$/, reason: /certificate/, count: 1 } }, 'logged with listener, peer and reason');
  t.equal(tb.broker.connectionCount, 0, 'no connection was handed to MQTT');

  const pub = startProcess(t, 'mosquitto_pub', ['-h', '127.0.0.1', '-p', String(tb.port), '--cafile', pki.ca, '-t', 'x', '-m', '1'], 15_000);
  t.not((await pub.exited).code, 0, `mosquitto_pub without --cert fails: ${pub.stderr.trim()}`);

  const c = await tlsClient(t, tb, { clientId: 'with-cert', ...withCert(alice) });
  t.ok(c.connected, 'a client with a certificate signed by the CA connects');
  // A certificate the CA did not sign is refused too.
  const stranger = makeTestPki(tempDir(t, 'edgeway-tls-other-')).clientCert('stranger', 'stranger');
  await refused(tb.url, { ca: caPem, servername: 'localhost', ...withCert(stranger) });
  await waitFor(() => tb.broker.metrics.tlsHandshakeFailures >= 3, 3000, 'the other failures to be counted');
});

t.test('useIdentityAsUsername: the authenticate hook sees the certificate CN as the user name, not the CONNECT one', async (t) => {
  const tb = await tlsBroker(t, { ca: pki.ca, requireCertificate: true, useIdentityAsUsername: true });
  const seen: { client: ClientInfo; credentials: Credentials }[] = [];
  tb.broker.hooks.authenticate.push((client, credentials) => {
    seen.push({ client, credentials });
    return true;
  });
  await tlsClient(t, tb, { clientId: 'cert-client', username: 'mallory', password: 'guess', ...withCert(alice) });
  t.equal(seen.length, 1, 'the hook ran once');
  t.match(seen[0], { client: { clientId: 'cert-client', username: 'alice' }, credentials: { username: 'alice', password: undefined, fromCertificate: true } });
  t.equal(tb.broker.clients.get('cert-client')?.username, 'alice', 'the connection is user alice (what ACLs see as %u)');

  const bob = pki.clientCert('bob', 'bob');
  const pub = startProcess(t, 'mosquitto_pub', ['-h', '127.0.0.1', '-p', String(tb.port), '--cafile', pki.ca, '--cert', bob.cert, '--key', bob.key, '-i', 'bob-pub', '-t', 'x', '-m', '1'], 15_000);
  t.equal((await pub.exited).code, 0, `mosquitto_pub with bob's certificate: ${pub.stderr}`);
  t.match(seen[1], { client: { clientId: 'bob-pub', username: 'bob' }, credentials: { fromCertificate: true } }, 'mosquitto_pub is bob');
});

t.test('useIdentityAsUsername: a verified certificate without a subject CN is refused, logged and counted', async (t) => {
  const tb = await tlsBroker(t, { ca: pki.ca, requireCertificate: true, useIdentityAsUsername: true });
  await refused(tb.url, { ca: caPem, servername: 'localhost', ...withCert(anonymousCert) });
  t.match(logged(tb, HANDSHAKE_FAILED), { fields: { reason: /no single subject CN/, remote: /^127\.0\.0\.1:\d+$/ } });
  t.equal(tb.broker.metrics.tlsHandshakeFailures, 1, 'counted');
  t.equal(tb.broker.metrics.connectionsAccepted, 0, 'never reached MQTT');
  await tlsClient(t, tb, { clientId: 'after', ...withCert(alice) });
  t.pass('a client with a CN connects afterwards');
});

t.test('a plain-TCP MQTT client on the TLS port fails cleanly; the listener keeps serving and counts it', async (t) => {
  const tb = await tlsBroker(t);
  const err = await refused(`mqtt://127.0.0.1:${tb.port}`, { clientId: 'plain' });
  t.ok(err.message.length > 0, `mqtt.js over plain TCP fails: ${err.message}`);
  const pub = startProcess(t, 'mosquitto_pub', ['-h', '127.0.0.1', '-p', String(tb.port), '-t', 'x', '-m', '1'], 15_000);
  t.not((await pub.exited).code, 0, `mosquitto_pub without TLS fails: ${pub.stderr.trim()}`);
  await waitFor(() => tb.broker.metrics.tlsHandshakeFailures === 2, 3000, 'both failures counted');
  t.match(logged(tb, HANDSHAKE_FAILED), { fields: { reason: /wrong version number|http request|packet length|unexpected/i } }, 'the reason is logged');
  const c = await tlsClient(t, tb, { clientId: 'after-plain' });
  t.ok(c.connected, 'a TLS client is served afterwards');
});

/** A handshake with `options`, resolving with the negotiated protocol or the error. */
function handshake(port: number, options: tls.ConnectionOptions): Promise<string | Error> {
  return within(
    new Promise((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port, ca: caPem, servername: 'localhost', ...options }, () => {
        resolve(socket.getProtocol() ?? 'unknown');
        socket.destroy();
      });
      socket.on('error', (err) => resolve(err));
    }),
    'a TLS handshake',
  );
}

t.test('TLS 1.1 is refused (minVersion TLSv1.2 by default); minVersion TLSv1.3 refuses TLS 1.2', async (t) => {
  // The client settings work against a server that allows TLS 1.1, so the refusal below is edgeway's.
  const tls11 = { minVersion: 'TLSv1.1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' } as const;
  const lenient = tls.createServer({ cert: readFileSync(pki.server.cert), key: readFileSync(pki.server.key), minVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' }, (s) => s.end());
  await new Promise<void>((resolve) => lenient.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => lenient.close(() => resolve())));
  t.equal(await handshake((lenient.address() as net.AddressInfo).port, tls11), 'TLSv1.1', 'the TLS 1.1 client works against a lenient server');

  const tb = await tlsBroker(t);
  const result = await handshake(tb.port, tls11);
  t.type(result, Error, `TLS 1.1 against edgeway fails: ${String(result)}`);
  await waitFor(() => tb.broker.metrics.tlsHandshakeFailures === 1, 3000, 'counted');
  t.match(logged(tb, HANDSHAKE_FAILED), { fields: { reason: /ERR_SSL_UNSUPPORTED_PROTOCOL: unsupported protocol/ } });
  t.equal(await handshake(tb.port, { maxVersion: 'TLSv1.2' }), 'TLSv1.2', 'TLS 1.2 is accepted');

  const strict = await tlsBroker(t, { minVersion: 'TLSv1.3' });
  t.type(await handshake(strict.port, { maxVersion: 'TLSv1.2' }), Error, 'TLS 1.2 refused with minVersion TLSv1.3');
  t.equal(await handshake(strict.port, {}), 'TLSv1.3', 'TLS 1.3 accepted');
});

t.test('a client that opens the TLS port and never completes the handshake is closed after limits.connectTimeout', async (t) => {
  const tb = await tlsBroker(t, {}, { limits: { connectTimeout: 300 } });
  const socket = net.connect(tb.port, '127.0.0.1');
  t.teardown(() => socket.destroy());
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  socket.on('error', () => undefined);
  await within(closed, 'the server to close the stalled handshake', 5000);
  await waitFor(() => tb.broker.metrics.tlsHandshakeFailures === 1, 3000, 'counted');
  t.match(logged(tb, HANDSHAKE_FAILED), { fields: { reason: /ERR_TLS_HANDSHAKE_TIMEOUT/ } });
});

t.test('perAddress caps apply to the TCP socket before the TLS handshake, and are given back when it closes — also after a failed handshake', async (t) => {
  const tb = await tlsBroker(t, {}, { limits: { perAddress: { maxConnections: 2, exemptLoopback: false } } });
  const limits = tb.broker.addressLimits;
  // Two sockets that never start a handshake hold both places: a third is closed at accept.
  const idle = [0, 1].map(() => net.connect({ port: tb.port, host: '127.0.0.1', localAddress: '127.0.0.2' }));
  t.teardown(() => idle.forEach((s) => s.destroy()));
  await waitFor(() => limits.openFrom('127.0.0.2') === 2, 3000, 'two sockets counted before any handshake');
  const third = await handshake(tb.port, { host: '127.0.0.1', localAddress: '127.0.0.2' } as tls.ConnectionOptions);
  t.type(third, Error, `a third connection from 127.0.0.2 is closed before its handshake (${String(third)})`);
  t.equal(tb.broker.metrics.limitHits.perAddressConnections, 1, 'counted as perAddressConnections');
  t.equal(tb.broker.metrics.tlsHandshakeFailures, 0, 'refused before a handshake started: no handshake work or failure');
  const other = await tlsClient(t, tb, { localAddress: '127.0.0.3' } as IClientOptions);
  t.ok(other.connected, 'another address connects meanwhile');

  idle.forEach((s) => s.destroy());
  await waitFor(() => limits.openFrom('127.0.0.2') === 0, 3000, 'the places given back when the sockets close');
  // Plain MQTT on the TLS port: a failed handshake must give its place back too.
  for (let i = 0; i < 4; i++) {
    const plain = net.connect({ port: tb.port, host: '127.0.0.1', localAddress: '127.0.0.2' });
    plain.on('error', () => undefined);
    plain.write(Buffer.from([0x10, 0x0c, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00]));
    await new Promise((resolve) => plain.once('close', resolve));
  }
  await waitFor(() => limits.openFrom('127.0.0.2') === 0, 3000, 'failed handshakes gave their places back');
  const after = await tlsClient(t, tb, { localAddress: '127.0.0.2' } as IClientOptions);
  t.ok(after.connected, 'after four failed handshakes 127.0.0.2 still connects');
});
