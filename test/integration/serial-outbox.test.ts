/**
 * Serial readings enter the outbox like network publishes (issue 4, item 4): the real gateway in a
 * child process reads a socat pseudo-terminal; every reading on an uplink topic is in the outbox,
 * in the order of the lines, with the port as its source.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import type { OutboxEntry } from '../../gateway/broker';
import { readOutbox, startGatewayProcess } from '../helpers/gateway';
import { freePort } from '../helpers/processes';
import { plugIn } from '../helpers/pty';
import { tempDir } from '../helpers/sqlite';

const LINES = 2000;

t.test('serial readings on uplink topics are in the outbox, in line order, with the port as source', async (t) => {
  const dir = tempDir(t, 'edgeway-serial-outbox-');
  const { pty, device } = await plugIn(t, dir, 'meter');

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
  const gw = await startGatewayProcess(t, config, { uplinkTopics: 'sensors/#', cwd: dir });

  let text = '';
  for (let i = 0; i < LINES; i++) text += `seq=${i}\n`;
  await device.write(text);

  // Read the outbox while the gateway runs (WAL: a reader sees every committed entry).
  const deadline = Date.now() + 15_000;
  let entries = await readOutbox(db);
  while (entries.length < LINES && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    entries = await readOutbox(db);
  }
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
