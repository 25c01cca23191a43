/**
 * TLS on the real `edgeway` command (issue 8 part 4): certificate files that cannot be used stop
 * the start with exit 78 and a message naming the file and the listener; SIGHUP re-reads the
 * certificates of every TLS listener (a renewal changes the files, not the configuration) — new
 * connections see the new certificate, established ones keep working, and a broken file keeps
 * the old certificate.
 */
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { connectAsync, type MqttClient } from 'mqtt';
import { GATEWAY_MAIN, startGatewayProcess } from '../helpers/gateway';
import { fingerprint, makeTestPki } from '../helpers/certificates';
import { within } from '../helpers/mqtt-client';
import { freePort, startProcess, waitForOutput } from '../helpers/processes';
import { tempDir } from '../helpers/sqlite';

const EXIT_CONFIG = 78;
const dir = tempDir(t, 'edgeway-tls-reload-');
const pki = makeTestPki(dir);
const caPem = readFileSync(pki.ca);

function tlsListeners(mqttsPort: number, wssPort: number, cert: string, key: string): string {
  return (
    `listeners:\n` +
    `  - protocol: mqtts\n    host: 127.0.0.1\n    port: ${mqttsPort}\n    cert: ${cert}\n    key: ${key}\n` +
    `  - protocol: wss\n    host: 127.0.0.1\n    port: ${wssPort}\n    cert: ${cert}\n    key: ${key}\n` +
    `sys:\n  interval: 0\nstorage:\n  path: ${join(dir, 'db', 'edgeway.db')}\n`
  );
}

let configs = 0;
function writeConfig(text: string): string {
  const path = join(dir, `edgeway-${++configs}.yaml`);
  writeFileSync(path, text);
  return path;
}

/** The SHA-256 fingerprint of the certificate a new TLS connection to `port` is shown. */
function servedFingerprint(port: number): Promise<string> {
  return within(
    new Promise((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port, ca: caPem, servername: 'localhost' }, () => {
        resolve(socket.getPeerCertificate().fingerprint256);
        socket.end();
      });
      socket.on('error', reject);
    }),
    'a TLS handshake',
  );
}

async function mqttsClient(t: Test, port: number, clientId: string): Promise<MqttClient> {
  const c = await within(connectAsync(`mqtts://127.0.0.1:${port}`, { clientId, reconnectPeriod: 0, connectTimeout: 3000, ca: caPem, servername: 'localhost' }, false), 'mqtts connect');
  t.teardown(() => within(c.endAsync(true), 'mqtt.js end').catch(() => undefined));
  return c;
}

t.test('unusable certificate files stop the start with exit 78, naming the file and the listener', async (t) => {
  const port = await freePort();
  const garbage = join(dir, 'garbage.pem');
  writeFileSync(garbage, 'not a certificate\n');
  const other = pki.serverCert('other');
  const cases: [string, string, string, RegExp][] = [
    ['a missing certificate', join(dir, 'missing.crt'), pki.server.key, /listener mqtts:\/\/127\.0\.0\.1:\d+: cannot read the certificate file .*missing\.crt: ENOENT/],
    ['a certificate file that is not PEM', garbage, pki.server.key, /the certificate file .*garbage\.pem is not a valid PEM certificate/],
    ['a key file that is not PEM', pki.server.cert, garbage, /the key file .*garbage\.pem is not a valid PEM key/],
    ['a key of another certificate', pki.server.cert, other.key, /server\.crt and .*other\.key cannot be used together: .*key values mismatch/],
  ];
  for (const [what, cert, key, message] of cases) {
    const config = writeConfig(tlsListeners(port, port + 1, cert, key));
    const gw = startProcess(t, process.execPath, [GATEWAY_MAIN, '--config', config], 10_000, { cwd: dir });
    const { code } = await gw.exited;
    t.equal(code, EXIT_CONFIG, `${what}: exit 78`);
    t.match(gw.stderr, message, `${what}: ${gw.stderr.trim()}`);
    t.notMatch(gw.stderr, /    at /, 'no stack trace');
  }
});

