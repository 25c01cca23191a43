/**
 * Hotplug with real ptys: the socat process is stopped (the device disappears, its link is
 * removed) and started again with the same link; the bridge reports offline, then online, and
 * readings flow again — no restart of the gateway. And a port missing at start is picked up later.
 */
import t from 'tap';
import { serialFixture, statusOf } from '../helpers/serial';

t.test('unplug and replug: offline, then online, readings flow again', async (t) => {
  const f = await serialFixture(t, [
    { name: 'plug', format: 'kv' },
    { name: 'steady', format: 'kv' },
  ]);
  await f.sub.waitForStatus('plug', 'online');
  await f.device('plug').write('n=1\n');
  t.equal((await f.sub.waitForTopic('sensors/plug/n')).payload, '1', 'reading before the unplug');

  for (let round = 1; round <= 2; round++) {
    const mark = f.sub.messages.length;
    const attemptsBefore = statusOf(f, 'plug').openAttempts;
    await f.unplug('plug');
    const offline = JSON.parse((await f.sub.waitForStatus('plug', 'offline', 5000, mark)).payload) as Record<string, unknown>;
    t.equal(offline.state, 'offline', `round ${round}: offline published`);
    t.type(offline.lastError, 'string', 'with the error');
    t.type(offline.since, 'number', 'and since when');
    t.equal(f.tb.broker.retained.get('edgeway/serial/plug/status')?.payload.toString().includes('"offline"'), true, 'the retained status says offline');

    // The other port is not affected while this one is gone.
    await f.device('steady').write(`r=${round}\n`);
    await f.sub.waitFor((m) => m.topic === 'sensors/steady/r' && m.payload === String(round), 'the other port keeps working', 5000, mark);

    // Stay unplugged for a few failed reopen attempts (ENOENT: the link is gone).
    await f.sub.waitFor(() => statusOf(f, 'plug').openAttempts >= attemptsBefore + 3, 'failed reopen attempts', 5000);
    const replugged = Date.now();
    await f.plug('plug');
    await f.sub.waitForStatus('plug', 'online', 5000, mark);
    await f.device('plug').write(`n=${round + 1}\n`);
    const m = await f.sub.waitFor((x) => x.topic === 'sensors/plug/n' && x.payload === String(round + 1), 'a reading after the replug', 5000, mark);
    t.ok(m.at - replugged < 3000, `round ${round}: readings flow again ${m.at - replugged} ms after the device came back`);
  }
  const s = statusOf(f, 'plug');
  t.equal(s.state, 'online');
  t.equal(s.reconnects, 2, 'two reconnects counted');
  t.ok(s.openAttempts >= 7, `open attempts counted (${s.openAttempts})`);
  const lost = f.log.filter((l) => l.msg.startsWith('serial port lost'));
  t.equal(lost.length, 2, 'one "lost" line per outage');
  const failedOpenWarnings = f.log.filter((l) => l.level === 'warn' && l.msg.includes('retrying') && l.fields?.port === 'plug');
  t.equal(failedOpenWarnings.length, 0, 'the failed reopen attempts are not logged one by one');
  t.equal(f.log.filter((l) => l.msg === 'serial port online again').length, 2, 'recovery logged once per outage');
});

t.test('a port missing at start is retried with back-off and picked up', async (t) => {
  const f = await serialFixture(t, [{ name: 'late', format: 'json', missing: true, reconnect: { initialDelay: 20, maxDelay: 200 } }]);
  const offline = JSON.parse((await f.sub.waitForStatus('late', 'offline')).payload) as { lastError: string; openAttempts: number };
  t.match(offline.lastError, /ENOENT|No such file/, 'status names the error');
  // Let several attempts fail: the log must still have one line for this outage.
  await f.sub.waitFor(() => statusOf(f, 'late').openAttempts >= 5, 'five failed attempts', 5000);
  const warnings = f.log.filter((l) => l.level === 'warn' && l.fields?.port === 'late');
  t.equal(warnings.length, 1, `logged once, not once per attempt (${statusOf(f, 'late').openAttempts} attempts)`);
  t.match(warnings[0]?.msg, /cannot open serial port; retrying/);

  const mark = f.sub.messages.length;
  await f.plug('late');
  await f.sub.waitForStatus('late', 'online', 5000, mark);
  await f.device('late').write('{"temp":19}\n');
  t.equal((await f.sub.waitForTopic('sensors/late/temp', 5000, mark)).payload, '19', 'readings flow');
  t.equal(statusOf(f, 'late').reconnects, 0, 'a first open is not a reconnect');
});

t.test('stop is idempotent and bounded; a stopped adapter does not reopen', async (t) => {
  const f = await serialFixture(t, [{ name: 'stopme', format: 'raw', write: 'cmd/{name}' }]);
  await f.sub.waitForStatus('stopme', 'online');
  const mark = f.sub.messages.length;
  const subscriptions = f.tb.broker.subscriptions.size;
  const started = Date.now();
  await Promise.all([f.adapter.stop(1000), f.adapter.stop(1000)]);
  await f.adapter.stop(1000);
  t.ok(Date.now() - started < 1500, 'stop returned in bounded time');
  await f.sub.waitForStatus('stopme', 'offline', 3000, mark);
  t.equal(statusOf(f, 'stopme').state, 'offline');
  const attempts = statusOf(f, 'stopme').openAttempts;
  await f.device('stopme').write('ignored\n');
  await f.unplug('stopme');
  await f.plug('stopme');
  // Nothing may happen now; give a retry timer (max 400 ms here) several chances to misbehave.
  await new Promise((r) => setTimeout(r, 600));
  t.equal(statusOf(f, 'stopme').openAttempts, attempts, 'no open attempt after stop');
  t.equal(f.sub.on('sensors/stopme').length, 0, 'nothing published after stop');
  t.equal(f.tb.broker.subscriptions.size, subscriptions - 1, 'the write topic was unsubscribed');
});
