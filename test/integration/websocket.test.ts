/**
 * `ws` and `wss` listeners (issue 8 part 5): MQTT over WebSockets with mqtt.js (3.1.1 and 5),
 * with TLS, interop with TCP clients, subprotocol negotiation, refused paths and frames, an
 * oversized packet, and a WebSocket subscriber that stops reading (the slow-subscriber limits
 * must see what waits for it).
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import t, { type Test } from 'tap';
import { connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import { generate, parser as createParser, type Packet } from 'mqtt-packet';
import { WebSocket, type ClientOptions } from 'ws';
import { startBroker, waitFor, type TestBroker } from '../helpers/broker';
import { makeTestPki } from '../helpers/certificates';
import { within } from '../helpers/mqtt-client';
import { RawClient } from '../helpers/raw-client';
import { recordingLogger, tempDir } from '../helpers/sqlite';

const pki = makeTestPki(tempDir(t, 'edgeway-ws-'));
const caPem = readFileSync(pki.ca);

interface WsBroker extends TestBroker {
  /** Port of the mqtt (TCP) listener. */
  readonly tcpPort: number;
  /** Port of the ws listener, and of the wss listener. */
  readonly wsPort: number;
  readonly wssPort: number;
  readonly lines: ReturnType<typeof recordingLogger>['lines'];
}

/** A broker with mqtt, ws (/mqtt) and wss (/mqtt) listeners on free ports, stopped with the test. */
async function wsBroker(t: Test, config: Record<string, unknown> = {}): Promise<WsBroker> {
  const logger = recordingLogger();
  const tb = await startBroker(
    {
      listeners: [
        { protocol: 'mqtt', host: '127.0.0.1', port: 0 },
        { protocol: 'ws', host: '127.0.0.1', port: 0 },
        { protocol: 'wss', host: '127.0.0.1', port: 0, cert: pki.server.cert, key: pki.server.key },
      ],
      ...config,
    },
    logger,
  );
  t.teardown(() => tb.stop());
  const [, ws, wss] = tb.broker.addresses().map((a) => a.port) as [number, number, number];
  return { ...tb, tcpPort: tb.port, wsPort: ws, wssPort: wss, lines: logger.lines };
}

async function client(t: Test, url: string, opts: IClientOptions = {}): Promise<MqttClient> {
  const c = await within(connectAsync(url, { reconnectPeriod: 0, connectTimeout: 3000, ...opts }, false), `connect to ${url}`);
  t.teardown(() => within(c.endAsync(true), 'mqtt.js end').catch(() => undefined));
  return c;
}

/** The next message `c` receives. */
const nextMessage = (c: MqttClient) =>
  within(
    new Promise<{ topic: string; payload: string; properties: unknown }>((resolve) => c.once('message', (topic, payload, packet) => resolve({ topic, payload: payload.toString(), properties: packet.properties }))),
    'a message',
  );

t.test('mqtt.js over ws://…/mqtt publishes and subscribes; the listening lines name protocol and path', async (t) => {
  const tb = await wsBroker(t);
  t.match(tb.lines.filter((l) => l.msg === 'listening').map((l) => l.fields), [
    { protocol: 'mqtt', port: tb.tcpPort },
    { protocol: 'ws', port: tb.wsPort, path: '/mqtt' },
    { protocol: 'wss', port: tb.wssPort, path: '/mqtt' },
  ]);
  const url = `ws://127.0.0.1:${tb.wsPort}/mqtt`;
  const sub = await client(t, url, { clientId: 'ws-sub' });
  await sub.subscribeAsync('dash/#', { qos: 1 });
  const got = nextMessage(sub);
  const pub = await client(t, url, { clientId: 'ws-pub' });
  await pub.publishAsync('dash/tank/level', '73', { qos: 1 });
  t.match(await got, { topic: 'dash/tank/level', payload: '73' });
  t.equal(tb.broker.clients.get('ws-sub')?.remote.startsWith('127.0.0.1:'), true, 'the remote address is the TCP peer');
});

