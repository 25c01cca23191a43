/**
 * "Acknowledged means durable" for QoS 2 (review findings A, B, C/D, E): the real gateway in a
 * child process (outbox taking `sensors/#`), RawClients for exact control of the packets, and
 * `kill -9` of the gateway right after the acknowledgement under test.
 * - PUBREC for a PUBLISH re-sent on a new connection waits for the first copy's commit;
 * - PUBCOMP waits for the commit of the released id: a client reusing the id after a crash is
 *   not swallowed as a duplicate;
 * - PUBREL to a persistent subscriber waits for the commit of its 'pubrel' state: after a crash
 *   the message is not sent again;
 * - a commit that fails (disk full) drops nothing and releases no id: acknowledgements wait for
 *   the retry, and a persistent QoS 2 subscriber gets the message exactly once.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import type { IPublishPacket } from 'mqtt-packet';
import { readOutbox, startGatewayProcess } from '../helpers/gateway';
import { freePort, waitForOutput, type Running } from '../helpers/processes';
import { RawClient } from '../helpers/raw-client';
import { smallFileSystem } from '../helpers/sqlite';

const dir = mkdtempSync(join(tmpdir(), 'edgeway-durable-qos2-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function writeConfig(name: string, port: number, flushInterval: number, dbPath = join(dir, `${name}.db`)): string {
  const config = join(dir, `${name}.yaml`);
  writeFileSync(
    config,
    `listeners:\n  - protocol: mqtt\n    host: 127.0.0.1\n    port: ${port}\nsys:\n  interval: 0\nlog:\n  level: warn\nstorage:\n  path: ${dbPath}\n  flushInterval: ${flushInterval}\n`,
  );
  return config;
}

function startGateway(t: Test, config: string): Promise<Running> {
  return startGatewayProcess(t, config, { uplinkTopics: 'sensors/#', cwd: dir });
}

/** `kill -9` of the gateway this test started (by its PID). */
async function killHard(t: Test, gw: Running): Promise<void> {
  process.kill(gw.child.pid as number, 'SIGKILL');
  t.same(await gw.exited, { code: null, signal: 'SIGKILL' }, 'the gateway was killed with SIGKILL');
}

async function stopGracefully(t: Test, gw: Running): Promise<void> {
  process.kill(gw.child.pid as number, 'SIGTERM');
  t.same(await gw.exited, { code: 0, signal: null }, 'SIGTERM: the gateway exits with code 0');
}

/** Connects a RawClient (closed when the test ends). */
async function raw(t: Test, port: number, clientId: string, clean: boolean): Promise<RawClient> {
  const c = await RawClient.connect(port, { clientId, clean });
  t.teardown(() => c.destroy());
  return c;
}

/** "topic:payload" of every outbox entry of a stopped gateway's database. */
async function outboxContents(path: string): Promise<string[]> {
  return (await readOutbox(path)).map((e) => `${e.topic}:${e.payload.toString()}`);
}

function publishQos2(c: RawClient, topic: string, payload: string | Buffer, messageId: number, dup: boolean): void {
  c.send({ cmd: 'publish', topic, payload: typeof payload === 'string' ? Buffer.from(payload) : payload, qos: 2, messageId, retain: false, dup });
}

const describe = (p: { cmd: string; messageId?: number; dup?: boolean; payload?: unknown }) =>
  p.cmd === 'publish' ? `publish id=${p.messageId} dup=${String(p.dup)} ${String(p.payload)}` : `${p.cmd} id=${p.messageId}`;

