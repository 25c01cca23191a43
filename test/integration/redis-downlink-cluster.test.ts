/**
 * The Redis adapter against a real `redis-server` (issue 5, items 4 and 5, TLS, credentials): the
 * real gateway (`node dist/gateway/main.js --config FILE`) in child processes, mqtt.js clients,
 * and an ioredis client of the test's own for XADD and for looking into Redis.
 *
 * - downlink: stream entries become local publishes (topic, binary payload, qos, retain), each
 *   consumed once across restarts, invalid ones skipped without blocking the stream;
 * - cluster: three gateways on one Redis, every subscriber gets every message once, retained
 *   messages reach gateways that subscribe or start later, and nothing loops;
 * - TLS with a private CA (and a wrong one), and a password in the URL that never reaches a log.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import type { MqttClient } from 'mqtt';
import type Redis from 'ioredis';
import { waitFor } from '../helpers/broker';
import { within } from '../helpers/mqtt-client';
import { freePort, waitForOutput, type Running } from '../helpers/processes';
import { RedisServer } from '../helpers/redis';
import { channelSubscribers, gatewayClient as mqttClient, persistentClient, redisLines, retainedOnSubscribe, startRedisGateway, stopGateway, sysValues, type GatewaySpec } from '../helpers/redis-gateways';

const dir = mkdtempSync(join(tmpdir(), 'edgeway-redis-dc-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** The real gateway CLI; SIGKILLed by PID when the test ends if still running. */
function startGateway(t: Test, spec: GatewaySpec): Promise<Running> {
  return startRedisGateway(t, dir, spec);
}

interface Received {
  readonly topic: string;
  readonly payload: Buffer;
  readonly qos: number;
  readonly retain: boolean;
}

function collect(c: MqttClient, into: Received[] = []): Received[] {
  c.on('message', (topic, payload, packet) => into.push({ topic, payload, qos: packet.qos, retain: packet.retain }));
  return into;
}

const texts = (got: readonly Received[]): string[] => got.map((m) => m.payload.toString());

t.test('downlink: an entry added while the gateway runs is published locally with its topic, binary payload, qos and retain flag', async (t) => {
  const redis = await RedisServer.start(t);
  const r = redis.client();
  const port = await freePort();
  const gw = await startGateway(t, { name: 'dl-live', port, redis: redisLines(redis.url, 'dl-live') });
  const sub = await mqttClient(t, port, { clientId: 'dl-live-sub' });
  const got = collect(sub);
  await sub.subscribeAsync('cmd/#', { qos: 2 });

  // The default downlink stream, `{gatewayId}` expanded.
  const stream = 'edgeway:downlink:dl-live';
  const binary = Buffer.from(Array.from({ length: 256 }, (_, i) => i)); // not valid UTF-8
  await r.xadd(stream, '*', 'topic', 'cmd/bin', 'payload', binary, 'qos', '2');
  await r.xadd(stream, '*', 'topic', 'cmd/plain', 'payload', 'hello');
  await r.xadd(stream, '*', 'topic', 'cmd/keep', 'payload', 'kept', 'qos', '1', 'retain', '1');
  await waitFor(() => got.length >= 3, 5000, 'the three downlink entries at the subscriber');
  // MQTT orders messages per topic only (QoS 0 may overtake a QoS 2 message on another topic).
  const byTopic = new Map(got.map((m) => [m.topic, m]));
  t.same(
    [...byTopic.values()].map((m) => [m.topic, m.qos]).sort(),
    [
      ['cmd/bin', 2],
      ['cmd/keep', 1],
      ['cmd/plain', 0],
    ],
    'each entry published at its qos (no qos field: 0)',
  );
  t.same(byTopic.get('cmd/bin')?.payload, binary, 'binary payload byte for byte');
  t.equal(byTopic.get('cmd/plain')?.payload.toString(), 'hello');
  t.equal(byTopic.get('cmd/keep')?.payload.toString(), 'kept');

  // retain 1 is a retained message: a new subscriber gets it, flagged; the others were not retained.
  const late = await mqttClient(t, port, { clientId: 'dl-live-late' });
  const lateGot = collect(late);
  await late.subscribeAsync('cmd/#', { qos: 2 });
  // Retained messages are sent on SUBSCRIBE, before a message published after the SUBACK.
  await sub.publishAsync('cmd/marker', 'marker', { qos: 1 });
  await waitFor(() => texts(lateGot).includes('marker'), 3000, 'the marker at the late subscriber');
  t.same(
    lateGot.filter((m) => m.topic !== 'cmd/marker').map((m) => [m.topic, m.payload.toString(), m.qos, m.retain]),
    [['cmd/keep', 'kept', 1, true]],
    'a new subscriber gets the entry with retain 1, flagged retained, and only that one',
  );
  t.equal(got.length, 4, 'nothing delivered twice to the first subscriber (3 entries + the marker)');
  t.equal(gw.child.exitCode, null, 'gateway still running');
});

