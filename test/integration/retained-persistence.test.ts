/**
 * Retained messages survive a restart of the real gateway process: a graceful one (SIGTERM writes
 * what is pending) and a `kill -9` (everything committed — one flushInterval after it arrived —
 * is there). Clients are real MQTT clients over TCP.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '../helpers/broker';
import { startGatewayProcess } from '../helpers/gateway';
import { freePort } from '../helpers/processes';
import { RawClient } from '../helpers/raw-client';

const dir = mkdtempSync(join(tmpdir(), 'edgeway-retained-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

async function startGateway(t: Test, name: string, port: number, flushInterval: number) {
  const config = join(dir, `${name}.yaml`);
  writeFileSync(
    config,
    `listeners:\n  - protocol: mqtt\n    host: 127.0.0.1\n    port: ${port}\nsys:\n  interval: 0\nstorage:\n  path: ${join(dir, `${name}.db`)}\n  flushInterval: ${flushInterval}\n`,
  );
  return startGatewayProcess(t, config, { cwd: dir });
}

/**
 * QoS 1 waits for each PUBACK, which comes once the message is committed ("acknowledged means
 * durable"). QoS 0 sends them all and then waits for a PINGRESP, so they were all processed.
 */
async function publishRetained(port: number, messages: [string, string][], qos: 0 | 1 = 1): Promise<void> {
  const pub = await RawClient.connect(port, { clientId: 'retainer' });
  let id = 1;
  for (const [topic, payload] of messages) {
    pub.send({ cmd: 'publish', topic, payload: Buffer.from(payload), qos, messageId: id++, retain: true, dup: false });
    if (qos === 1) await pub.next('puback');
  }
  if (qos === 0) {
    pub.send({ cmd: 'pingreq' });
    await pub.next('pingresp');
  }
  pub.disconnect();
}

async function retainedAfterRestart(port: number, count: number): Promise<Map<string, string>> {
  const sub = await RawClient.connect(port, { clientId: 'reader' });
  // QoS 0: this reader does not acknowledge, and QoS 1 would stop at maxInflight.
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'keep/#', qos: 0 }] });
  await sub.next('suback');
  const got = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const m = await sub.next('publish');
    t.equal(m.retain, true, `${m.topic} arrives flagged retained`);
    got.set(m.topic, String(m.payload));
  }
  const extra = await sub.collect('publish', 200);
  t.equal(extra.length, 0, 'nothing else was retained');
  sub.disconnect();
  return got;
}

t.test('retained messages survive a graceful restart; a deleted one stays deleted', async (t) => {
  const port = await freePort();
  // A long flush interval: only the flush at SIGTERM can have written them (QoS 0: nothing waits
  // for a commit).
  const first = await startGateway(t, 'graceful', port, 10_000);
  await publishRetained(
    port,
    [
      ['keep/a', 'one'],
      ['keep/b', 'two'],
      ['keep/a', 'one, replaced'],
      ['keep/gone', 'x'],
      ['keep/gone', ''],
    ],
    0,
  );
  process.kill(first.child.pid as number, 'SIGTERM');
  t.same(await first.exited, { code: 0, signal: null }, 'clean exit');
  await startGateway(t, 'graceful', port, 10_000);
  const got = await retainedAfterRestart(port, 2);
  t.same(Object.fromEntries(got), { 'keep/a': 'one, replaced', 'keep/b': 'two' });
});

t.test('retained messages PUBACKed before a kill -9 are there after the restart', async (t) => {
  const port = await freePort();
  const gw = await startGateway(t, 'killed', port, 20);
  const messages: [string, string][] = Array.from({ length: 50 }, (_, i) => [`keep/${i}`, `v${i}`]);
  // Killed right after the last PUBACK: a PUBACK of a retained message means it is committed.
  await publishRetained(port, messages);
  process.kill(gw.child.pid as number, 'SIGKILL');
  await gw.exited;
  const again = await startGateway(t, 'killed', port, 20);
  t.match(again.stdout, /retained messages restored count=50/, 'the restart restored all 50');
  const got = await retainedAfterRestart(port, 50);
  t.same(Object.fromEntries(got), Object.fromEntries(messages), 'all 50, with their values');
});

