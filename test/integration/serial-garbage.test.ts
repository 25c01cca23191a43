/**
 * Junk on the line: random bytes, an endless line without a delimiter, broken JSON, invalid UTF-8,
 * control characters, too many keys. Each is dropped and counted by reason, logs stay bounded,
 * the next good line is published, the other port and the broker keep working, memory stays
 * bounded.
 */
import { randomBytes } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import t from 'tap';
import { serialFixture, statusOf } from '../helpers/serial';

/** A real gc() without starting node with --expose-gc, so memory can be compared meaningfully. */
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

function liveBytes(): number {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

const ENDLESS_BYTES = 8 * 1024 * 1024;

t.test('garbage is counted and dropped; good lines, the other port and the broker keep working', async (t) => {
  const f = await serialFixture(t, [
    { name: 'noisy', format: 'json', maxLineLength: 512 },
    { name: 'good', format: 'kv' },
  ]);
  const noisy = f.device('noisy');
  const good = f.device('good');
  let marker = 0;
  /** Writes a good line after the junk and waits until it is published: the junk was processed. */
  const goodLineAfter = async (what: string) => {
    marker++;
    await noisy.write(`\n{"marker":${marker}}\n`);
    await f.sub.waitFor((m) => m.topic === 'sensors/noisy/marker' && m.payload === String(marker), `the good line after ${what}`, 10_000);
  };
  const drops = () => statusOf(f, 'noisy').linesDropped;

  await goodLineAfter('nothing');
  const baseline = liveBytes();

  await noisy.write(randomBytes(64 * 1024));
  await goodLineAfter('64 KiB of random bytes');
  const afterRandom = drops();
  const randomDropped = afterRandom.binary + afterRandom.invalidUtf8 + afterRandom.tooLong + afterRandom.parse;
  t.ok(randomDropped > 0, `random bytes dropped (binary ${afterRandom.binary}, invalidUtf8 ${afterRandom.invalidUtf8}, tooLong ${afterRandom.tooLong}, parse ${afterRandom.parse})`);

  // An endless line: 8 MiB without a delimiter, in chunks, while the other port keeps talking.
  const chunk = Buffer.alloc(256 * 1024, 'x');
  const tooLongBefore = drops().tooLong;
  for (let sent = 0; sent < ENDLESS_BYTES; sent += chunk.length) {
    await noisy.write(chunk);
    if (sent % (2 * 1024 * 1024) === 0) await good.write(`sent=${sent}\n`);
  }
  await goodLineAfter('an 8 MiB line without delimiter');
  t.equal(drops().tooLong - tooLongBefore, 1, 'the endless line counted once as tooLong');
  await f.sub.waitFor((m) => m.topic === 'sensors/good/sent' && m.payload === String(6 * 1024 * 1024), 'the other port, meanwhile');
  const grown = liveBytes() - baseline;
  t.ok(grown < 4 * 1024 * 1024, `memory bounded: ${(grown / 1024).toFixed(0)} KiB more live memory after ${ENDLESS_BYTES / 1024 / 1024} MiB without delimiter`);

  const before = drops();
  await noisy.write('{"temp":\n');
  await noisy.write('{"temp":21.5,"hum"}\n');
  await noisy.write('[1,2,3]\n');
  await noisy.write(Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0xff, 0xfe, 0x7d, 0x0a])); // {"a":<ff fe>}
  await noisy.write('{"a":1,\u0000"b":2}\n');
  await noisy.write(`{${Array.from({ length: 65 }, (_, i) => `"${i}":1`).join(',')}}\n`);
  await goodLineAfter('broken lines');
  const after = drops();
  t.equal(after.parse - before.parse, 3, 'broken JSON (twice) and a non-object: parse');
  t.equal(after.invalidUtf8 - before.invalidUtf8, 1, 'invalid UTF-8');
  t.equal(after.binary - before.binary, 1, 'a NUL byte: binary');
  t.equal(after.tooManyKeys - before.tooManyKeys, 1, '65 keys > maxKeys 64: tooManyKeys');
  t.equal(f.sub.messages.filter((m) => m.topic.startsWith('sensors/noisy/') && m.topic !== 'sensors/noisy/marker').length, 0, 'nothing but the good lines was published');

  // The broker still serves MQTT clients: a round trip through it.
  await f.sub.client.publishAsync('sensors/roundtrip', 'ok', { qos: 1 });
  t.equal((await f.sub.waitForTopic('sensors/roundtrip')).payload, 'ok', 'MQTT round trip still works');

  // Drop logs are rate limited: at most one line per reason in this (short) test.
  const dropLogs = f.log.filter((l) => l.msg === 'serial line dropped');
  const perReason = new Map<string, number>();
  for (const l of dropLogs) perReason.set(String(l.fields?.reason), (perReason.get(String(l.fields?.reason)) ?? 0) + 1);
  for (const [reason, n] of perReason) t.equal(n, 1, `one log line for reason ${reason}`);
  const total = Object.values(after).reduce((a, b) => a + b, 0);
  t.ok(total > dropLogs.length, `${total} drops, ${dropLogs.length} log lines`);

  const status = JSON.parse(f.tb.broker.retained.get('edgeway/serial/noisy/status')?.payload.toString() ?? '{}') as { state?: string };
  t.equal(status.state, 'online', 'the port stayed online throughout');
});