t.test('downlink: an entry added while the gateway is down is delivered after it starts, exactly once; not again after another restart', async (t) => {
  const redis = await RedisServer.start(t);
  const r = redis.client();
  const port = await freePort();
  const spec: GatewaySpec = { name: 'dl-restart', port, redis: redisLines(redis.url, 'dl-restart') };
  const stream = 'edgeway:downlink:dl-restart';

  // Run 1: a persistent QoS 1 session subscribes; one entry while running.
  let gw = await startGateway(t, spec);
  const run1: Received[] = [];
  let s = await persistentClient(t, port, 'dl-restart-sub', (c) => collect(c, run1));
  await s.subscribeAsync('cmd/#', { qos: 1 });
  await r.xadd(stream, '*', 'topic', 'cmd/one', 'payload', 'while running', 'qos', '1');
  await waitFor(() => run1.length >= 1, 5000, 'the entry added while running');
  t.same(texts(run1), ['while running'], 'run 1: the entry added while running');
  await within(s.endAsync(), 'client end');
  await stopGateway(t, gw, 'dl-restart (run 1)');

  // Down: an entry arrives in the stream.
  await r.xadd(stream, '*', 'topic', 'cmd/two', 'payload', 'while down', 'qos', '1');

  // Run 2: delivered (into the persistent session, or live); the marker added afterwards proves
  // that nothing else is coming before it (the stream and the session queue keep order).
  gw = await startGateway(t, spec);
  const run2: Received[] = [];
  s = await persistentClient(t, port, 'dl-restart-sub', (c) => collect(c, run2));
  await waitFor(() => texts(run2).includes('while down'), 5000, 'the entry added while the gateway was down');
  await r.xadd(stream, '*', 'topic', 'cmd/marker', 'payload', 'marker 2', 'qos', '1');
  await waitFor(() => texts(run2).includes('marker 2'), 5000, 'marker 2');
  t.same(texts(run2), ['while down', 'marker 2'], 'run 2: the entry added while down, once; the one consumed in run 1 not again');
  await within(s.endAsync(), 'client end');
  await stopGateway(t, gw, 'dl-restart (run 2)');

  // Run 3: the last consumed id was kept: nothing is read again.
  gw = await startGateway(t, spec);
  const run3: Received[] = [];
  s = await persistentClient(t, port, 'dl-restart-sub', (c) => collect(c, run3));
  await r.xadd(stream, '*', 'topic', 'cmd/marker', 'payload', 'marker 3', 'qos', '1');
  await waitFor(() => texts(run3).includes('marker 3'), 5000, 'marker 3');
  t.same(texts(run3), ['marker 3'], 'run 3: nothing delivered again after another restart');
  t.equal(await r.xlen(stream), 4, 'the entries stay in the stream (consumed means: the gateway read past them)');
  await within(s.endAsync(), 'client end');
  await stopGateway(t, gw, 'dl-restart (run 3)');
});

