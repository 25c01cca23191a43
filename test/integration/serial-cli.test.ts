/**
 * The serial bridge through the real `edgeway` command: `edgeway serial list` (which must survive
 * a machine without udevadm), and the "done when": five lines of YAML with a socat pty,
 * readings seen by `mosquitto_sub -t 'sensors/#' -v`, unplug and replug resume the flow.
 */
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import t from 'tap';
import { GATEWAY_MAIN as MAIN } from '../helpers/gateway';
import { freePort, startProcess, waitForOutput } from '../helpers/processes';
import { Device, plugIn } from '../helpers/pty';

const noStackTrace = (stderr: string): boolean => !stderr.includes('    at ');

function onPath(command: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => {
    try {
      accessSync(join(dir, command), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

const dir = mkdtempSync(join(tmpdir(), 'edgeway-serial-cli-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('serial list: exits 0 with a table or "no serial ports found", with or without udevadm', async (t) => {
  const r = startProcess(t, process.execPath, [MAIN, 'serial', 'list'], 10_000);
  const { code } = await r.exited;
  t.equal(code, 0, `exit 0 ${r.stderr}`);
  t.match(r.stdout, /^(PATH +BY-ID +VID:PID +SERIAL +DESCRIPTION\n(\/dev\/\S+ +.*\n)+|no serial ports found\n)$/, 'a table or the empty message');
  t.ok(noStackTrace(r.stderr), 'no stack trace');
  if (!onPath('udevadm')) {
    t.match(r.stderr, /udev not available \(spawn udevadm ENOENT\); read \/sys\/class\/tty and \/dev\/serial\/by-id/, 'says why it used the fallback');
  }
  t.comment(r.stdout.trimEnd());
});

t.test('serial list --json: a JSON array of ports', async (t) => {
  const r = startProcess(t, process.execPath, [MAIN, 'serial', 'list', '--json'], 10_000);
  const { code } = await r.exited;
  t.equal(code, 0);
  const ports = JSON.parse(r.stdout) as { path: string }[];
  t.ok(Array.isArray(ports), 'an array');
  for (const p of ports) t.match(p.path, /^\/dev\//, `${p.path} is a device path`);
});

t.test('unknown commands and misplaced --json are usage errors', async (t) => {
  for (const args of [['serial'], ['serial', 'lst'], ['frobnicate'], ['--json']]) {
    const r = startProcess(t, process.execPath, [MAIN, ...args], 10_000);
    const { code } = await r.exited;
    t.equal(code, 64, `${args.join(' ')}: EX_USAGE`);
    t.match(r.stderr, /Usage: edgeway/);
  }
});

t.test('five lines of YAML: readings on mosquitto_sub; unplug and replug resume the flow', async (t) => {
  const plugged = await plugIn(t, dir, 'greenhouse');
  const { pty } = plugged;
  let device: Device = plugged.device;
  const port = await freePort();
  const config = join(dir, 'edgeway.yaml');
  writeFileSync(
    config,
    `listeners:\n  - protocol: mqtt\n    port: ${port}\nsys:\n  interval: 0\n` +
      // The five lines a user adds:
      `serial:\n  - name: greenhouse\n    path: ${pty.gatewayPath}\n    baudRate: 115200\n    format: json\n`,
  );
  const gw = startProcess(t, process.execPath, [MAIN, '--config', config], 30_000, { cwd: dir });
  await waitForOutput(() => gw.stdout, /edgeway started .*serialPorts=1/, 5000, 'the started line');
  t.match(gw.stdout, /serial port online adapter=serial port=greenhouse/, 'the port is online at start');

  // stdbuf: line-buffered stdout on a pipe; -d prints SUBACK, so we know the subscription is in place.
  const sub = startProcess(t, 'stdbuf', ['-oL', 'mosquitto_sub', '-h', '127.0.0.1', '-p', String(port), '-t', 'sensors/#', '-v', '-d'], 30_000);
  await waitForOutput(() => sub.stdout, /received SUBACK/, 5000, 'mosquitto_sub to subscribe');

  await device.write('{"temp":21.5,"hum":40}\n');
  await waitForOutput(() => sub.stdout, /^sensors\/greenhouse\/hum 40$/m, 5000, 'the readings');
  t.match(sub.stdout, /^sensors\/greenhouse\/temp 21\.5$/m, 'temp');
  t.match(sub.stdout, /^sensors\/greenhouse\/hum 40$/m, 'hum');

  // Pull the plug, put it back.
  await device.close();
  await pty.stop();
  await waitForOutput(() => gw.stdout, /warn serial port lost; reopening with back-off/, 5000, 'the lost line');
  await pty.start();
  device = plugged.device = await Device.open(pty.devicePath);
  await waitForOutput(() => gw.stdout, /info serial port online again/, 10_000, 'the port to come back');
  await device.write('{"temp":22.25}\n');
  await waitForOutput(() => sub.stdout, /^sensors\/greenhouse\/temp 22\.25$/m, 5000, 'readings after the replug');
  t.pass('readings flow again after the replug, same gateway process');
  t.equal(gw.child.exitCode, null, 'the gateway never restarted');

  if (gw.child.pid !== undefined) process.kill(gw.child.pid, 'SIGTERM');
  const { code } = await gw.exited;
  t.equal(code, 0, 'SIGTERM exits 0');
  t.ok(noStackTrace(gw.stderr), `no stack trace ${gw.stderr}`);
});
