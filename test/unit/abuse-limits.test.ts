/**
 * The per-address tables of issue 8 (address-table.ts, address-limits.ts, login-backoff.ts) on
 * their own: address normalisation, bounded tables that never forget addresses in use, the token
 * bucket with a fake clock, and the login back-off's delays and serialisation.
 */
import t from 'tap';
import { AddressLimits } from '../../gateway/broker/address-limits';
import { AddressTable, isLoopbackAddress, sourceAddress } from '../../gateway/broker/address-table';
import { LoginBackoff, type LoginAttempt, type LoginBackoffEvents } from '../../gateway/broker/login-backoff';

t.test('source addresses: IPv4-mapped IPv6 counts as IPv4; loopback is 127/8 and ::1', async (t) => {
  t.equal(sourceAddress('::ffff:192.168.1.7'), '192.168.1.7');
  t.equal(sourceAddress('::FFFF:10.0.0.1'), '10.0.0.1');
  t.equal(sourceAddress('192.168.1.7'), '192.168.1.7');
  t.equal(sourceAddress('fe80::1'), 'fe80::1');
  t.equal(sourceAddress('::ffff:abcd::1'), '::ffff:abcd::1', 'only the mapped IPv4 form is rewritten');
  for (const a of ['127.0.0.1', '127.255.3.4', '::1', '::ffff:127.0.0.2']) t.ok(isLoopbackAddress(a), `${a} is loopback`);
  for (const a of ['128.0.0.1', '10.127.0.1', '::2', '::ffff:10.0.0.1', 'fe80::1']) t.notOk(isLoopbackAddress(a), `${a} is not loopback`);
});

t.test('AddressTable forgets the least recently seen, never a pinned entry', async (t) => {
  const table = new AddressTable<{ open: number }>(3, (e) => e.open > 0);
  const a = table.obtain('a', () => ({ open: 1 })); // pinned
  table.obtain('b', () => ({ open: 0 }));
  table.obtain('c', () => ({ open: 0 }));
  table.obtain('d', () => ({ open: 0 }));
  t.equal(table.size, 3, 'bounded');
  t.equal(table.peek('a'), a, 'the pinned oldest entry is kept');
  t.equal(table.peek('b'), undefined, 'the oldest unpinned entry was forgotten');
  table.get('c'); // seen again: now the most recent
  table.obtain('e', () => ({ open: 0 }));
  t.equal(table.peek('d'), undefined, 'd was the least recently seen');
  t.ok(table.peek('c') !== undefined, 'c, seen recently, stays');

  // Everything pinned: the table grows rather than forget counts in use (bounded by the open sockets).
  const full = new AddressTable<{ open: number }>(16, () => true);
  for (let i = 0; i < 40; i++) full.obtain(`x${i}`, () => ({ open: 1 }));
  t.equal(full.size, 40, 'pinned entries are never evicted');
});

t.test('AddressLimits: concurrency cap, token bucket, exemption, bounded table', async (t) => {
  let now = 1_000_000;
  const limits = (over: Partial<ConstructorParameters<typeof AddressLimits>[0]> = {}) =>
    new AddressLimits({ maxConnections: 2, connectionsPerSecond: 10, connectionBurst: 3, exemptLoopback: false, maxTracked: 16, ...over }, () => now);

  const cap = limits({ connectionBurst: 100 });
  const first = cap.admit('10.0.0.1');
  t.same(first, { admitted: true, address: '10.0.0.1' });
  t.same(cap.admit('::ffff:10.0.0.1'), { admitted: true, address: '10.0.0.1' }, 'the mapped form counts as the same address');
  t.same(cap.admit('10.0.0.1'), { admitted: false, address: '10.0.0.1', limit: 'perAddressConnections' }, 'the third open connection is refused');
  t.same(cap.admit('10.0.0.2'), { admitted: true, address: '10.0.0.2' }, 'another address is unaffected');
  cap.release('10.0.0.1');
  t.equal(cap.openFrom('10.0.0.1'), 1);
  t.same(cap.admit('10.0.0.1'), { admitted: true, address: '10.0.0.1' }, 'accepted again after one closed');

  const rate = limits({ maxConnections: 100 });
  for (let i = 0; i < 3; i++) t.equal(rate.admit('10.0.0.9').admitted, true, `burst connection ${i + 1}`);
  t.same(rate.admit('10.0.0.9'), { admitted: false, address: '10.0.0.9', limit: 'perAddressRate' }, 'beyond the burst: refused');
  now += 99;
  t.equal(rate.admit('10.0.0.9').admitted, false, 'less than one token refilled after 99 ms at 10/s');
  now += 2;
  t.equal(rate.admit('10.0.0.9').admitted, true, 'one token after 100 ms');
  now += 60_000;
  for (let i = 0; i < 3; i++) t.equal(rate.admit('10.0.0.9').admitted, true, 'a full bucket after a long pause');
  t.equal(rate.admit('10.0.0.9').admitted, false, 'but no more than the burst');

  const exempt = limits({ exemptLoopback: true, maxConnections: 1 });
  for (let i = 0; i < 10; i++) t.same(exempt.admit(i % 2 === 0 ? '127.0.0.2' : '::1'), { admitted: true, address: null });
  t.equal(exempt.tracked, 0, 'exempt addresses are not even tracked');
  t.same(exempt.admit(undefined), { admitted: true, address: null }, 'a socket already gone has no address to count');

  const bounded = limits({ maxConnections: 5 });
  for (let i = 0; i < 100; i++) bounded.release((bounded.admit(`10.1.0.${i}`) as { address: string }).address);
  t.ok(bounded.tracked <= 16, `closed addresses are forgotten beyond maxTracked (${bounded.tracked})`);
  const open = limits({ maxConnections: 5 });
  for (let i = 0; i < 40; i++) open.admit(`10.2.0.${i}`);
  t.equal(open.tracked, 40, 'addresses with open connections are all remembered');
  for (let i = 0; i < 40; i++) open.release(`10.2.0.${i}`);
  t.equal(open.openFrom('10.2.0.0'), 0, 'and released correctly');
});