t.test('wss with the CA: pub/sub over TLS; a client that does not trust the certificate fails', async (t) => {
  const tb = await wsBroker(t);
  const url = `wss://127.0.0.1:${tb.wssPort}/mqtt`;
  const sub = await client(t, url, { clientId: 'wss-sub', ca: caPem, servername: 'localhost' });
  await sub.subscribeAsync('secure/#');
  const got = nextMessage(sub);
  const pub = await client(t, url, { clientId: 'wss-pub', ca: caPem, servername: 'localhost' });
  await pub.publishAsync('secure/door', 'closed');
  t.match(await got, { topic: 'secure/door', payload: 'closed' });
  await t.rejects(within(connectAsync(url, { reconnectPeriod: 0, connectTimeout: 3000 }, false), 'untrusted wss'), 'no ca: refused by the client');
  await waitFor(() => tb.broker.metrics.tlsHandshakeFailures === 1, 3000, 'the failed handshake counted');
});

t.test('wss with requireCertificate and useIdentityAsUsername: the CN is the user name; a certificate without CN gets 403', async (t) => {
  const logger = recordingLogger();
  const tb = await startBroker(
    { listeners: [{ protocol: 'wss', host: '127.0.0.1', port: 0, cert: pki.server.cert, key: pki.server.key, ca: pki.ca, requireCertificate: true, useIdentityAsUsername: true }] },
    logger,
  );
  t.teardown(() => tb.stop());
  const usernames: (string | undefined)[] = [];
  tb.broker.hooks.authenticate.push((client, credentials) => {
    usernames.push(`${client.username}/${credentials.username}/${credentials.fromCertificate}`);
    return true;
  });
  const url = `wss://127.0.0.1:${tb.port}/mqtt`;
  const carol = pki.clientCert('carol', 'carol');
  await client(t, url, { clientId: 'carol-dash', username: 'someone-else', ca: caPem, servername: 'localhost', cert: readFileSync(carol.cert), key: readFileSync(carol.key) });
  t.same(usernames, ['carol/carol/true'], 'ClientInfo.username and the credentials are the CN');

  const noCn = pki.clientCert('ws-no-cn', null);
  const refused = await openWs(url, ['mqtt'], { ca: caPem, cert: readFileSync(noCn.cert), key: readFileSync(noCn.key) });
  t.match(refused, { message: /Unexpected server response: 403/ }, 'no CN: 403');
  t.match(logger.lines.find((l) => l.msg === 'WebSocket listener refused a request'), { fields: { reason: /no single subject CN/ } });
  const without = await openWs(url, ['mqtt'], { ca: caPem });
  t.type(without, Error, 'no certificate: refused');
  await waitFor(() => tb.broker.metrics.tlsHandshakeFailures === 1, 3000, 'the missing certificate counted');
});

t.test('interop: TCP → WebSocket and WebSocket → TCP', async (t) => {
  const tb = await wsBroker(t);
  const tcp = await client(t, `mqtt://127.0.0.1:${tb.tcpPort}`, { clientId: 'tcp' });
  const ws = await client(t, `ws://127.0.0.1:${tb.wsPort}/mqtt`, { clientId: 'ws' });
  await tcp.subscribeAsync('to-tcp');
  await ws.subscribeAsync('to-ws');
  let got = nextMessage(ws);
  await tcp.publishAsync('to-ws', 'from tcp');
  t.match(await got, { topic: 'to-ws', payload: 'from tcp' });
  got = nextMessage(tcp);
  await ws.publishAsync('to-tcp', 'from ws');
  t.match(await got, { topic: 'to-tcp', payload: 'from ws' });
});

