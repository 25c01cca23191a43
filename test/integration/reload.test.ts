/**
 * SIGHUP on the real `edgeway` command (issue 6): the log level and the serial port list change
 * while running, other changed sections are named as needing a restart, and a broken file changes
 * nothing — clients keep being served throughout.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { startGatewayProcess } from '../helpers/gateway';
import { freePort, startProcess, waitForOutput } from '../helpers/processes';
import { plugIn } from '../helpers/pty';

const dir = mkdtempSync(join(tmpdir(), 'edgeway-reload-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('SIGHUP: log level and serial ports change while running; the rest waits for a restart; a broken file changes nothing', async (t) => {
  const { pty, device } = await plugIn(t, dir, 'shed');
  const port = await freePort();
  const config = join(dir, 'edgeway.yaml');
  const base = `listeners:\n  - protocol: mqtt\n    host: 127.0.0.1\n    port: ${port}\nsys:\n  interval: 0\nstorage:\n  path: ${join(dir, 'db', 'edgeway.db')}\n`;
  const serial = `serial:\n  - name: shed\n    path: ${pty.gatewayPath}\n    baudRate: 115200\n    format: json\n`;
  const metrics = `metrics:\n  host: 127.0.0.1\n  port: ${await freePort()}\n`;
  writeFileSync(config, `${base}${metrics}log:\n  level: info\n`);
  const gw = await startGatewayProcess(t, config, { cwd: dir });
  t.match(gw.stdout, /edgeway started .*serialPorts=0/, 'the started line');
  const hup = () => {
    if (gw.child.pid !== undefined) process.kill(gw.child.pid, 'SIGHUP');
  };
  const sub = startProcess(t, 'stdbuf', ['-oL', 'mosquitto_sub', '-h', '127.0.0.1', '-p', String(port), '-t', 'sensors/#', '-t', 'edgeway/serial/#', '-v', '-d'], 60_000);
  await waitForOutput(() => sub.stdout, /received SUBACK/, 5000, 'mosquitto_sub to subscribe');

  const publish = async (clientId: string) => {
    const pub = startProcess(t, 'mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '-i', clientId, '-t', 'x/y', '-m', '1'], 10_000);
    t.equal((await pub.exited).code, 0, `${clientId} published`);
  };

  // 1. A serial port added, the level raised to warn, and a listener change that needs a restart.
  writeFileSync(config, `${base.replace(`port: ${port}`, `port: ${port + 1}`)}${metrics}log:\n  level: warn\n${serial}`);
  hup();
  await waitForOutput(() => gw.stdout, /warn SIGHUP: changed sections not applied; they take effect after a restart sections=listeners/, 5000, 'the restart-needed line');
  await device.write('{"temp":19.5}\n');
  await waitForOutput(() => sub.stdout, /^sensors\/shed\/temp 19\.5$/m, 5000, 'a reading from the added port');
  t.pass('readings from a port added by SIGHUP; the listener stayed on its old port (the subscriber is still connected)');
  await publish('quiet-client');
  t.notMatch(gw.stdout, /client connected clientId=quiet-client/, 'no info lines at level warn');
  t.notMatch(gw.stdout, /SIGHUP: configuration reloaded/, 'not even the (info) reload line');

  // 2. A broken file: one error line naming the problem, nothing changes.
  writeFileSync(config, `${base}${metrics}log:\n  level: loud\n${serial}`);
  hup();
  await waitForOutput(() => gw.stderr, /SIGHUP: configuration not reloaded; the running one stays in effect .*log\.level/, 5000, 'the error line');
  await device.write('{"temp":19.75}\n');
  await waitForOutput(() => sub.stdout, /^sensors\/shed\/temp 19\.75$/m, 5000, 'readings go on');

  // 3. The port removed and the level back to info: the port goes offline, info lines are back;
  //    the metrics section removed: named as needing a restart (the endpoint keeps running).
  writeFileSync(config, `${base}log:\n  level: info\n`);
  hup();
  await waitForOutput(() => gw.stdout, /SIGHUP: changed sections not applied; they take effect after a restart sections=metrics/, 5000, 'a removed section named');
  await waitForOutput(() => gw.stdout, /info SIGHUP: configuration reloaded .*applied="log,serial" serialRemoved=shed/, 5000, 'the removal');
  await waitForOutput(() => sub.stdout, /^edgeway\/serial\/shed\/status .*offline/m, 5000, 'the removed port publishes offline');
  await device.write('{"temp":30}\n');
  await publish('loud-client');
  await waitForOutput(() => gw.stdout, /client connected clientId=loud-client/, 5000, 'info lines at level info again');
  t.notMatch(sub.stdout, /^sensors\/shed\/temp 30$/m, 'nothing read from a removed port');

  t.equal(gw.child.exitCode, null, 'the gateway never restarted');
  if (gw.child.pid !== undefined) process.kill(gw.child.pid, 'SIGTERM');
  t.equal((await gw.exited).code, 0, 'SIGTERM exits 0');
});
