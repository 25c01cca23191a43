/**
 * Commands back to the device: a message published by an MQTT client on the port's write topic
 * is written to the port with the delimiter and arrives on the device side of the pty. While the
 * port is away, commands wait in a bounded queue (oldest dropped, counted).
 */
import t from 'tap';
import { serialFixture, statusOf } from '../helpers/serial';

t.test('a message on the write topic arrives on the device side', async (t) => {
  const f = await serialFixture(t, [{ name: 'arduino', format: 'kv', write: 'sensors/{name}/set', delimiter: '\r\n' }]);
  const dev = f.device('arduino');
  await f.sub.client.publishAsync('sensors/arduino/set', 'LED=1', { qos: 1 });
  await dev.waitForReceived('LED=1\r\n');
  await f.sub.client.publishAsync('sensors/arduino/set', 'LED=0', { qos: 0 });
  await dev.waitForReceived('LED=1\r\nLED=0\r\n');
  t.equal(dev.received.toString(), 'LED=1\r\nLED=0\r\n', 'payload + delimiter, in order, nothing else');
  t.equal(statusOf(f, 'arduino').writes.sent, 2);

  // A device printing a key named like the write topic must not loop commands back to itself.
  await dev.write('set=1\r\n');
  await dev.write('temp=20\r\n');
  await f.sub.waitForTopic('sensors/arduino/temp');
  t.equal(statusOf(f, 'arduino').linesDropped.invalidTopic, 1, 'a reading on the write topic is refused');
  t.equal(dev.received.toString(), 'LED=1\r\nLED=0\r\n', 'nothing echoed to the device');
});

t.test('commands wait while the port is away, bounded, oldest dropped first', async (t) => {
  const f = await serialFixture(t, [{ name: 'away', format: 'raw', write: 'cmd/{name}', maxWriteQueue: 3, missing: true }], { subscribe: ['edgeway/#'] });
  await f.sub.waitForStatus('away', 'offline');
  for (let i = 1; i <= 5; i++) await f.sub.client.publishAsync('cmd/away', `c${i}`, { qos: 1 });
  const s = statusOf(f, 'away');
  t.equal(s.writes.queued, 3, 'three queued');
  t.equal(s.writes.dropped, 2, 'two dropped and counted');
  const dev = await f.plug('away');
  await dev.waitForReceived('c5\n');
  t.equal(dev.received.toString(), 'c3\nc4\nc5\n', 'the newest three, in order, once the port is back');
  t.equal(statusOf(f, 'away').writes.sent, 3);
  t.equal(statusOf(f, 'away').writes.queued, 0);
  t.ok(f.log.some((l) => l.msg.startsWith('write queue full')), 'the drop was logged');
});

t.test('an over-long command is dropped, not written', async (t) => {
  const f = await serialFixture(t, [{ name: 'short', format: 'raw', write: 'cmd/{name}', maxLineLength: 16 }]);
  await f.sub.client.publishAsync('cmd/short', 'x'.repeat(17), { qos: 1 });
  await f.sub.client.publishAsync('cmd/short', 'ok', { qos: 1 });
  await f.device('short').waitForReceived('ok\n');
  t.equal(f.device('short').received.toString(), 'ok\n');
  t.equal(statusOf(f, 'short').writes.dropped, 1);
});

t.test("a reading from one port cannot land on another port's write topic", async (t) => {
  const f = await serialFixture(t, [
    { name: 'a', format: 'kv' },
    { name: 'b', format: 'raw', write: 'sensors/a/cmd' },
  ]);
  const a = f.device('a');
  const b = f.device('b');
  await a.write('cmd=LED=1\n');
  await a.write('temp=20\n');
  await f.sub.waitForTopic('sensors/a/temp');
  t.equal(statusOf(f, 'a').linesDropped.invalidTopic, 1, "port a's reading on port b's write topic is refused");
  t.equal(b.received.toString(), '', 'nothing written to device b');
});