t.test('SIGHUP reloads the certificates of mqtts and wss listeners; open connections keep working; a broken file keeps the old one', async (t) => {
  const live = { cert: join(dir, 'live.crt'), key: join(dir, 'live.key') };
  copyFileSync(pki.server.cert, live.cert);
  copyFileSync(pki.server.key, live.key);
  const [mqttsPort, wssPort] = [await freePort(), await freePort()];
  const config = writeConfig(tlsListeners(mqttsPort, wssPort, live.cert, live.key));
  const gw = await startGatewayProcess(t, config, { cwd: dir });
  t.match(gw.stdout, new RegExp(`listening protocol=wss address=127\\.0\\.0\\.1 port=${wssPort} path=/mqtt`), 'the wss listening line');
  const hup = () => {
    if (gw.child.pid !== undefined) process.kill(gw.child.pid, 'SIGHUP');
  };
  const first = fingerprint(pki.server.cert);
  t.equal(await servedFingerprint(mqttsPort), first, 'mqtts serves the first certificate');
  t.equal(await servedFingerprint(wssPort), first, 'wss serves the first certificate');

  const old = await mqttsClient(t, mqttsPort, 'old');
  await old.subscribeAsync('renewal/#');
  const oldSocket = old.stream as tls.TLSSocket;

  // A renewal: new files at the same paths, the configuration unchanged.
  const renewed = pki.serverCert('renewed');
  copyFileSync(renewed.cert, live.cert);
  copyFileSync(renewed.key, live.key);
  hup();
  await waitForOutput(() => gw.stdout, /TLS certificates reloaded listener=wss:\/\/127\.0\.0\.1:\d+\/mqtt/, 5000, 'the reload lines');
  t.match(gw.stdout, new RegExp(`TLS certificates reloaded listener=mqtts://127\\.0\\.0\\.1:${mqttsPort} cert=${live.cert}`), 'one line per listener');
  await waitForOutput(() => gw.stdout, /SIGHUP: configuration reloaded .*applied="nothing changed"/, 5000, 'the configuration reload line');
  const second = fingerprint(renewed.cert);
  t.not(second, first, 'the renewed certificate differs');
  t.equal(await servedFingerprint(mqttsPort), second, 'a new mqtts connection sees the renewed certificate');
  t.equal(await servedFingerprint(wssPort), second, 'a new wss connection sees the renewed certificate');

  t.equal(oldSocket.getPeerCertificate().fingerprint256, first, 'the old connection keeps its certificate');
  const got = within(new Promise<string>((resolve) => old.once('message', (_topic, payload) => resolve(payload.toString()))), 'the message on the old connection');
  const fresh = await mqttsClient(t, mqttsPort, 'fresh');
  await fresh.publishAsync('renewal/done', 'yes', { qos: 1 });
  t.equal(await got, 'yes', 'the old connection still receives');

  // A broken file on the next SIGHUP: logged, the renewed certificate stays in use.
  writeFileSync(live.cert, '-----BEGIN CERTIFICATE-----\ntruncated\n');
  hup();
  await waitForOutput(() => gw.stderr, /TLS certificates not reloaded; the listener keeps its current ones listener=wss:\/\/.*not a valid PEM certificate/, 5000, 'the error lines');
  t.match(gw.stderr, /TLS certificates not reloaded; the listener keeps its current ones listener=mqtts:\/\/127\.0\.0\.1:\d+ error=.*live\.crt is not a valid PEM certificate/);
  t.equal(await servedFingerprint(mqttsPort), second, 'mqtts still serves the renewed certificate');
  t.equal(await servedFingerprint(wssPort), second, 'wss still serves the renewed certificate');
  t.equal(gw.child.exitCode, null, 'the gateway keeps running');
});
