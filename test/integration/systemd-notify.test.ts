/**
 * systemd readiness and watchdog (issue 6) on the real `edgeway` command, started as the unit's
 * wrapper starts it: through scripts/notify-exec.pl, with $NOTIFY_SOCKET naming a datagram socket
 * the test binds (test/helpers/notify-socket.ts) in place of systemd's. No systemd runs here;
 * what is checked is the sd_notify protocol as the gateway speaks it: READY=1 only once it
 * serves, watchdog pings from its event loop, RELOADING=1/READY=1 around SIGHUP, STOPPING=1.
 */
import { readFileSync, existsSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { GATEWAY_MAIN } from '../helpers/gateway';
import { NOTIFY_EXEC, NotifySocket } from '../helpers/notify-socket';
import { freePort, startProcess, waitForOutput, type Running } from '../helpers/processes';
import { RawClient } from '../helpers/raw-client';
import { tempDir } from '../helpers/sqlite';

/** WATCHDOG_USEC for these tests: a ping every 200 ms. */
const WATCHDOG_USEC = 400_000;
const PING_MS = WATCHDOG_USEC / 2000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function writeConfig(dir: string, port: number, extra = ''): string {
  const path = join(dir, 'edgeway.yaml');
  writeFileSync(path, `listeners:\n  - protocol: mqtt\n    host: 127.0.0.1\n    port: ${port}\nsys:\n  interval: 0\nstorage:\n  path: ${join(dir, 'edgeway.db')}\n${extra}`);
  return path;
}

/**
 * The gateway as /usr/local/bin/edgeway runs it under systemd: `perl notify-exec.pl node main.js`
 * (exec: the process started here is the gateway). Variables systemd sets are given explicitly,
 * empty when absent, so that none leaks in from the environment the tests run in.
 */
function startUnderNotify(t: Test, config: string, env: Record<string, string>, launcher = true): Running {
  const command = launcher ? ['perl', NOTIFY_EXEC, process.execPath] : [process.execPath];
  const [file, ...args] = [...command, GATEWAY_MAIN, '--config', config];
  return startProcess(t, file as string, args, 60_000, { env: { NOTIFY_SOCKET: '', WATCHDOG_USEC: '', WATCHDOG_PID: '', EDGEWAY_NOTIFY_FD: '', ...env } });
}

function signal(gw: Running, name: NodeJS.Signals): void {
  if (gw.child.pid !== undefined) process.kill(gw.child.pid, name);
}

const field = (lines: readonly string[] | undefined, key: string): string | undefined => lines?.find((l) => l.startsWith(`${key}=`))?.slice(key.length + 1);

t.test('READY=1 once the listener accepts and storage is open; watchdog pings from the event loop; RELOADING=1/READY=1 around SIGHUP; STOPPING=1', async (t) => {
  const dir = tempDir(t, 'edgeway-notify-');
  const socket = await NotifySocket.bind(t, join(dir, 'notify.sock'));
  const port = await freePort();
  const config = writeConfig(dir, port);
  const gw = startUnderNotify(t, config, { NOTIFY_SOCKET: socket.address, WATCHDOG_USEC: String(WATCHDOG_USEC) });

  await socket.waitFor('READY=1', 15_000);
  // Right now, with no retry: the listener must already accept, and the database exist.
  const client = await RawClient.connect(port, { clientId: 'notify-test' });
  t.pass('an MQTT client connects the moment READY=1 arrives');
  t.ok(existsSync(join(dir, 'edgeway.db')), 'the database is open');
  const ready = socket.messages[0];
  t.ok(ready?.includes('READY=1'), `READY=1 is the first message: ${JSON.stringify(socket.messages)}`);
  t.equal(field(ready, 'STATUS'), `0 clients; mqtt 127.0.0.1:${port}`, 'with a STATUS= naming the listener');
  t.match(gw.stdout, /info systemd: readiness, status and watchdog notifications on fd=\d+ watchdogIntervalMs=200/);

  // Watchdog: WATCHDOG=1 about every WATCHDOG_USEC/2; the status rides along when it changed.
  await socket.waitFor('WATCHDOG=1', 10_000, 5);
  t.pass('at least 5 watchdog pings');
  t.ok(
    socket.with('WATCHDOG=1').some((lines) => field(lines, 'STATUS') === `1 client; mqtt 127.0.0.1:${port}`),
    'a ping carries the new STATUS= once the client connected',
  );
  await socket.flush();
  const before = socket.with('WATCHDOG=1').length;
  const started = Date.now();
  await sleep(1000);
  await socket.flush();
  const pings = socket.with('WATCHDOG=1').length - before;
  const bound = Math.ceil((Date.now() - started) / PING_MS) + 1;
  t.ok(pings <= bound, `no more often than every ${PING_MS} ms: ${pings} pings in ${Date.now() - started} ms (at most ${bound})`);

  // A stopped event loop sends no pings (systemd would restart it); they resume with it.
  signal(gw, 'SIGSTOP');
  await socket.flush();
  const stoppedAt = socket.with('WATCHDOG=1').length;
  await sleep(5 * PING_MS);
  await socket.flush();
  t.equal(socket.with('WATCHDOG=1').length, stoppedAt, 'no ping while the gateway is stopped (SIGSTOP)');
  signal(gw, 'SIGCONT');
  await socket.waitFor('WATCHDOG=1', 10_000, stoppedAt + 2);
  t.pass('pings resume after SIGCONT');
  client.disconnect();

  // SIGHUP: RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC, the same clock in every process),
  // then READY=1 once the reload is done.
  writeFileSync(config, `${readFileSync(config, 'utf8')}log:\n  level: debug\n`);
  const from = process.hrtime.bigint() / 1000n;
  signal(gw, 'SIGHUP');
  await socket.waitFor('READY=1', 10_000, 2);
  const to = process.hrtime.bigint() / 1000n;
  await waitForOutput(() => gw.stdout, /SIGHUP: configuration reloaded .*applied=log/, 5000, 'the reload line');
  const messages = socket.messages;
  const reloading = messages.findIndex((lines) => lines.includes('RELOADING=1'));
  const readyAgain = messages.findIndex((lines, i) => i > 0 && lines.includes('READY=1'));
  t.ok(reloading > 0 && readyAgain > reloading, `RELOADING=1, then READY=1: ${JSON.stringify(messages.slice(reloading))}`);
  const usec = BigInt(field(messages[reloading], 'MONOTONIC_USEC') ?? '-1');
  t.ok(usec >= from && usec <= to, `MONOTONIC_USEC=${usec} is CLOCK_MONOTONIC at the reload (between ${from} and ${to})`);

  signal(gw, 'SIGTERM');
  const { code } = await gw.exited;
  t.equal(code, 0, 'SIGTERM exits 0');
  await socket.flush();
  const stopping = socket.messages.findIndex((lines) => lines.includes('STOPPING=1'));
  t.ok(stopping > readyAgain, 'STOPPING=1 was sent on SIGTERM');
  t.equal(field(socket.messages[stopping], 'STATUS'), 'stopping');
  t.same(
    socket.messages.flat().filter((line) => !/^(READY|WATCHDOG|RELOADING|STOPPING)=1$|^(STATUS|MONOTONIC_USEC)=/.test(line)),
    [],
    'nothing else was sent',
  );
});

t.test('an abstract socket (@name) works; a watchdog meant for another PID is not fed', async (t) => {
  const dir = tempDir(t, 'edgeway-notify-');
  const socket = await NotifySocket.bind(t, `@edgeway-test-${process.pid}-${Date.now()}`);
  const port = await freePort();
  const gw = startUnderNotify(t, writeConfig(dir, port), { NOTIFY_SOCKET: socket.address, WATCHDOG_USEC: String(WATCHDOG_USEC), WATCHDOG_PID: '1' });
  await socket.waitFor('READY=1', 15_000);
  t.pass(`READY=1 arrives on ${socket.address}`);
  t.match(gw.stdout, /warn systemd: watchdog not used reason="WATCHDOG_PID=1 is another process/);
  await sleep(5 * PING_MS);
  await socket.flush();
  t.same(socket.with('WATCHDOG=1'), [], 'no WATCHDOG=1');
  signal(gw, 'SIGTERM');
  t.equal((await gw.exited).code, 0, 'SIGTERM exits 0');
});

t.test('a start that fails sends no READY=1, says why in STATUS= and exits 1', async (t) => {
  const busy = net.createServer();
  await new Promise<void>((resolve) => busy.listen({ host: '127.0.0.1', port: 0 }, resolve));
  t.teardown(() => new Promise<void>((resolve) => busy.close(() => resolve())));
  const busyPort = (busy.address() as net.AddressInfo).port;
  // The MQTT port in use; and the metrics port in use, which fails after the MQTT listener opened.
  const cases = [
    { name: 'MQTT', mqtt: busyPort, extra: '' },
    { name: 'metrics', mqtt: await freePort(), extra: `metrics:\n  host: 127.0.0.1\n  port: ${busyPort}\n` },
  ];
  for (const c of cases) {
    const dir = tempDir(t, 'edgeway-notify-');
    const socket = await NotifySocket.bind(t, join(dir, 'notify.sock'));
    const gw = startUnderNotify(t, writeConfig(dir, c.mqtt, c.extra), { NOTIFY_SOCKET: socket.address, WATCHDOG_USEC: String(WATCHDOG_USEC) });
    const { code } = await gw.exited;
    t.equal(code, 1, `${c.name} port in use: exits 1`);
    if (c.name === 'metrics') t.match(gw.stdout, new RegExp(`listening .*port=${c.mqtt}`), 'after the MQTT listener had opened');
    await socket.flush();
    t.same(socket.with('READY=1'), [], `${c.name} port in use: no READY=1`);
    t.same(socket.with('WATCHDOG=1'), [], 'no ping either');
    t.match(field(socket.messages[0], 'STATUS') ?? '', new RegExp(`^start failed: .*cannot listen on 127\\.0\\.0\\.1:${busyPort}: address already in use`), 'STATUS= says why');
  }
});

t.test('the notification socket going away is logged once, and the gateway keeps serving', async (t) => {
  const dir = tempDir(t, 'edgeway-notify-');
  const socket = await NotifySocket.bind(t, join(dir, 'notify.sock'));
  const port = await freePort();
  const gw = startUnderNotify(t, writeConfig(dir, port), { NOTIFY_SOCKET: socket.address, WATCHDOG_USEC: String(WATCHDOG_USEC) });
  await socket.waitFor('WATCHDOG=1', 15_000);
  await socket.close();
  await waitForOutput(() => gw.stdout, /warn systemd notification not delivered message="WATCHDOG=1" error=ECONNREFUSED failures=1/, 5000, 'the failure logged');
  const client = await RawClient.connect(port, { clientId: 'after-notify-loss' });
  client.send({ cmd: 'pingreq' });
  await client.next('pingresp');
  t.pass('a client connects and is answered');
  await sleep(5 * PING_MS);
  t.equal(gw.child.exitCode, null, 'still running');
  t.equal(gw.stdout.match(/systemd notification not delivered/g)?.length, 1, 'logged once, not at every ping');
  client.disconnect();
  signal(gw, 'SIGTERM');
  t.equal((await gw.exited).code, 0, 'SIGTERM exits 0');
});

t.test('not through the launcher: a warning, nothing sent; without NOTIFY_SOCKET the launcher changes nothing', async (t) => {
  const dir = tempDir(t, 'edgeway-notify-');
  const socket = await NotifySocket.bind(t, join(dir, 'notify.sock'));
  const direct = startUnderNotify(t, writeConfig(dir, await freePort()), { NOTIFY_SOCKET: socket.address }, false);
  await waitForOutput(() => direct.stdout, /edgeway started/, 15_000, 'the gateway to start');
  t.match(direct.stdout, /warn systemd: readiness is not reported \(a Type=notify unit will time out\) reason="NOTIFY_SOCKET is set but EDGEWAY_NOTIFY_FD is not/);
  signal(direct, 'SIGTERM');
  t.equal((await direct.exited).code, 0, 'SIGTERM exits 0');
  await socket.flush();
  t.same(socket.messages, [], 'nothing sent');

  const plain = startUnderNotify(t, writeConfig(dir, await freePort()), {});
  await waitForOutput(() => plain.stdout, /edgeway started/, 15_000, 'the gateway to start');
  const environ = readFileSync(`/proc/${plain.child.pid}/environ`, 'utf8').split('\0');
  t.same(environ.filter((v) => v.startsWith('EDGEWAY_NOTIFY_FD=')), [], 'notify-exec.pl handed over no descriptor');
  t.notMatch(plain.stdout + plain.stderr, /systemd/, 'no systemd line');
  signal(plain, 'SIGTERM');
  t.equal((await plain.exited).code, 0, 'SIGTERM exits 0');
});
