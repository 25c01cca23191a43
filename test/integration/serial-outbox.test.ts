/**
 * Serial readings enter the outbox like network publishes (issue 4, item 4): the real gateway in a
 * child process reads a socat pseudo-terminal; every reading on an uplink topic is in the outbox,
 * in the order of the lines, with the port as its source.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { SqliteOutbox, SqliteStorage } from '../../adapters/sqlite';
import type { OutboxEntry } from '../../gateway/broker';
import { freePort, startProcess, waitForOutput } from '../helpers/processes';
import { Device, PtyPair } from '../helpers/pty';

const CHILD = join(__dirname, '..', '..', 'scripts', 'gateway-child.js');
const LINES = 2000;

t.test('serial readings on uplink topics are in the outbox, in line order, with the port as source', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'edgeway-serial-outbox-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const pty = new PtyPair(dir, 'meter');
  await pty.start();
  t.teardown(() => pty.stop());
  const device = await Device.open(pty.devicePath);
  t.teardown(() => device.close());

  const port = await freePort();
  const db = join(dir, 'edgeway.db');
  const config = join(dir, 'edgeway.yaml');
  writeFileSync(
    config,
    [
      'listeners:',
      `  - { protocol: mqtt, host: 127.0.0.1, port: ${port} }`,
      'sys: { interval: 0 }',
      'log: { level: warn }',
      `storage: { path: ${db}, flushInterval: 20 }`,
      'serial:',
      `  - { name: meter, path: ${pty.gatewayPath}, format: kv, statusInterval: 0 }`,
      '',
    ].join('\n'),
  );
  // Only the readings go up; the port's status topic (edgeway/…) does not match.
  const gw = startProcess(t, process.execPath, [CHILD, config, 'sensors/#'], 60_000, dir);
  await waitForOutput(() => gw.stdout + gw.stderr, /edgeway started/, 10_000, 'the gateway to start');

  let text = '';
  for (let i = 0; i < LINES; i++) text += `seq=${i}\n`;
  await device.write(text);

  // Read the outbox while the gateway runs (WAL: a reader sees every committed entry).
  const outbox = new SqliteOutbox(new SqliteStorage({ path: db, sync: 'normal', flushInterval: 0 }), {
    maxMessages: 10_000_000,
    maxBytes: 1024 ** 3,
    whenFull: 'drop-oldest',
  });
  const readAll = async (): Promise<OutboxEntry[]> => {
    await outbox.open();
    const all: OutboxEntry[] = [];
    for (let batch = outbox.read(0, 1000); batch.length > 0; batch = outbox.read((batch[batch.length - 1] as OutboxEntry).seq, 1000)) all.push(...batch);
    return all;
  };
  const deadline = Date.now() + 15_000;
  let entries = await readAll();
  while (entries.length < LINES && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    entries = await readAll();
  }
  await outbox.close();
  process.kill(gw.child.pid as number, 'SIGTERM');
  await gw.exited;

  t.equal(entries.length, LINES, `all ${LINES} readings are in the outbox, nothing else`);
  const outOfPlace = entries.findIndex((e, i) => e.topic !== 'sensors/meter/seq' || e.payload.toString() !== String(i));
  t.equal(outOfPlace, -1, 'in line order, on the reading topic');
  t.ok(
    entries.every((e) => e.source === 'serial:meter'),
    'source names the port',
  );
  t.ok(
    entries.every((e, i) => i === 0 || e.seq > (entries[i - 1] as OutboxEntry).seq),
    'seq strictly increasing',
  );
});