t.test('a QoS 2 PUBLISH re-sent on a new connection gets PUBREC only after the first copy is committed', async (t) => {
  const port = await freePort();
  // A long window, so that "before the commit" is long enough to look at.
  const config = writeConfig('redup', port, 1500);
  const gw = await startGateway(t, config);
  const first = await raw(t, port, 'pub-redup', false);
  publishQos2(first, 'sensors/redup', 'm1', 5, false);
  await sleep(50);
  t.same(first.received.map(describe), [], 'no PUBREC on the first connection before the commit');
  first.destroy(); // the connection is lost before PUBREC

  const second = await raw(t, port, 'pub-redup', false);
  publishQos2(second, 'sensors/redup', 'm1', 5, true); // the client re-sends [MQTT-4.4.0-1]
  const early = await second.collect('pubrec', 500);
  t.same(early.map(describe), [], 'no PUBREC for the re-sent PUBLISH while the first copy is not committed');
  t.equal((early[0] ?? (await second.next('pubrec', 5000))).messageId, 5, 'PUBREC once it is');
  // PUBREC means durable: killed at once.
  await killHard(t, gw);
  t.same(await outboxContents(join(dir, 'redup.db')), ['sensors/redup:m1'], 'the message is in the outbox after kill -9, once');
});

t.test('PUBCOMP is sent only after the release of the id is committed: the id reused after a kill -9 starts a new message', async (t) => {
  const port = await freePort();
  const config = writeConfig('reuse', port, 300);
  const first = await startGateway(t, config);
  const pub = await raw(t, port, 'pub-reuse', false);
  publishQos2(pub, 'sensors/reuse', 'first', 9, false);
  t.equal((await pub.next('pubrec')).messageId, 9, 'PUBREC for the first message');
  pub.send({ cmd: 'pubrel', messageId: 9 });
  t.equal((await pub.next('pubcomp')).messageId, 9, 'PUBCOMP');
  // PUBCOMP means the id is free, durably: killed at once.
  await killHard(t, first);

  const second = await startGateway(t, config);
  const watcher = await raw(t, port, 'watcher-reuse', true);
  watcher.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'sensors/#', qos: 1 }] });
  await watcher.next('suback');
  const back = await raw(t, port, 'pub-reuse', false);
  // Clean session 0, the same packet id, DUP=0: a new message [MQTT-4.3.3-2].
  publishQos2(back, 'sensors/reuse', 'second', 9, false);
  t.equal((await back.next('pubrec')).messageId, 9, 'PUBREC for the new message');
  back.send({ cmd: 'pubrel', messageId: 9 });
  t.equal((await back.next('pubcomp')).messageId, 9, 'PUBCOMP');
  const delivered = await watcher.collect('publish', 300);
  t.same(delivered.map((p) => String(p.payload)), ['second'], 'the new message is routed to the subscriber, not swallowed as a duplicate');
  back.disconnect();
  watcher.disconnect();
  await stopGracefully(t, second);
  t.same(await outboxContents(join(dir, 'reuse.db')), ['sensors/reuse:first', 'sensors/reuse:second'], 'both messages are in the outbox');
});

/**
 * A persistent QoS 2 subscriber receives a message and PUBRECs it; the gateway is killed right
 * after its PUBREL (`thenPubcomp`: and after the subscriber's PUBCOMP). Returns the subscriber's
 * packet id and what the restarted gateway sends the subscriber when it comes back.
 */
async function pubrelThenKill(t: Test, name: string, thenPubcomp: boolean): Promise<{ id: number; back: RawClient; gw: Running }> {
  const port = await freePort();
  const config = writeConfig(name, port, 300);
  const first = await startGateway(t, config);
  const sub = await raw(t, port, `sub-${name}`, false);
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'x/#', qos: 2 }] });
  t.same((await sub.next('suback')).granted, [2], 'subscribed at QoS 2');
  const pub = await raw(t, port, `pub-${name}`, true);
  publishQos2(pub, 'x/1', 'once', 3, false);
  await pub.next('pubrec'); // the message is queued for the subscriber, committed
  const msg = await sub.next('publish');
  t.same([String(msg.payload), msg.qos, msg.dup], ['once', 2, false], 'the subscriber receives it at QoS 2');
  const id = msg.messageId ?? 0;
  sub.send({ cmd: 'pubrec', messageId: id });
  t.equal((await sub.next('pubrel', 5000)).messageId, id, 'PUBREL for it');
  if (thenPubcomp) {
    sub.send({ cmd: 'pubcomp', messageId: id });
    await sleep(20);
  }
  await killHard(t, first);

  const gw = await startGateway(t, config);
  const back = await raw(t, port, `sub-${name}`, false);
  return { id, back, gw };
}

