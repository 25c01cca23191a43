/**
 * Failed-login back-off (issue 8, README "Abuse resistance") against a real broker over real
 * sockets, with a test authentication gate that accepts one password: 200 wrong passwords from
 * one source address (127.0.0.2 — on Linux all of 127/8 is local) make each further attempt
 * slower, parallel connections cannot guess faster, and other addresses are unaffected.
 * Timings are compared with each other and with the configured delays, generously.
 */
import t, { type Test } from 'tap';
import { startBroker, waitFor, type TestBroker } from '../helpers/broker';
import { bruteForce, median, tryLogin, type LoginResult } from '../helpers/login-attack';

const USER = 'farmer';
const RIGHT = 'right-password';
/** Small delays so 200 attempts take ~20 s: 5 ms doubling up to 100 ms after 3 free attempts. */
const BACKOFF = { freeAttempts: 3, initialDelay: 5, maxDelay: 100, forgetAfter: 600_000 };
const ATTACKER = '127.0.0.2';

/** A broker whose one authentication gate accepts USER / RIGHT (asynchronously, as a password hash would). */
async function setup(t: Test, limits: Record<string, unknown> = {}): Promise<TestBroker> {
  // connectTimeout well below the longest waits (50 parallel attempts queue for ~5 s): the
  // back-off must not be cut short by it. Not lower: a loaded machine may take a few hundred ms
  // from accept to CONNECT, which would close the legitimate client's connections.
  const tb = await startBroker({ limits: { connectTimeout: 1000, loginBackoff: BACKOFF, ...limits } });
  tb.broker.hooks.authenticate.push(async (_client, credentials) => {
    await new Promise((r) => setImmediate(r));
    return credentials.username === USER && credentials.password?.toString() === RIGHT;
  });
  t.teardown(() => tb.stop());
  return tb;
}

const wrong = (n: number, from = 0): string[] => Array.from({ length: n }, (_, i) => `guess-${from + i}`);
const fmt = (ms: number): string => ms.toFixed(1);

t.test('200 wrong passwords from one address: the delay grows; other clients are unaffected', async (t) => {
  const tb = await setup(t);
  const { broker, port } = tb;

  // A legitimate client on 127.0.0.1 logs in again and again while the attack runs.
  const good: LoginResult[] = [];
  let attacking = true;
  const goodLoop = (async () => {
    while (attacking) {
      good.push(await tryLogin({ port, username: USER, password: RIGHT }));
      await new Promise((r) => setTimeout(r, 50));
    }
  })();

  const sequential = await bruteForce({ port, localAddress: ATTACKER, username: USER, passwords: wrong(150) });
  // 50 more at once: they must wait their turn, one after the other, not guess 50 times faster.
  const parallelStart = performance.now();
  const parallel = await bruteForce({ port, localAddress: ATTACKER, username: USER, passwords: wrong(50, 150), parallel: 50 });
  const parallelMs = performance.now() - parallelStart;
  attacking = false;
  await goodLoop;

  const ms = sequential.map((r) => r.ms);
  const early = median(ms.slice(0, 3));
  const rising = median(ms.slice(3, 8));
  const late = median(ms.slice(-20));
  const goodMedian = median(good.map((r) => r.ms));
  t.comment(
    `sequential attempts: median of the 3 free ${fmt(early)} ms, of attempts 4-8 ${fmt(rising)} ms, of the last 20 ${fmt(late)} ms; ` +
      `50 parallel took ${fmt(parallelMs)} ms; ${good.length} logins from 127.0.0.1, median ${fmt(goodMedian)} ms, max ${fmt(Math.max(...good.map((r) => r.ms)))} ms`,
  );

  t.same(
    [...sequential, ...parallel].filter((r) => r.code !== 5),
    [],
    'every wrong password got CONNACK 5 "not authorized" — none accepted, none closed by the connect timeout while waiting',
  );
  t.ok(late >= BACKOFF.maxDelay / 2, `late attempts wait for the back-off (median ${fmt(late)} ms, maxDelay ${BACKOFF.maxDelay} ms)`);
  // Differences, not ratios: a loaded machine adds the same cost to every attempt.
  const margin = BACKOFF.maxDelay / 2;
  t.ok(late > early + margin, `late attempts take clearly longer than the first ones (${fmt(late)} vs ${fmt(early)} ms)`);
  t.ok(late > rising, `the delay grows (attempts 4-8: ${fmt(rising)} ms, last 20: ${fmt(late)} ms)`);
  t.ok(parallelMs >= (50 * BACKOFF.maxDelay) / 2, `parallel attempts are served one at a time (${fmt(parallelMs)} ms for 50)`);

  t.ok(good.length >= 10, `the legitimate client logged in throughout (${good.length} times)`);
  t.same(
    good.filter((r) => r.code !== 0),
    [],
    'every login with the right password from 127.0.0.1 was accepted',
  );
  t.ok(goodMedian < late - margin, `logins from 127.0.0.1 stay prompt (median ${fmt(goodMedian)} ms vs the attacker's ${fmt(late)} ms)`);

  const hits = broker.metrics.limitHits;
  t.equal(hits.loginFailures, 200, 'every failure counted (loginFailures)');
  t.ok(hits.loginDelayed >= 190, `delayed attempts counted (loginDelayed ${hits.loginDelayed})`);
  t.equal(hits.connectTimeout, 0, 'no waiting attempt was closed by the connect timeout');
  t.equal(broker.loginBackoff.failuresOf(ATTACKER), 200, 'the attacker address has its 200 failures');
  t.equal(broker.loginBackoff.failuresOf('127.0.0.1'), 0, 'the legitimate address has none');

  // Another address starts with its own free attempts.
  const other = await bruteForce({ port, localAddress: '127.0.0.3', username: USER, passwords: wrong(3, 500) });
  t.same(other.map((r) => r.code), [5, 5, 5]);
  const otherMedian = median(other.map((r) => r.ms));
  t.ok(otherMedian < late - margin, `wrong passwords from 127.0.0.3 are answered promptly (median ${fmt(otherMedian)} ms)`);

  // The right password from the attacker's address, while a failed attempt holds its refusal:
  // it waits for the back-off too, then succeeds and resets the address.
  const failuresBefore = hits.loginFailures;
  const pendingWrong = tryLogin({ port, localAddress: ATTACKER, username: USER, password: 'one-more' });
  await waitFor(() => hits.loginFailures > failuresBefore, 5000, 'the wrong attempt to fail');
  const right = await tryLogin({ port, localAddress: ATTACKER, username: USER, password: RIGHT });
  t.equal((await pendingWrong).code, 5, 'the wrong attempt was refused');
  t.equal(right.code, 0, 'the right password from the attacker address is accepted');
  t.ok(right.ms >= BACKOFF.maxDelay / 2, `after waiting for the back-off (${fmt(right.ms)} ms)`);
  t.equal(broker.loginBackoff.failuresOf(ATTACKER), 0, 'the success reset the address');
  const afterReset = await bruteForce({ port, localAddress: ATTACKER, username: USER, passwords: wrong(3, 600) });
  t.same(afterReset.map((r) => r.code), [5, 5, 5]);
  const resetMedian = median(afterReset.map((r) => r.ms));
  t.ok(resetMedian < late - margin, `after the reset failures are answered promptly again (median ${fmt(resetMedian)} ms)`);
});