t.test('MQTT 5 over WebSockets: properties travel both ways', async (t) => {
  const tb = await wsBroker(t);
  const url = `ws://127.0.0.1:${tb.wsPort}/mqtt`;
  const sub = await client(t, url, { clientId: 'v5-sub', protocolVersion: 5 });
  await sub.subscribeAsync('v5/#', { qos: 1 });
  const got = nextMessage(sub);
  const pub = await client(t, url, { clientId: 'v5-pub', protocolVersion: 5 });
  await pub.publishAsync('v5/x', 'hello', { qos: 1, properties: { userProperties: { site: 'north' }, contentType: 'text/plain' } });
  t.match(await got, { topic: 'v5/x', payload: 'hello', properties: { userProperties: { site: 'north' }, contentType: 'text/plain' } });
  t.equal(tb.broker.clients.get('v5-pub')?.protocolVersion, 5, 'connected as MQTT 5');
});

/** Opens a WebSocket offering `protocols`; resolves with the protocol the server chose, or the error. */
function openWs(url: string, protocols: string[], options: ClientOptions = {}): Promise<{ ws: WebSocket; protocol: string } | Error> {
  return within(
    new Promise((resolve) => {
      const ws = new WebSocket(url, protocols, options);
      ws.on('open', () => resolve({ ws, protocol: ws.protocol }));
      ws.on('error', (err) => resolve(err));
    }),
    'a WebSocket handshake',
  );
}

t.test('subprotocols: mqtt, then mqttv3.1, are chosen as clients expect; none offered is accepted too', async (t) => {
  const tb = await wsBroker(t);
  const url = `ws://127.0.0.1:${tb.wsPort}/mqtt`;
  for (const [offered, chosen] of [
    [['mqtt'], 'mqtt'],
    [['mqttv3.1'], 'mqttv3.1'],
    [['mqttv3.1', 'mqtt'], 'mqtt'],
    [[], ''],
  ] as const) {
    const result = await openWs(url, [...offered]);
    if (result instanceof Error) throw result;
    t.equal(result.protocol, chosen, `offered [${offered.join(', ')}]: ${chosen || 'none'}`);
    result.ws.terminate();
  }
  const other = await openWs(url, ['chat']);
  t.type(other, Error, 'a client offering only other subprotocols is not given one (and gives up)');
});

t.test('another path, or a plain HTTP request, is refused, logged and counted; MQTT on /mqtt goes on', async (t) => {
  const tb = await wsBroker(t);
  const wrong = await openWs(`ws://127.0.0.1:${tb.wsPort}/other`, ['mqtt']);
  t.match(wrong, { message: /Unexpected server response: 404/ }, 'upgrade on another path: 404');
  await t.rejects(within(connectAsync(`ws://127.0.0.1:${tb.wsPort}/`, { reconnectPeriod: 0, connectTimeout: 3000 }, false), 'mqtt.js on /'), 'mqtt.js on / fails');
  const status = (path: string) =>
    within(
      new Promise<number>((resolve, reject) => http.get(`http://127.0.0.1:${tb.wsPort}${path}`, (res) => resolve(res.resume().statusCode ?? 0)).on('error', reject)),
      'an HTTP answer',
    );
  t.equal(await status('/mqtt'), 426, 'GET /mqtt without upgrade: 426 Upgrade Required');
  t.equal(await status('/index.html'), 404, 'GET another path: 404');
  t.equal(tb.broker.metrics.webSocketRefused, 4, 'each refusal counted');
  t.match(
    tb.lines.find((l) => l.msg === 'WebSocket listener refused a request'),
    { level: 'warn', fields: { listener: `ws://127.0.0.1:${tb.wsPort}/mqtt`, reason: 'no MQTT at /other', remote: /^127\.0\.0\.1:\d+$/ } },
    'the first refusal logged (later ones within a minute are counted only)',
  );
  t.equal(tb.lines.filter((l) => l.msg === 'WebSocket listener refused a request').length, 1, 'logged at a bounded rate');
  const ok = await client(t, `ws://127.0.0.1:${tb.wsPort}/mqtt?token=1`, { clientId: 'query' });
  t.ok(ok.connected, 'the path matches without its query string');
});

