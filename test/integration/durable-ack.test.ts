/**
 * "Acknowledged means durable" (issue 4, item 4): the real gateway in a child process, with the
 * outbox taking `sensors/#`. mqtt.js clients publish QoS 1 as fast as the gateway acknowledges
 * while the gateway is killed with SIGKILL; afterwards every PUBACKed message must be in the
 * outbox, once, in publish order per client.
 */
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import t, { type Test } from 'tap';
import { connectAsync, type MqttClient } from 'mqtt';
import { readOutbox, startGatewayProcess } from '../helpers/gateway';
import { within } from '../helpers/mqtt-client';
import { RawClient } from '../helpers/raw-client';
import { smallFileSystem } from '../helpers/sqlite';
import { freePort, waitForOutput, type Running } from '../helpers/processes';

const dir = mkdtempSync(join(tmpdir(), 'edgeway-durable-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

interface Started {
  readonly gw: Running;
  readonly url: string;
}

async function startGateway(t: Test, name: string, port: number, flushInterval: number, sysInterval = 0): Promise<Started> {
  const config = join(dir, `${name}.yaml`);
  writeFileSync(
    config,
    `listeners:\n  - protocol: mqtt\n    host: 127.0.0.1\n    port: ${port}\nsys:\n  interval: ${sysInterval}\nlog:\n  level: warn\nstorage:\n  path: ${join(dir, `${name}.db`)}\n  flushInterval: ${flushInterval}\n`,
  );
  const gw = await startGatewayProcess(t, config, { uplinkTopics: 'sensors/#', cwd: dir });
  return { gw, url: `mqtt://127.0.0.1:${port}` };
}


async function client(t: Test, url: string, clientId: string): Promise<MqttClient> {
  const c = await connectAsync(url, { clientId, reconnectPeriod: 0, connectTimeout: 3000 }, false);
  t.teardown(() => within(c.endAsync(true), 'mqtt.js end').catch(() => undefined));
  c.on('error', () => undefined); // the gateway is killed under it
  return c;
}

/**
 * mqtt.js clients publish QoS 1 as fast as the gateway acknowledges; `signal` stops the gateway in
 * the middle of the stream. Every PUBACKed message must then be in the outbox, once, in order.
 * Returns the port and the highest seq stored.
 */
async function publishWhileStopping(t: Test, name: string, signal: 'SIGKILL' | 'SIGTERM'): Promise<{ port: number; lastSeq: number }> {
  const port = await freePort();
  const { gw, url } = await startGateway(t, name, port, 20);
  const CLIENTS = 3;
  const WINDOW = 50; // publishes outstanding per client
  const acked: Set<number>[] = [];
  let stop = false;
  for (let k = 0; k < CLIENTS; k++) {
    const c = await client(t, url, `pub-${k}`);
    const mine = new Set<number>();
    acked.push(mine);
    let next = 0;
    // Each worker publishes one message after another; WINDOW workers per client keep the
    // connection full. A publish that is not acknowledged (the gateway died) just ends the worker.
    const worker = async (): Promise<void> => {
      while (!stop) {
        const i = next++;
        try {
          await c.publishAsync(`sensors/c${k}/v`, `c${k}:${i}`, { qos: 1 });
        } catch {
          return;
        }
        mine.add(i);
      }
    };
    for (let w = 0; w < WINDOW; w++) void worker();
  }
  const total = () => acked.reduce((n, s) => n + s.size, 0);
  // Kill in the middle of the stream, once a few thousand messages are acknowledged.
  const deadline = Date.now() + 20_000;
  while (total() < 3000 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.ok(total() >= 3000, `published and acknowledged ${total()} messages before the kill`);
  // At a random point of the commit cycle: acknowledgements are released a commit at a time.
  await new Promise((r) => setTimeout(r, Math.random() * 40));
  gw.child.kill(signal);
  const exit = await gw.exited;
  if (signal === 'SIGTERM') t.equal(exit.code, 0, 'SIGTERM under load: a graceful stop, exit 0');
  // No acknowledgement can arrive any more. The workers' last publishes stay pending in mqtt.js
  // (it keeps unacknowledged QoS 1 for a reconnect), so they are not awaited.
  stop = true;
  const ackedTotal = total();

  const entries = await readOutbox(join(dir, `${name}.db`));
  const seen = new Map<string, number>();
  let duplicates = 0;
  let outOfOrder = 0;
  const lastIndex = new Map<string, number>();
  let lastSeq = 0;
  let wrongSource = 0;
  for (const e of entries) {
    if (e.source !== e.topic.split('/')[1]?.replace('c', 'pub-')) wrongSource++;
    if (e.seq <= lastSeq) outOfOrder++;
    lastSeq = e.seq;
    const text = e.payload.toString();
    seen.set(text, (seen.get(text) ?? 0) + 1);
    if ((seen.get(text) ?? 0) > 1) duplicates++;
    const [who, index] = text.split(':') as [string, string];
    const prev = lastIndex.get(who) ?? -1;
    if (Number(index) <= prev) outOfOrder++;
    lastIndex.set(who, Number(index));
  }
  let missing = 0;
  acked.forEach((set, k) => {
    for (const i of set) if (!seen.has(`c${k}:${i}`)) missing++;
  });
  t.equal(missing, 0, `all ${ackedTotal} acknowledged messages are in the outbox`);
  t.equal(duplicates, 0, 'none twice');
  t.equal(wrongSource, 0, 'each entry names its publishing client as source');
  t.equal(outOfOrder, 0, 'seq ascending, and each client in its publish order');
  t.ok(entries.length >= ackedTotal, `outbox holds ${entries.length} (≥ acknowledged; the rest were committed but their PUBACK was not sent yet)`);
  return { port, lastSeq };
}

t.test('every QoS 1 message PUBACKed before kill -9 is in the outbox, once, in order', async (t) => {
  const { port, lastSeq } = await publishWhileStopping(t, 'kill', 'SIGKILL');
  // The gateway starts again on the same database and continues the sequence.
  const again = await startGateway(t, 'kill', port, 20);
  const c = await client(t, again.url, 'after-restart');
  await c.publishAsync('sensors/after', 'after', { qos: 1 });
  await c.endAsync();
  again.gw.child.kill('SIGTERM');
  await again.gw.exited;
  const after = await readOutbox(join(dir, 'kill.db'));
  const last = after[after.length - 1];
  t.equal(last?.payload.toString(), 'after', 'the new message is the last entry');
  t.ok((last?.seq ?? 0) > lastSeq, 'with a seq above every seq before the kill');
});

t.test('SIGTERM under load: exit 0, and every QoS 1 message PUBACKed before it is in the outbox, once, in order', async (t) => {
  await publishWhileStopping(t, 'term', 'SIGTERM');
});

t.test('acknowledgements of outbox messages wait for the commit, and all acknowledgements stay in order', async (t) => {
  const port = await freePort();
  // A long window, so that "before the commit" is long enough to look at.
  const { gw } = await startGateway(t, 'order', port, 1500);
  const raw = await RawClient.connect(port, { clientId: 'orderly' });
  const publish = (messageId: number, topic: string) => raw.send({ cmd: 'publish', topic, payload: Buffer.from(String(messageId)), qos: 1, messageId, retain: false, dup: false });
  publish(1, 'other/x'); // not for the outbox: acknowledged at once
  t.equal((await raw.next('puback')).messageId, 1, 'a message that changes nothing stored is acknowledged at once');
  publish(2, 'sensors/x'); // for the outbox
  publish(3, 'other/y'); // behind it: must not overtake [MQTT-4.6.0-2]
  const early = await raw.collect('puback', 500);
  t.same(early.map((p) => p.messageId), [], 'no PUBACK before the commit, not even for the message behind it');
  const second = await raw.next('puback', 5000);
  const third = await raw.next('puback', 5000);
  t.same([second.messageId, third.messageId], [2, 3], 'after the commit both, in the order received');
  raw.disconnect();
  gw.child.kill('SIGTERM');
  await gw.exited;
});

t.test('what enters the outbox: matching topics at any QoS, with source and arrival time; nothing else', async (t) => {
  const port = await freePort();
  const { gw, url } = await startGateway(t, 'select', port, 20);
  const before = Date.now();
  const c = await client(t, url, 'selector');
  await c.publishAsync('sensors/a', 'q0', { qos: 0 });
  await c.publishAsync('other/b', 'not selected', { qos: 1 });
  await c.publishAsync('sensors/b/c', Buffer.from([0, 255, 1]), { qos: 2, retain: true });
  await c.endAsync();
  gw.child.kill('SIGTERM');
  await gw.exited;
  const entries = await readOutbox(join(dir, 'select.db'));
  t.same(
    entries.map((e) => [e.topic, e.qos, e.retain, e.source]),
    [
      ['sensors/a', 0, false, 'selector'],
      ['sensors/b/c', 2, true, 'selector'],
    ],
    'only the matching topics, in order, with QoS, retain flag and source',
  );
  t.same(entries[1]?.payload, Buffer.from([0, 255, 1]), 'binary payload kept');
  t.ok(entries.every((e) => e.arrivedAt >= before && e.arrivedAt <= Date.now()), 'arrival time in ms');
});

t.test('$SYS reports storage and outbox counters', async (t) => {
  const port = await freePort();
  const { gw, url } = await startGateway(t, 'sys', port, 20, 1);
  const c = await client(t, url, 'sys-reader');
  await c.publishAsync('sensors/one', '1', { qos: 1 });
  await c.publishAsync('sensors/two', '2', { qos: 1 });
  const values = new Map<string, string>();
  c.on('message', (topic, payload) => values.set(topic, payload.toString()));
  await c.subscribeAsync(['$SYS/broker/storage/#', '$SYS/broker/outbox/#']);
  const deadline = Date.now() + 5000;
  while (values.get('$SYS/broker/outbox/messages') !== '2' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  t.equal(values.get('$SYS/broker/outbox/messages'), '2', 'outbox size');
  t.equal(values.get('$SYS/broker/outbox/dropped'), '0');
  t.equal(values.get('$SYS/broker/outbox/failed'), '0');
  t.ok(Number(values.get('$SYS/broker/outbox/bytes')) > 0, 'outbox bytes');
  t.ok(Number(values.get('$SYS/broker/storage/commits')) >= 1, 'commits counted');
  t.equal(values.get('$SYS/broker/storage/commits failed'), '0');
  t.match(values.get('$SYS/broker/storage/bytes written/hour'), /^\d+$/, 'bytes written in the last hour');
  await c.endAsync();
  gw.child.kill('SIGTERM');
  await gw.exited;
});

t.test('disk full: the message is not acknowledged until it is stored; everyone else is served; nothing lost once space is free', async (t) => {
  const small = smallFileSystem(t, '2m');
  if (typeof small === 'string') return t.plan(0, small);
  const mount = small.dir;
  const port = await freePort();
  const config = join(dir, 'full.yaml');
  writeFileSync(
    config,
    `listeners:\n  - protocol: mqtt\n    host: 127.0.0.1\n    port: ${port}\nsys:\n  interval: 0\nlog:\n  level: warn\nstorage:\n  path: ${join(mount, 'edgeway.db')}\n  flushInterval: 20\n`,
  );
  const gw = await startGatewayProcess(t, config, { uplinkTopics: 'sensors/#', cwd: dir });
  const url = `mqtt://127.0.0.1:${port}`;
  const watcher = await client(t, url, 'watcher');
  const live: string[] = [];
  watcher.on('message', (_topic, payload) => live.push(payload.toString()));
  await watcher.subscribeAsync('other/#', { qos: 0 });
  const other = await client(t, url, 'other-publisher');

  // Fill the file system.
  const filler = join(mount, 'filler');
  spawnSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k'], { stdio: 'ignore' });

  const raw = await RawClient.connect(port, { clientId: 'victim' });
  raw.send({ cmd: 'publish', topic: 'sensors/big', payload: Buffer.alloc(256 * 1024, 7), qos: 1, messageId: 1, retain: false, dup: false });
  await waitForOutput(() => gw.stderr, /commit failed/, 5000, 'the error line');
  t.match(gw.stderr, /disk full/, 'the log says why');
  t.same(await raw.collect('puback', 1500), [], 'no PUBACK while the message cannot be stored (commits are retried meanwhile)');
  await other.publishAsync('other/ping', 'still routing', { qos: 0 });
  const deadline = Date.now() + 3000;
  while (!live.includes('still routing') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.ok(live.includes('still routing'), 'other clients are still served');

  rmSync(filler);
  t.equal((await raw.next('puback', 5000)).messageId, 1, 'with space again the retry stores it, and then it is acknowledged');
  raw.disconnect();
  gw.child.kill('SIGTERM');
  t.same(await gw.exited, { code: 0, signal: null }, 'and the gateway stops cleanly');
  const entries = await readOutbox(join(mount, 'edgeway.db'));
  t.same(entries.map((e) => [e.topic, e.payload.length]), [['sensors/big', 256 * 1024]], 'stored exactly once');
});