t.test('a storage folder that cannot be used: logged, and the gateway still routes', async (t) => {
  const port = await freePort();
  const blocker = join(dir, 'not-a-folder');
  writeFileSync(blocker, 'a file where the storage folder should be');
  const config = join(dir, 'nostore.yaml');
  writeFileSync(config, `listeners:\n  - protocol: mqtt\n    host: 127.0.0.1\n    port: ${port}\nsys:\n  interval: 0\nstorage:\n  path: ${join(blocker, 'edgeway.db')}\n`);
  const gw = await startGatewayProcess(t, config, { cwd: dir });
  t.match(gw.stderr, /storage unavailable; running without persistence/, 'one clear error line');
  await publishRetained(port, [['keep/live', 'routed']]);
  const got = await retainedAfterRestart(port, 1);
  t.equal(got.get('keep/live'), 'routed', 'retained messages still work in memory');
});

t.test('a corrupt database file is moved aside, kept, and the gateway starts with a fresh one', async (t) => {
  const port = await freePort();
  const garbage = randomBytes(64 * 1024);
  writeFileSync(join(dir, 'corrupt.db'), garbage);
  const gw = await startGateway(t, 'corrupt', port, 20);
  t.match(gw.stderr, /database unusable, moved aside and starting a fresh one/, 'one clear error line');
  const aside = readdirSync(dir).filter((f) => f.startsWith('corrupt.db.corrupt-'));
  t.equal(aside.length, 1, 'moved aside under a new name');
  t.same(readFileSync(join(dir, aside[0] as string)), garbage, 'its bytes untouched');
  await publishRetained(port, [['keep/fresh', 'stored']]);
  const got = await retainedAfterRestart(port, 1);
  t.equal(got.get('keep/fresh'), 'stored', 'the fresh database works');
});

t.test('MQTT 5 retained messages keep their properties and Message Expiry across a restart [MQTT-3.3.2-5] [MQTT-3.3.2-6]', async (t) => {
  const port = await freePort();
  const first = await startGateway(t, 'mqtt5', port, 20);
  const pub = await RawClient.connect(port, { protocolVersion: 5, clientId: 'retainer-v5' });
  t.teardown(() => pub.destroy());
  const properties = { contentType: 'text/plain', userProperties: { site: 'north' } };
  const retained = (topic: string, payload: string, messageId: number, expiry?: number) =>
    pub.send({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, messageId, retain: true, dup: false, properties: { ...properties, ...(expiry === undefined ? {} : { messageExpiryInterval: expiry }) } });
  retained('v5/long', 'an hour', 1, 3600);
  retained('v5/short', 'two seconds', 2, 2);
  retained('v5/plain', 'forever', 3);
  for (let i = 0; i < 3; i++) await pub.next('puback');
  const ackedAt = Date.now();
  pub.disconnect();
  process.kill(first.child.pid as number, 'SIGTERM');
  t.same(await first.exited, { code: 0, signal: null }, 'clean exit');
  // The short one expires while the gateway is down.
  await waitFor(() => Date.now() - ackedAt > 2000, 5000, 'two seconds to pass');

  await startGateway(t, 'mqtt5', port, 20);
  const sub = await RawClient.connect(port, { protocolVersion: 5, clientId: 'reader-v5' });
  t.teardown(() => sub.destroy());
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'v5/#', qos: 0 }] });
  await sub.next('suback');
  const got = new Map<string, { payload: string; properties: unknown }>();
  for (let i = 0; i < 2; i++) {
    const m = await sub.next('publish');
    got.set(m.topic, { payload: String(m.payload), properties: m.properties });
  }
  t.same(await sub.collect('publish', 200), [], 'nothing else: the expired message was not restored');
  t.same(got.get('v5/plain'), { payload: 'forever', properties }, 'properties restored');
  const long = got.get('v5/long');
  t.equal(long?.payload, 'an hour');
  const left = (long?.properties as { messageExpiryInterval?: number } | undefined)?.messageExpiryInterval ?? 0;
  t.ok(left < 3600 && left > 3500, `the interval left after the restart is forwarded (${left} s)`);
  t.same({ ...(long?.properties as object), messageExpiryInterval: 0 }, { ...properties, messageExpiryInterval: 0 }, 'with the other properties');
});
