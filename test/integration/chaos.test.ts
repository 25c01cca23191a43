/**
 * The short chaos run (issue 9 part 2) in CI: `node dist/scripts/chaos.js --short` runs the whole
 * chain — redis-server, the gateway with storage and uplink, two socat ptys with sensors, QoS 1
 * publishers — through every fault once (Redis stopped, killed and paused, the gateway `kill -9`ed,
 * a serial device unplugged, a subscriber that stops reading) and accounts for every message.
 * Asserted: exit code 0, its printed table and its JSON agree, every fault happened under load,
 * and nothing acknowledged or read was lost, duplicated or reordered. The accounting's rules
 * themselves are tested in test/unit/chaos-accounting.test.ts, failures included.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { FAULT_KINDS, type AccountingResult, type FaultWindow } from '../../scripts/chaos/accounting';
import { startProcess } from '../helpers/processes';

/** The run takes about a minute alone; under a loaded `npm test` (two files at once) up to ~2. */
t.setTimeout(300_000);

const CHAOS = join(__dirname, '..', '..', 'scripts', 'chaos.js');
const dir = mkdtempSync(join(tmpdir(), 'edgeway-chaos-test-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('the short chaos run accounts for every message through every fault', async (t) => {
  const seed = Math.floor(Math.random() * 2 ** 31);
  t.comment(`seed ${seed} (replay: node dist/scripts/chaos.js --short --seed ${seed})`);
  const jsonPath = join(dir, 'result.json');
  const started = Date.now();
  const run = startProcess(t, process.execPath, [CHAOS, '--short', '--seed', String(seed), '--json', jsonPath], 280_000);
  const { code, signal } = await run.exited;
  t.comment(`chaos run: ${((Date.now() - started) / 1000).toFixed(0)} s`);
  t.equal(code, 0, `exit code (signal ${signal ?? 'none'})`, { output: run.stdout.slice(-6000) + run.stderr.slice(-3000) });

  const result = JSON.parse(readFileSync(jsonPath, 'utf8')) as AccountingResult & { faults: FaultWindow[]; seed: number };
  t.equal(result.seed, seed);
  t.same(result.failures, []);
  t.same([...new Set(result.faults.map((f) => f.kind))].sort(), [...FAULT_KINDS].sort(), 'every kind of fault was injected');

  const { mqtt, serial } = result.total;
  t.ok(mqtt.acked > 1000 && serial.sent > 1000, `under load: ${mqtt.acked} acknowledged, ${serial.sent} readings`);
  t.equal(mqtt.lost + mqtt.duplicates + serial.lost + serial.duplicates + result.outOfOrder + result.unexpected, 0, 'nothing lost, duplicated, reordered or unexpected');
  t.ok(mqtt.delivered >= mqtt.acked, 'every acknowledged message delivered');
  t.equal(serial.delivered, serial.read - serial.uncommitted, 'every reading read is delivered, but for those uncommitted at the kill');
  for (const row of result.rows) {
    t.ok(row.mqtt.sent > 0 && row.serial.sent > 0, `${row.window}: load during the fault (${row.mqtt.sent} messages, ${row.serial.sent} readings)`);
  }
  const stalled = result.rows.find((r) => r.window === 'stalled-subscriber');
  t.ok((stalled?.mqtt.acked ?? 0) > 0, 'a subscriber that stops reading does not stop the publishers');
  // The unplug and the kill cost unread readings; no Redis fault does.
  for (const row of result.rows.filter((r) => r.window.startsWith('redis-'))) t.equal(row.serial.notRead + row.serial.uncommitted, 0, `${row.window}: every reading read`);

  // The printed table says the same as the JSON.
  const totalRow = /\| \*\*total\*\* \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|\n/.exec(run.stdout);
  t.same(totalRow?.slice(1).map(Number), [mqtt.sent, mqtt.acked, mqtt.delivered, mqtt.duplicates, mqtt.lost], 'MQTT total row');
  t.match(run.stdout, /PASS: every acknowledged message/);
});