t.test('MQTT 5 clients get 0x87 after the back-off; a waiting client that hangs up frees its turn', async (t) => {
  const { broker, port } = await setup(t, { loginBackoff: { ...BACKOFF, initialDelay: 300, maxDelay: 300 } });
  const hits = broker.metrics.limitHits;
  for (let i = 0; i < 4; i++) {
    const r = await tryLogin({ port, localAddress: ATTACKER, username: USER, password: `v5-${i}`, protocolVersion: 5 });
    t.equal(r.code, 0x87, `attempt ${i + 1}: CONNACK 0x87 not authorized`);
  }
  // A failure now holds its refusal for 300 ms; an attempt behind it that hangs up while waiting
  // does not keep its place, and is never checked.
  const failures = hits.loginFailures;
  const held = tryLogin({ port, localAddress: ATTACKER, username: USER, password: 'held', protocolVersion: 5 });
  await waitFor(() => hits.loginFailures === failures + 1, 5000, 'the held attempt to fail');
  const impatient = tryLogin({ port, localAddress: ATTACKER, username: USER, password: 'x', timeoutMs: 50 }).catch(() => 'gave up');
  t.equal(await impatient, 'gave up', 'the impatient client gave up waiting');
  await waitFor(() => broker.connectionCount === 1, 2000, 'its connection to close');
  const right = await tryLogin({ port, localAddress: ATTACKER, username: USER, password: RIGHT, protocolVersion: 5 });
  t.equal((await held).code, 0x87, 'the held attempt was refused');
  t.equal(right.code, 0, 'the next attempt gets its turn and is accepted');
  t.equal(hits.loginFailures, failures + 1, 'the hung-up attempt was never checked, so not counted');
});

t.test('waiting attempts per address are bounded (perAddress.maxConnections), loopback included', async (t) => {
  const { broker, port } = await setup(t, { perAddress: { maxConnections: 4 }, loginBackoff: { ...BACKOFF, initialDelay: 3000, maxDelay: 3000 } });
  const hits = broker.metrics.limitHits;
  await bruteForce({ port, localAddress: ATTACKER, username: USER, passwords: wrong(3) });
  // The 4th failure holds its refusal for 3 s, and the address's turn with it: everything sent
  // meanwhile waits, at most 4 attempts.
  const held = tryLogin({ port, localAddress: ATTACKER, username: USER, password: 'held' });
  await waitFor(() => hits.loginFailures === 4, 5000, 'the 4th failure');
  const answered: LoginResult[] = [];
  const attempts = wrong(7, 10).map((password) => tryLogin({ port, localAddress: ATTACKER, username: USER, password }).then((r) => answered.push(r)));
  await waitFor(() => answered.length === 3, 2500, 'three attempts to be answered at once');
  // One held, four waiting, three refused unchecked with "server unavailable" (3.1.1 code 3).
  t.same(
    answered.map((r) => r.code),
    [3, 3, 3],
    'beyond 4 waiting, attempts are refused at once, unchecked',
  );
  t.equal(hits.loginQueueFull, 3, 'counted (loginQueueFull)');
  t.equal(hits.loginFailures, 4, 'only checked attempts count as failures');
  t.equal(broker.connectionCount, 5, 'the held attempt and the four waiting ones are still open');
  // Stopping the broker closes those; the attempts end without a CONNACK.
  await broker.stop(2000);
  await Promise.all([held, ...attempts]);
});