t.test('downlink: invalid entries are skipped with a log line and do not block the next valid one', async (t) => {
  const redis = await RedisServer.start(t);
  const r = redis.client();
  const port = await freePort();
  const gw = await startGateway(t, { name: 'dl-invalid', port, sysInterval: 1, redis: redisLines(redis.url, 'dl-invalid') });
  const sub = await mqttClient(t, port, { clientId: 'dl-invalid-sub' });
  const got = collect(sub);
  const sys = await sysValues(sub, '$SYS/broker/downlink/#');
  await sub.subscribeAsync('cmd/#', { qos: 1 });

  const stream = 'edgeway:downlink:dl-invalid';
  const noTopic = await r.xadd(stream, '*', 'payload', 'no topic');
  await r.xadd(stream, '*', 'topic', 'cmd/bad-qos', 'payload', 'qos seven', 'qos', '7');
  await r.xadd(stream, '*', 'topic', 'cmd/#', 'payload', 'wildcard topic');
  await r.xadd(stream, '*', 'topic', 'cmd/ok', 'payload', 'valid', 'qos', '1');
  await waitFor(() => got.some((m) => m.topic === 'cmd/ok'), 5000, 'the valid entry behind the invalid ones');
  t.same(
    got.filter((m) => !m.topic.startsWith('$SYS/')).map((m) => [m.topic, m.payload.toString()]),
    [['cmd/ok', 'valid']],
    'only the valid entry is published',
  );
  await waitForOutput(() => gw.stdout + gw.stderr, /redis downlink: entry skipped/, 3000, 'the log line of a skipped entry');
  const line = (gw.stdout + gw.stderr).split('\n').find((l) => l.includes('redis downlink: entry skipped')) ?? '';
  t.match(line, /^\S+Z warn /, 'a warning, after the time');
  t.match(line, new RegExp(`id=${noTopic}\\b`), 'names the entry id');
  t.match(line, /reason="no topic field"/, 'names the reason');
  t.match(line, /stream=edgeway:downlink:dl-invalid/, 'names the stream');
  // Later skips within a minute are rate-limited in the log; the counter has every one.
  await waitFor(() => sys.get('$SYS/broker/downlink/invalid') === '3' && sys.get('$SYS/broker/downlink/delivered') === '1', 5000, '$SYS downlink counters');
  t.equal(sys.get('$SYS/broker/downlink/invalid'), '3', 'all three invalid entries counted');
  t.equal(sys.get('$SYS/broker/downlink/delivered'), '1', 'one delivered');
  t.equal(gw.child.exitCode, null, 'gateway still running');
});

