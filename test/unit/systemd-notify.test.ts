/**
 * gateway/systemd-notify.ts without a socket: how sd_notify's environment is read, and what a
 * notifier does with a descriptor that is not a socket. The protocol itself is tested on the real
 * gateway in test/integration/systemd-notify.test.ts.
 */
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { connectServiceNotifier, noServiceNotifier, notifySettings, statusValue, SystemdNotifier } from '../../gateway/systemd-notify';
import { recordingLogger, tempDir } from '../helpers/sqlite';

const PID = 4242;

t.test('notifySettings reads NOTIFY_SOCKET, EDGEWAY_NOTIFY_FD, WATCHDOG_USEC and WATCHDOG_PID', async (t) => {
  t.same(notifySettings({}, PID), { mode: 'off' }, 'not under systemd');
  t.same(notifySettings({ NOTIFY_SOCKET: '' }, PID), { mode: 'off' }, 'an empty NOTIFY_SOCKET counts as unset');
  const noFd = notifySettings({ NOTIFY_SOCKET: '/run/systemd/notify' }, PID);
  t.equal(noFd.mode, 'unusable', 'NOTIFY_SOCKET without the descriptor');
  t.match(noFd, { reason: /EDGEWAY_NOTIFY_FD is not.*\/usr\/local\/bin\/edgeway/ }, 'says how to start it');
  for (const bad of ['x', '2', '-1', '3.5', '99999999999']) {
    t.match(notifySettings({ NOTIFY_SOCKET: '@n', EDGEWAY_NOTIFY_FD: bad }, PID), { mode: 'unusable', reason: /not a descriptor number/ }, `EDGEWAY_NOTIFY_FD=${bad}`);
  }
  const base = { NOTIFY_SOCKET: '@n', EDGEWAY_NOTIFY_FD: '3' };
  t.same(notifySettings(base, PID), { mode: 'on', fd: 3, watchdogIntervalMs: undefined }, 'no watchdog');
  t.same(notifySettings({ ...base, WATCHDOG_USEC: '30000000' }, PID), { mode: 'on', fd: 3, watchdogIntervalMs: 15_000 }, 'pings at half the timeout');
  t.same(notifySettings({ ...base, WATCHDOG_USEC: '30000000', WATCHDOG_PID: String(PID) }, PID), { mode: 'on', fd: 3, watchdogIntervalMs: 15_000 }, 'WATCHDOG_PID naming this process');
  t.same(notifySettings({ ...base, WATCHDOG_USEC: '1' }, PID), { mode: 'on', fd: 3, watchdogIntervalMs: 1 }, 'a tiny timeout still pings every millisecond');
  t.same(notifySettings({ ...base, WATCHDOG_USEC: String(60 * 86_400 * 1e6) }, PID), { mode: 'on', fd: 3, watchdogIntervalMs: 2 ** 31 - 1 }, "60 days: setInterval's longest delay, not Node's 1 ms fallback");
  t.match(notifySettings({ ...base, WATCHDOG_USEC: '30000000', WATCHDOG_PID: '1' }, PID), { watchdogIntervalMs: undefined, watchdogIgnored: /WATCHDOG_PID=1 is another process \(this is 4242\)/ });
  for (const bad of ['0', 'soon', '-5', '1e6']) {
    t.match(notifySettings({ ...base, WATCHDOG_USEC: bad }, PID), { watchdogIntervalMs: undefined, watchdogIgnored: /not a positive number of microseconds/ }, `WATCHDOG_USEC=${bad}`);
  }
});

t.test('statusValue: one line, bounded', async (t) => {
  t.equal(statusValue('3 clients; mqtt 127.0.0.1:1883'), '3 clients; mqtt 127.0.0.1:1883');
  t.equal(statusValue('start failed:\ncannot listen\r\nhere'), 'start failed: cannot listen here', 'newlines would start a new KEY=value');
  const long = statusValue('x'.repeat(1000));
  t.equal(long.length, 200);
  t.ok(long.endsWith('…'), 'cut with an ellipsis');
});

t.test('connectServiceNotifier: variables removed from the environment; unusable descriptors warned about', async (t) => {
  const env: NodeJS.ProcessEnv = { NOTIFY_SOCKET: '@n', EDGEWAY_NOTIFY_FD: '987654', WATCHDOG_USEC: '100', WATCHDOG_PID: '1', OTHER: 'kept' };
  const logger = recordingLogger();
  t.equal(connectServiceNotifier(env, logger), noServiceNotifier, 'a closed descriptor: no notifier');
  t.same(env, { OTHER: 'kept' }, "children of the gateway do not inherit systemd's variables");
  t.match(logger.lines, [{ level: 'warn', msg: /readiness is not reported/, fields: { reason: 'EDGEWAY_NOTIFY_FD=987654 is not open (EBADF)' } }]);

  const file = join(tempDir(t, 'edgeway-notify-unit-'), 'not-a-socket');
  const fd = openSync(file, 'w');
  t.teardown(() => closeSync(fd));
  const fileLogger = recordingLogger();
  t.equal(connectServiceNotifier({ NOTIFY_SOCKET: '@n', EDGEWAY_NOTIFY_FD: String(fd) }, fileLogger), noServiceNotifier, 'a regular file: no notifier');
  t.match(fileLogger.lines, [{ level: 'warn', fields: { reason: `EDGEWAY_NOTIFY_FD=${fd} is not a socket` } }]);

  const offLogger = recordingLogger();
  t.equal(connectServiceNotifier({}, offLogger), noServiceNotifier, 'not under systemd');
  t.same(offLogger.lines, [], 'and nothing logged');
});

t.test('SystemdNotifier: nothing after STOPPING=1 but pings; a refused write is counted and logged once, never thrown', async (t) => {
  const dir = tempDir(t, 'edgeway-notify-unit-');
  // A regular file stands in for the socket: each send appends its bytes (datagram borders lost).
  const file = join(dir, 'sent');
  const fd = openSync(file, 'w');
  t.teardown(() => closeSync(fd));
  const notifier = new SystemdNotifier(fd, undefined, recordingLogger());
  notifier.ready(() => '2 clients');
  notifier.reloading();
  notifier.reloaded();
  notifier.stopping();
  notifier.reloading();
  notifier.reloaded();
  notifier.ready(() => 'again');
  const sent = readFileSync(file, 'utf8');
  t.match(sent, /^READY=1\nSTATUS=2 clientsRELOADING=1\nMONOTONIC_USEC=\d+\nSTATUS=reloading the configurationREADY=1\nSTATUS=2 clientsSTOPPING=1\nSTATUS=stopping$/, 'a SIGHUP while stopping reports no READY=1');

  const readOnly = openSync(file, 'r');
  t.teardown(() => closeSync(readOnly));
  const logger = recordingLogger();
  const refused = new SystemdNotifier(readOnly, undefined, logger);
  refused.status('starting');
  refused.ready(() => '0 clients');
  refused.stopping();
  t.equal(refused.failures, 3, 'three refused messages counted');
  t.match(logger.lines, [{ level: 'warn', msg: 'systemd notification not delivered', fields: { message: 'STATUS=starting', error: 'EBADF', failures: 1 } }], 'logged once');
});
