/**
 * Issue 8's brute-force test against the real password file (adapters/auth, scrypt hashes): 200
 * wrong passwords from one source address (127.0.0.2; on Linux all of 127/8 is local) meet a
 * growing delay (limits.loginBackoff), while a user on 127.0.0.1 keeps logging in promptly, with
 * our raw client and with mosquitto_pub. The back-off itself, parallel guessing and its bounds are
 * tested against a test gate in login-backoff.test.ts; here the pieces work together.
 */
import t from 'tap';
import { authGateway, passwordLines } from '../helpers/auth';
import { bruteForce, median, tryLogin, type LoginResult } from '../helpers/login-attack';
import { startProcess } from '../helpers/processes';

const BACKOFF = { freeAttempts: 3, initialDelay: 5, maxDelay: 100, forgetAfter: 600_000 };
const fmt = (ms: number): string => ms.toFixed(1);

t.test('200 wrong passwords from one address against the password file: the delay grows; other clients are unaffected', async (t) => {
  const { tb, log } = await authGateway(t, { passwd: await passwordLines({ farmer: 'right-password' }) }, undefined, { loginBackoff: BACKOFF, connectTimeout: 2000 });

  const good: LoginResult[] = [];
  let attacking = true;
  const goodLoop = (async () => {
    while (attacking) {
      good.push(await tryLogin({ port: tb.port, username: 'farmer', password: 'right-password' }));
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const passwords = Array.from({ length: 200 }, (_, i) => `guess-${i}`);
  const attack = await bruteForce({ port: tb.port, localAddress: '127.0.0.2', username: 'farmer', passwords });
  // mosquitto_pub from 127.0.0.1 while the attacker's address is at its longest delay.
  const pub = startProcess(t, 'mosquitto_pub', ['-h', '127.0.0.1', '-p', String(tb.port), '-u', 'farmer', '-P', 'right-password', '-t', 'sensors/x', '-m', 'ok'], 10_000);
  const pubExit = (await pub.exited).code;
  attacking = false;
  await goodLoop;

  const ms = attack.map((r) => r.ms);
  const free = median(ms.slice(0, 3));
  const rising = median(ms.slice(3, 6));
  const late = median(ms.slice(-20));
  const goodMedian = median(good.map((r) => r.ms));
  t.comment(`attacker: free attempts ${fmt(free)} ms, attempts 4-6 ${fmt(rising)} ms, last 20 ${fmt(late)} ms; ${good.length} good logins, median ${fmt(goodMedian)} ms`);

  t.same(attack.filter((r) => r.code !== 5), [], 'every wrong password was refused with CONNACK 5');
  t.ok(late > free + BACKOFF.maxDelay / 2, `late attempts take clearly longer than the free ones (${fmt(late)} vs ${fmt(free)} ms)`);
  t.ok(late > rising, `the delay grows (attempts 4-6: ${fmt(rising)} ms, last 20: ${fmt(late)} ms)`);
  t.ok(good.length >= 5, `the user on 127.0.0.1 logged in throughout (${good.length} times)`);
  t.same(good.filter((r) => r.code !== 0), [], 'every one of those logins was accepted');
  t.ok(goodMedian < late, `and promptly (median ${fmt(goodMedian)} ms vs the attacker's ${fmt(late)} ms)`);
  t.equal(pubExit, 0, 'mosquitto_pub -u -P from 127.0.0.1 succeeded during the attack');
  t.equal(tb.broker.metrics.limitHits.loginFailures, 200, 'every failure counted (loginFailures)');
  t.equal(tb.broker.loginBackoff.failuresOf('127.0.0.1'), 0, 'the user’s address has no failures');
  t.notOk(log.some((l) => JSON.stringify(l).includes('guess-')), 'no guessed password appears in the log');
});