/** Events of a LoginBackoff, recorded. */
function recorder() {
  const log: string[] = [];
  const events: LoginBackoffEvents = {
    failed: (a, f, d) => log.push(`failed ${a} ${f} ${d}`),
    delayed: (a, f, d) => log.push(`delayed ${a} ${f} ${d}`),
    queueFull: (a, m) => log.push(`queueFull ${a} ${m}`),
  };
  return { log, events };
}

const BACKOFF = { freeAttempts: 2, initialDelay: 20, maxDelay: 80, forgetAfter: 60_000 };

t.test('LoginBackoff: delays after the free attempts double up to maxDelay', async (t) => {
  const backoff = new LoginBackoff(BACKOFF, 16, 8, recorder().events);
  t.same([1, 2, 3, 4, 5, 6, 7, 100].map((f) => backoff.delayAfter(f)), [0, 0, 20, 40, 80, 80, 80, 80]);
});

/** Runs one attempt through the back-off: resolves with how long its refusal (or acceptance) took. */
function attempt(backoff: LoginBackoff, address: string, outcome: 'failure' | 'success'): Promise<number> {
  const started = Date.now();
  return new Promise((resolve) => {
    let a: LoginAttempt | null = null;
    const run = (): void => {
      // The authentication gate itself answers at once here.
      setImmediate(() => backoff.finish(a as LoginAttempt, outcome, () => resolve(Date.now() - started)));
    };
    a = backoff.begin(address, run);
    if (a === null) resolve(-1);
    else if (a.state === 'active') run();
  });
}

t.test('LoginBackoff: sequential failures wait longer; success resets; other addresses unaffected', async (t) => {
  const { log, events } = recorder();
  const backoff = new LoginBackoff(BACKOFF, 16, 8, events);
  const times: number[] = [];
  for (let i = 0; i < 5; i++) times.push(await attempt(backoff, '10.0.0.1', 'failure'));
  t.equal(backoff.failuresOf('10.0.0.1'), 5);
  t.ok(times[0]! < 15 && times[1]! < 15, `the free attempts are answered at once (${times.join(', ')} ms)`);
  t.ok(times[4]! >= 70, `the fifth failure's refusal is held for maxDelay (${times[4]} ms)`);
  t.ok(times[2]! < times[4]!, 'the delay grows');
  t.ok((await attempt(backoff, '10.0.0.2', 'failure')) < 15, 'another address has its own free attempts');
  t.ok((await attempt(backoff, '::ffff:10.0.0.1', 'success')) < 15, 'a success after the hold is not delayed');
  t.equal(backoff.failuresOf('10.0.0.1'), 0, 'a success resets the address');
  t.equal(backoff.tracked, 1, 'only the address with a failure is remembered');
  t.ok(log.includes('failed 10.0.0.1 5 80'), 'failures reported with the delay they impose');
});

t.test('LoginBackoff: parallel attempts are serialised, closed ones leave the queue, the queue is bounded', async (t) => {
  const { log, events } = recorder();
  const backoff = new LoginBackoff(BACKOFF, 16, 8, events);
  for (let i = 0; i < 3; i++) await attempt(backoff, '10.0.0.3', 'failure'); // in back-off now: 20 ms after the 3rd
  const started = Date.now();
  const parallel = await Promise.all(Array.from({ length: 4 }, () => attempt(backoff, '10.0.0.3', 'failure')));
  const total = Date.now() - started;
  // Holds of 40, 80, 80, 80 ms (and the 20 ms left of the third failure's), one after the other.
  t.ok(total >= 250, `four parallel failures took as long as four sequential ones (${total} ms)`);
  t.same(
    [...parallel].sort((a, b) => a - b).map((ms, i) => ms >= [40, 120, 200, 280][i]! - 15),
    [true, true, true, true],
    `each waited for the ones before it (${parallel.join(', ')} ms)`,
  );

  // A waiting attempt whose connection closes gives its turn to the next.
  const first = attempt(backoff, '10.0.0.3', 'failure');
  const abandoned = backoff.begin('10.0.0.3', () => t.fail('an abandoned attempt never proceeds'));
  t.equal(abandoned?.state, 'waiting');
  backoff.abandon(abandoned as LoginAttempt);
  const next = attempt(backoff, '10.0.0.3', 'success');
  await first;
  t.ok((await next) >= 0, 'the attempt behind the abandoned one ran');
  t.equal(backoff.failuresOf('10.0.0.3'), 0);

  // One authenticating, at most maxWaiting (8) waiting: the tenth is refused unchecked.
  for (let i = 0; i < 3; i++) await attempt(backoff, '10.0.0.4', 'failure');
  const waiting = Array.from({ length: 10 }, () => attempt(backoff, '10.0.0.4', 'failure'));
  t.equal(await Promise.race([waiting[9]!, new Promise((r) => setTimeout(() => r('pending'), 50))]), -1, 'the attempt beyond maxWaiting is refused at once');
  t.ok(log.includes('queueFull 10.0.0.4 8'), 'and reported');
  const results = await Promise.all(waiting.slice(0, 9));
  t.ok(
    results.every((ms) => ms > 0),
    'the others were all answered',
  );
});