t.test('cluster: three gateways on one Redis; every subscriber gets every message once; retained messages travel; no loops', async (t) => {
  const redis = await RedisServer.start(t);
  const r = redis.client();
  const channel = 'edgeway:cluster';
  // The test's own view of the channel: what each gateway sends there.
  const spy = redis.client();
  const frames: { o: string; t: string; r: boolean; p: string }[] = [];
  spy.on('messageBuffer', (_ch: Buffer, data: Buffer) => {
    try {
      frames.push(JSON.parse(data.toString()) as (typeof frames)[number]);
    } catch {
      frames.push({ o: '?', t: `unparsable: ${data.toString().slice(0, 40)}`, r: false, p: '' });
    }
  });
  await spy.subscribe(channel);
  const numsub = (): Promise<number> => channelSubscribers(r, channel);

  const ids = ['cl-a', 'cl-b', 'cl-c'] as const;
  const lines = (id: string) => redisLines(redis.url, id, ['downlink:', '  enabled: false', 'cluster:', '  enabled: true']);
  const ports: number[] = [];
  const gws: Running[] = [];
  for (const id of ids) {
    const port = await freePort();
    ports.push(port);
    gws.push(await startGateway(t, { name: id, port, redis: lines(id) }));
  }
  for (const [i, gw] of gws.entries()) await waitForOutput(() => gw.stdout + gw.stderr, /redis: connected/, 10_000, `${ids[i]} connected to Redis`);
  // Pub/sub is at most once: publish only when every gateway listens (3 + the spy).
  const deadline = Date.now() + 10_000;
  while ((await numsub()) < 4 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
  t.equal(await numsub(), 4, 'the three gateways subscribed to the cluster channel');

  const clients: MqttClient[] = [];
  const got: Received[][] = [];
  for (const [i, id] of ids.entries()) {
    const c = await mqttClient(t, ports[i] as number, { clientId: `${id}-sub` });
    got.push(collect(c));
    await c.subscribeAsync('clu/#', { qos: 1 });
    clients.push(c);
  }
  for (const [i, id] of ids.entries()) await clients[i]?.publishAsync(`clu/from/${id}`, `hello from ${id}`, { qos: 1 });
  const expected = ids.map((id) => `hello from ${id}`);
  await waitFor(() => got.every((g) => expected.every((p) => texts(g).includes(p))), 5000, 'every message at every subscriber');
  // Quiet period: a duplicate or an echo would arrive within it.
  await new Promise((res) => setTimeout(res, 700));
  for (const [i, id] of ids.entries()) {
    const mine = got[i] ?? [];
    t.same([...texts(mine)].sort(), expected, `subscriber on ${id}: all three messages, each once (its own local one included)`);
    t.ok(
      mine.every((m) => m.topic === `clu/from/${m.payload.toString().slice('hello from '.length)}` && m.qos === 1 && !m.retain),
      `subscriber on ${id}: topics and qos as published`,
    );
  }
  const sent = frames.filter((f) => f.t.startsWith('clu/'));
  t.same(sent.map((f) => `${f.o} ${f.t}`).sort(), ids.map((id) => `${id} clu/from/${id}`), 'each message went to the channel once, by its origin gateway only');

  // Retained: published on A, a NEW subscriber on C gets it flagged retained.
  await clients[0]?.publishAsync('clu/retained', 'kept by the cluster', { qos: 1, retain: true });
  await waitFor(() => texts(got[2] ?? []).includes('kept by the cluster'), 5000, 'the retained message live on C');
  const newC = await mqttClient(t, ports[2] as number, { clientId: 'cl-c-new' });
  const newCGot = collect(newC);
  await newC.subscribeAsync('clu/retained', { qos: 1 });
  await waitFor(() => newCGot.length >= 1, 3000, 'the retained message at a new subscriber on C');
  t.same(newCGot.map((m) => [m.topic, m.payload.toString(), m.retain]), [['clu/retained', 'kept by the cluster', true]], 'a new subscriber on C gets it, flagged retained');
  const stored = await r.hget(`${channel}:retained`, 'clu/retained');
  t.match(JSON.parse(stored ?? '{}'), { o: 'cl-a', t: 'clu/retained', r: true }, 'kept in the cluster hash with its origin');

  // A gateway that starts later loads the cluster's retained messages (once, at start).
  const portD = await freePort();
  const gwD = await startGateway(t, { name: 'cl-d', port: portD, redis: lines('cl-d') });
  await waitForOutput(() => gwD.stdout + gwD.stderr, /redis: connected/, 10_000, 'cl-d connected to Redis');
  const deadlineD = Date.now() + 5000;
  while ((await numsub()) < 5 && Date.now() < deadlineD) await new Promise((res) => setTimeout(res, 50));
  const dGot = await retainedOnSubscribe(t, portD, 'clu/retained', deadlineD);
  t.same(dGot.map((m) => [m.topic, m.payload.toString(), m.retain]), [['clu/retained', 'kept by the cluster', true]], 'a gateway started later has the retained message of A');
  t.notMatch(gwD.stdout + gwD.stderr, /retained messages not loaded/, 'cl-d loaded the retained messages without error');

  // Clearing it on A (an empty retained message) clears it in the hash and on the other gateways.
  await clients[0]?.publishAsync('clu/retained', '', { qos: 1, retain: true });
  await waitFor(() => (got[2] ?? []).some((m) => m.topic === 'clu/retained' && m.payload.length === 0), 5000, 'the clearing message on C');
  const clearDeadline = Date.now() + 3000;
  while ((await r.hexists(`${channel}:retained`, 'clu/retained')) === 1 && Date.now() < clearDeadline) await new Promise((res) => setTimeout(res, 50));
  t.equal(await r.hexists(`${channel}:retained`, 'clu/retained'), 0, 'removed from the cluster hash');
  const newC2 = await mqttClient(t, ports[2] as number, { clientId: 'cl-c-new-2' });
  const newC2Got = collect(newC2);
  await newC2.subscribeAsync(['clu/retained', 'mark/c'], { qos: 1 });
  await newC2.publishAsync('mark/c', 'marker', { qos: 1 });
  await waitFor(() => texts(newC2Got).includes('marker'), 3000, 'the marker on C');
  t.same(newC2Got.filter((m) => m.topic !== 'mark/c'), [], 'a new subscriber on C gets no retained message any more');

  // No loop: nothing more arrives, and nothing more goes to the channel.
  const count = (): number => got.reduce((n, g) => n + g.length, 0) + newCGot.length + frames.filter((f) => f.t.startsWith('clu/')).length;
  const before = count();
  await new Promise((res) => setTimeout(res, 1000));
  t.equal(count(), before, `after a quiet second the totals did not grow (${before})`);
  t.same(
    frames.filter((f) => f.t === 'clu/retained').map((f) => [f.o, f.r, f.p]),
    [
      ['cl-a', true, Buffer.from('kept by the cluster').toString('base64')],
      ['cl-a', true, ''],
    ],
    'the retained message and its clearing went to the channel once each, from A (C and D did not send them back)',
  );
  t.same(
    got.map((g) => g.filter((m) => m.topic === 'clu/retained').map((m) => m.payload.toString())),
    [
      ['kept by the cluster', ''],
      ['kept by the cluster', ''],
      ['kept by the cluster', ''],
    ],
    'each first subscriber got the retained message and its clearing once each (live)',
  );
  for (const [i, gw] of gws.entries()) await stopGateway(t, gw, ids[i] as string);
  await stopGateway(t, gwD, 'cl-d');
});

/** A throwaway CA, a server certificate for IP 127.0.0.1 signed by it, and an unrelated CA. */
function makeCertificates(t: Test): { ca: string; cert: string; key: string; wrongCa: string } | string {
  const certs = mkdtempSync(join(dir, 'certs-'));
  const run = (args: string[]): string | null => {
    const res = spawnSync('openssl', args, { cwd: certs, encoding: 'utf8', timeout: 20_000 });
    return res.status === 0 ? null : `openssl ${args[0]} failed: ${res.error?.message ?? res.stderr}`;
  };
  writeFileSync(join(certs, 'server.ext'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n');
  const steps: string[][] = [
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=edgeway test CA'],
    ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1'],
    ['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'server.ext'],
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'wrong-ca.key', '-out', 'wrong-ca.pem', '-days', '2', '-subj', '/CN=edgeway unrelated CA'],
  ];
  for (const step of steps) {
    const problem = run(step);
    if (problem !== null) return problem;
  }
  t.teardown(() => rmSync(certs, { recursive: true, force: true }));
  return { ca: join(certs, 'ca.pem'), cert: join(certs, 'server.pem'), key: join(certs, 'server.key'), wrongCa: join(certs, 'wrong-ca.pem') };
}

t.test('TLS: rediss:// with the private CA carries the uplink; with a wrong CA a clear TLS error is logged and the gateway keeps serving locally', async (t) => {
  const certs = makeCertificates(t);
  if (typeof certs === 'string') return t.plan(0, `no throwaway certificates: ${certs}`);
  // TLS on a port of its own; the plain port stays for the test's own client (assertions only).
  const tlsPort = await freePort();
  let redis: RedisServer;
  try {
    redis = await RedisServer.start(t, {
      args: ['--tls-port', String(tlsPort), '--tls-cert-file', certs.cert, '--tls-key-file', certs.key, '--tls-ca-cert-file', certs.ca, '--tls-auth-clients', 'no'],
    });
  } catch (err) {
    // A build without TLS refuses the directives ("Bad directive or wrong number of arguments").
    const text = String(err);
    if (/Bad directive/i.test(text) && /tls/i.test(text)) return t.plan(0, `redis-server here has no TLS support: ${text.split('\n')[0]}`);
    throw err;
  }
  const r = redis.client();
  const url = `rediss://127.0.0.1:${tlsPort}`;

  const portOk = await freePort();
  const ok = await startGateway(t, { name: 'tls-ok', port: portOk, redis: redisLines(url, 'tls-ok', ['tls:', `  ca: ${JSON.stringify(certs.ca)}`]) });
  await waitForOutput(() => ok.stdout + ok.stderr, /redis: connected/, 10_000, 'tls-ok connected over TLS');
  const pub = await mqttClient(t, portOk, { clientId: 'tls-pub' });
  await pub.publishAsync('sensors/x', 'over tls', { qos: 1 });
  const stream = 'edgeway:uplink:tls-ok';
  const deadline = Date.now() + 5000;
  let entries: [string, string[]][] = [];
  while (entries.length === 0 && Date.now() < deadline) {
    entries = await r.xrange(stream, '-', '+');
    if (entries.length === 0) await new Promise((res) => setTimeout(res, 50));
  }
  t.equal(entries.length, 1, 'the uplink wrote the message into the stream over TLS');
  const fields = new Map<string, string>();
  const flat = entries[0]?.[1] ?? [];
  for (let i = 0; i + 1 < flat.length; i += 2) fields.set(flat[i] as string, flat[i + 1] as string);
  t.same([fields.get('topic'), fields.get('payload'), fields.get('gateway')], ['sensors/x', 'over tls', 'tls-ok'], 'topic, payload and gateway id');
  t.notMatch(ok.stdout + ok.stderr, /connection problem/, 'no connection problem logged with the right CA');

  const portBad = await freePort();
  const bad = await startGateway(t, { name: 'tls-bad', port: portBad, sysInterval: 1, redis: redisLines(url, 'tls-bad', ['tls:', `  ca: ${JSON.stringify(certs.wrongCa)}`]) });
  await waitForOutput(() => bad.stdout + bad.stderr, /redis: connection problem/, 10_000, 'tls-bad to log its connection problem');
  const line = (bad.stdout + bad.stderr).split('\n').find((l) => l.includes('redis: connection problem')) ?? '';
  t.match(line, /certificate/i, `the log says the certificate is the problem: ${line}`);
  t.match(line, new RegExp(`url=rediss://127\\.0\\.0\\.1:${tlsPort}`), 'and names the TLS URL');
  t.notMatch(bad.stdout + bad.stderr, /redis: connected/, 'never connected with the wrong CA');

  // Local service goes on: pub/sub through the gateway, and the uplink message waits in the outbox.
  const local = await mqttClient(t, portBad, { clientId: 'tls-bad-local' });
  const localGot = collect(local);
  const sys = await sysValues(local, '$SYS/broker/uplink/#');
  await local.subscribeAsync('local/#', { qos: 1 });
  await local.publishAsync('local/x', 'still local', { qos: 1 });
  await local.publishAsync('sensors/x', 'waits for the uplink', { qos: 1 });
  await waitFor(() => texts(localGot).includes('still local'), 3000, 'the local message');
  t.ok(texts(localGot).includes('still local'), 'local publish and subscribe work');
  await waitFor(() => sys.get('$SYS/broker/uplink/backlog') === '1', 5000, 'the uplink backlog in $SYS');
  t.equal(sys.get('$SYS/broker/uplink/state'), 'disconnected', 'uplink state: disconnected');
  t.equal(sys.get('$SYS/broker/uplink/backlog'), '1', 'the sensors message waits in the outbox');
  t.equal(await r.exists('edgeway:uplink:tls-bad'), 0, 'nothing reached Redis');
  t.equal(bad.child.exitCode, null, 'gateway still running');
  await stopGateway(t, bad, 'tls-bad');
  await stopGateway(t, ok, 'tls-ok');
});

t.test('a password in the URL works and never appears in the output, nor a wrong one', async (t) => {
  const password = 'Pw-4f9c1e7d-do-not-log';
  const wrong = 'Wrong-8b2a6c3e-do-not-log';
  const redis = await RedisServer.start(t, { password });
  const r = redis.client();
  const port = await freePort();
  const gw = await startGateway(t, { name: 'pw-ok', port, level: 'debug', sysInterval: 1, redis: redisLines(`redis://:${password}@127.0.0.1:${redis.port}`, 'pw-ok') });
  await waitForOutput(() => gw.stdout + gw.stderr, /redis: connected/, 10_000, 'pw-ok connected with the password');
  // Everything a client can see, too: status topic, $SYS.
  const watcher = await mqttClient(t, port, { clientId: 'pw-watcher' });
  const seen = collect(watcher);
  await watcher.subscribeAsync(['#', '$SYS/#'], { qos: 0 });
  const pub = await mqttClient(t, port, { clientId: 'pw-pub' });
  await pub.publishAsync('sensors/pw', 'authenticated', { qos: 1 });
  const deadline = Date.now() + 5000;
  while ((await r.xlen('edgeway:uplink:pw-ok')) === 0 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
  t.equal(await r.xlen('edgeway:uplink:pw-ok'), 1, 'the uplink works with the password from the URL');
  t.match(gw.stdout, new RegExp(`url="?redis://:\\*\\*\\*@127\\.0\\.0\\.1:${redis.port}`), 'the URL is logged with the password masked');

  const portBad = await freePort();
  const bad = await startGateway(t, { name: 'pw-bad', port: portBad, level: 'debug', sysInterval: 1, redis: redisLines(`redis://:${wrong}@127.0.0.1:${redis.port}`, 'pw-bad') });
  await waitForOutput(() => bad.stdout + bad.stderr, /authentication failed/, 10_000, 'pw-bad to log the authentication failure');
  const badWatcher = await mqttClient(t, portBad, { clientId: 'pw-bad-watcher' });
  const badSeen = collect(badWatcher);
  await badWatcher.subscribeAsync(['#', '$SYS/#'], { qos: 0 });
  await waitFor(() => badSeen.some((m) => m.topic === '$SYS/broker/uplink/state'), 5000, '$SYS values of pw-bad');

  await stopGateway(t, gw, 'pw-ok');
  await stopGateway(t, bad, 'pw-bad');
  for (const [name, out] of [
    ['pw-ok', gw.stdout + gw.stderr],
    ['pw-bad', bad.stdout + bad.stderr],
  ] as const) {
    t.notOk(out.includes(password), `${name}: the password is not in stdout/stderr`);
    t.notOk(out.includes(wrong), `${name}: the wrong password is not in stdout/stderr`);
  }
  const published = [...seen, ...badSeen].map((m) => m.payload.toString()).join('\n');
  t.ok(seen.length > 0 && badSeen.length > 0, 'the watchers saw status and $SYS messages');
  t.notOk(published.includes(password) || published.includes(wrong), 'no password in any published status or $SYS value');
});