t.test('PUBREL to a persistent subscriber is sent only after its state is committed: after a kill -9, PUBREL again, never the PUBLISH', async (t) => {
  const { id, back, gw } = await pubrelThenKill(t, 'pubrel', false);
  const got = await back.collect('pubrel', 300);
  const again = back.received.filter((p) => p.cmd === 'publish');
  t.same(again.map(describe), [], 'the message is not sent again');
  t.same(got.map(describe), [`pubrel id=${id}`], 'PUBREL is sent again [MQTT-4.4.0-1]');
  back.send({ cmd: 'pubcomp', messageId: id });
  back.send({ cmd: 'pingreq' });
  await back.next('pingresp');
  back.disconnect();
  await back.waitClosed();
  await stopGracefully(t, gw);
});

t.test('a persistent subscriber\'s PUBCOMP right before a kill -9: after the restart PUBREL or nothing, never the PUBLISH', async (t) => {
  const { id, back, gw } = await pubrelThenKill(t, 'pubcomp', true);
  await sleep(300);
  const got = back.received.map(describe);
  t.same(got.filter((p) => p.startsWith('publish')), [], 'the message is not sent again');
  t.ok(got.length === 0 || (got.length === 1 && got[0] === `pubrel id=${id}`), `at most PUBREL for id ${id} (got ${JSON.stringify(got)})`);
  back.disconnect();
  await stopGracefully(t, gw);
});

t.test('disk full: a QoS 2 message is not acknowledged (nor its id released) until it is stored; the persistent subscriber gets it exactly once', async (t) => {
  const small = smallFileSystem(t, '2m');
  if (typeof small === 'string') return t.plan(0, small);
  const mount = small.dir;
  const port = await freePort();
  const gw = await startGateway(t, writeConfig('full', port, 20, join(mount, 'edgeway.db')));

  // The subscriber (clean session 0, QoS 2) leaves; its session is stored.
  const sub = await raw(t, port, 'sub-full', false);
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'q2/#', qos: 2 }] });
  await sub.next('suback');
  sub.disconnect();
  await sub.waitClosed();
  await sleep(200); // its session is committed

  // Fill the file system.
  const filler = join(mount, 'filler');
  spawnSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k'], { stdio: 'ignore' });

  const payload = Buffer.alloc(256 * 1024, 7);
  const pub = await raw(t, port, 'pub-full', false);
  publishQos2(pub, 'q2/big', payload, 3, false);
  await waitForOutput(() => gw.stderr, /commit failed/, 5000, 'the error line');
  t.same((await pub.collect('pubrec', 1200)).map(describe), [], 'no PUBREC while the message cannot be stored (commits are retried meanwhile)');
  t.notOk(pub.closed, 'the publisher stays connected');
  // The client gives up on the connection and re-sends on a new one: the id is still held, so
  // the copy is not routed again, and its PUBREC waits for the same commit.
  pub.destroy();
  const again = await raw(t, port, 'pub-full', false);
  publishQos2(again, 'q2/big', payload, 3, true);
  t.same((await again.collect('pubrec', 500)).map(describe), [], 'no PUBREC for the re-sent copy either');

  rmSync(filler);
  t.equal((await again.next('pubrec', 5000)).messageId, 3, 'with space again the retry stores it, and then it is acknowledged');
  again.send({ cmd: 'pubrel', messageId: 3 });
  t.equal((await again.next('pubcomp', 5000)).messageId, 3, 'PUBCOMP');
  again.disconnect();

  const back = await raw(t, port, 'sub-full', false);
  const got: IPublishPacket[] = [await back.next('publish', 5000)];
  const first = got[0] as IPublishPacket;
  back.send({ cmd: 'pubrec', messageId: first.messageId });
  t.equal((await back.next('pubrel')).messageId, first.messageId, 'PUBREL for it');
  back.send({ cmd: 'pubcomp', messageId: first.messageId });
  got.push(...(await back.collect('publish', 500)));
  t.same(
    got.map((p) => [p.topic, p.payload.length, p.qos]),
    [['q2/big', payload.length, 2]],
    'the subscriber receives the message exactly once',
  );
  back.disconnect();
  await stopGracefully(t, gw);
});