t.test('a client that opens the ws port and sends no (or half an) HTTP request is closed after limits.connectTimeout, counted', async (t) => {
  const tb = await wsBroker(t, { limits: { connectTimeout: 300 } });
  const answers = await Promise.all(
    ['', 'GET /mqtt HTTP/1.1\r\n'].map((sent) =>
      within(
        new Promise<string>((resolve) => {
          let answer = '';
          const socket = net.connect(tb.wsPort, '127.0.0.1', () => socket.write(sent));
          t.teardown(() => socket.destroy());
          socket.on('data', (d: Buffer) => (answer += d.toString('latin1')));
          socket.on('close', () => resolve(answer));
          socket.on('error', () => undefined);
        }),
        'the server to close the silent connection',
        5000,
      ),
    ),
  );
  for (const answer of answers) t.match(answer, /^HTTP\/1\.1 408 Request Timeout\r\n/, 'answered 408 and closed');
  t.equal(tb.broker.metrics.webSocketRefused, 2, 'both counted');
  t.match(tb.lines.find((l) => l.msg === 'WebSocket listener refused a request'), { fields: { reason: 'bad HTTP request: ERR_HTTP_REQUEST_TIMEOUT' } });
});

/** A bare MQTT client over a `ws` WebSocket, to control frames and reading. */
class RawWsClient {
  readonly received: Packet[] = [];
  closed: { code: number } | null = null;
  private constructor(readonly ws: WebSocket) {
    const parser = createParser({ protocolVersion: 4 });
    parser.on('packet', (p: Packet) => this.received.push(p));
    ws.on('message', (data: Buffer) => parser.parse(data));
    ws.on('close', (code) => (this.closed = { code }));
    ws.on('error', () => undefined);
  }
  static async connect(t: Test, url: string, clientId: string): Promise<RawWsClient> {
    const opened = await openWs(url, ['mqtt']);
    if (opened instanceof Error) throw opened;
    const c = new RawWsClient(opened.ws);
    t.teardown(() => opened.ws.terminate());
    c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId, keepalive: 0 });
    await waitFor(() => c.received.some((p) => p.cmd === 'connack'), 3000, 'CONNACK');
    return c;
  }
  send(packet: Packet): void {
    this.ws.send(generate(packet));
  }
}

t.test('a packet larger than maxPacketSize over WebSockets closes that connection only, counted', async (t) => {
  const tb = await wsBroker(t, { limits: { maxPacketSize: 2048 } });
  const url = `ws://127.0.0.1:${tb.wsPort}/mqtt`;
  const bystander = await client(t, url, { clientId: 'bystander' });
  await bystander.subscribeAsync('big/#');
  const big = await RawWsClient.connect(t, url, 'big');
  big.send({ cmd: 'publish', topic: 'big/one', payload: Buffer.alloc(4096, 1), qos: 0, retain: false, dup: false });
  await waitFor(() => big.closed !== null, 3000, 'the oversized sender to be closed');
  t.equal(big.closed?.code, 1009, 'closed with WebSocket 1009 (message too big)');
  t.equal(tb.broker.metrics.limitHits.maxPacketSize, 1, 'counted as limitHits.maxPacketSize');
  t.match(tb.lines.find((l) => l.msg === 'packet larger than maxPacketSize; client disconnected'), { fields: { clientId: 'big' } });

  // A packet split over several small WebSocket messages is checked from its header too.
  const split = await RawWsClient.connect(t, url, 'split');
  const bytes = generate({ cmd: 'publish', topic: 'big/two', payload: Buffer.alloc(4096, 2), qos: 0, retain: false, dup: false });
  split.ws.send(bytes.subarray(0, 100));
  await waitFor(() => split.closed !== null, 3000, 'the split oversized sender to be closed');
  t.equal(tb.broker.metrics.limitHits.maxPacketSize, 2, 'counted from the announced length');

  const got = nextMessage(bystander);
  await bystander.publishAsync('big/small', 'fits');
  t.match(await got, { topic: 'big/small', payload: 'fits' }, 'the other connection is unaffected');
});

t.test('a text frame closes the connection (MQTT-6.0.0-1)', async (t) => {
  const tb = await wsBroker(t);
  const c = await RawWsClient.connect(t, `ws://127.0.0.1:${tb.wsPort}/mqtt`, 'texter');
  c.ws.send('not binary');
  await waitFor(() => c.closed !== null, 3000, 'the connection to close');
  t.match(tb.lines.find((l) => l.msg === 'client disconnected' && l.fields?.clientId === 'texter'), { level: 'warn', fields: { reason: 'protocol-error', detail: /text frame/ } });
});

t.test('a WebSocket subscriber that stops reading: messages to it are dropped at maxOutgoingBytes, its publisher paused, memory bounded', async (t) => {
  const maxOutgoingBytes = 256 * 1024;
  const tb = await wsBroker(t, { limits: { maxOutgoingBytes, outgoingHighWater: 32 * 1024, backpressureTimeout: 20 } });
  const slow = await RawWsClient.connect(t, `ws://127.0.0.1:${tb.wsPort}/mqtt`, 'slow-ws');
  slow.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'flood/#', qos: 0 }] });
  await waitFor(() => slow.received.some((p) => p.cmd === 'suback'), 3000, 'SUBACK');
  slow.ws.pause(); // stops reading its TCP socket: kernel buffers fill, then the broker's
  const slowConn = tb.broker.clients.get('slow-ws');
  if (slowConn === undefined) throw new Error('slow-ws not connected');

  const publisher = await RawClient.connect(tb.tcpPort, { clientId: 'flooder' });
  t.teardown(() => publisher.destroy());
  const payload = Buffer.alloc(16 * 1024, 0x78);
  const packet = generate({ cmd: 'publish', topic: 'flood/data', payload, qos: 0, retain: false, dup: false });
  const memory = (): number => process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
  const before = memory();
  let memoryMax = before;
  let bufferedMax = 0;
  let sent = 0;
  const deadline = Date.now() + 8000;
  // Floods until the broker drops (the kernel's socket buffers on loopback take megabytes first)
  // and at least 16 × maxOutgoingBytes were offered, writing only while the publisher's socket
  // takes it (the broker pausing the publisher shows up here as a full socket).
  const hits = tb.broker.metrics.limitHits;
  while ((hits.maxOutgoingBytes === 0 || sent * payload.length < 16 * maxOutgoingBytes) && Date.now() < deadline) {
    if (publisher.socket.writableLength < 256 * 1024) {
      publisher.socket.write(packet);
      sent++;
    } else {
      await new Promise((r) => setTimeout(r, 5));
    }
    if (sent % 8 === 0) {
      bufferedMax = Math.max(bufferedMax, slowConn.bufferedBytes);
      memoryMax = Math.max(memoryMax, memory());
      await new Promise((r) => setImmediate(r));
    }
  }
  t.comment(`sent ${sent} × 16 KiB; slow buffer max ${bufferedMax}; drops ${hits.maxOutgoingBytes}; pauses ${hits.backpressurePauses}; memory growth ${((memoryMax - before) / 1e6).toFixed(1)} MB`);
  t.ok(hits.maxOutgoingBytes > 0, 'QoS 0 messages to the WebSocket subscriber were dropped (its buffer is seen)');
  t.ok(hits.backpressurePauses > 0, 'the publisher was paused for it');
  t.ok(bufferedMax > 0 && bufferedMax <= maxOutgoingBytes + packet.length, `its buffer stayed within maxOutgoingBytes plus one message (max ${bufferedMax})`);
  t.ok(memoryMax - before < 64 * 1024 * 1024, 'memory stayed bounded');
  t.equal(slow.closed, null, 'the slow subscriber stays connected');

  slow.ws.resume();
  await waitFor(() => slow.received.some((p) => p.cmd === 'publish' && (p.payload as Buffer).length === payload.length), 5000, 'an intact message once it reads again');
  await waitFor(() => slowConn.bufferedBytes === 0, 5000, 'the WebSocket subscriber to drain');
  t.pass('it drains once it reads again');
});
