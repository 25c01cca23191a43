/**
 * The real `edgeway` command (dist/gateway/main.js) as a child process: exit codes, messages on
 * stderr, a round trip with the Mosquitto command-line clients, and SIGTERM.
 */
import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { GATEWAY_MAIN as MAIN } from '../helpers/gateway';
import { freePort, startProcess, waitForOutput, type Running } from '../helpers/processes';

const EXIT_CONFIG = 78;

const dir = mkdtempSync(join(tmpdir(), 'edgeway-cli-test-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

let fileCounter = 0;
function writeConfig(text: string): string {
  const path = join(dir, `edgeway-${++fileCounter}.yaml`);
  writeFileSync(path, text);
  return path;
}

/**
 * Starts a command, killed by PID after `timeoutMs` or when the file ends; run in the test folder,
 * where a gateway without storage.path creates its ./data.
 */
function start(command: string, args: string[], timeoutMs: number, env?: Record<string, string>): Running {
  return startProcess(t, command, args, timeoutMs, { cwd: dir, ...(env === undefined ? {} : { env }) });
}

/** Runs edgeway to completion and returns its exit code and output. */
async function runEdgeway(args: string[], timeoutMs = 10_000, env?: Record<string, string>) {
  const r = start(process.execPath, [MAIN, ...args], timeoutMs, env);
  const { code, signal } = await r.exited;
  return { code, signal, stdout: r.stdout, stderr: r.stderr };
}

const noStackTrace = (stderr: string): boolean => !stderr.includes('    at ');

t.test('--help exits 0 with the usage', async (t) => {
  const r = await runEdgeway(['--help']);
  t.equal(r.code, 0);
  t.match(r.stdout, /^Usage: edgeway \[--config FILE\]/);
  t.match(r.stdout, /--config FILE/);
  t.equal(r.stderr, '');
});

t.test('--version prints the package version', async (t) => {
  const r = await runEdgeway(['--version']);
  t.equal(r.code, 0);
  t.equal(r.stdout, '0.1.0\n');
});

t.test('an unknown option is a usage error', async (t) => {
  const r = await runEdgeway(['--frobnicate']);
  t.equal(r.code, 64, 'EX_USAGE');
  t.match(r.stderr, /frobnicate/);
  t.match(r.stderr, /Usage: edgeway/);
  t.ok(noStackTrace(r.stderr), 'no stack trace');
});

t.test('a bad config exits 78 and names every bad key', async (t) => {
  const path = writeConfig(`
listeners:
  - protocol: mqtt
    host: 127.0.0.1
    port: "1883"
limits:
  maxConnections: 0
  maxPacketSise: 1MiB
log:
  level: loud
extra: true
`);
  const r = await runEdgeway(['--config', path]);
  t.equal(r.code, EXIT_CONFIG, 'exit code 78 (EX_CONFIG)');
  t.match(r.stderr, `invalid configuration in ${path}`, 'names the file');
  t.match(r.stderr, 'listeners[0].port: expected number, received string', 'wrong type');
  t.match(r.stderr, 'limits.maxConnections: ', 'bad value');
  t.match(r.stderr, 'limits.maxPacketSise: unknown key', 'nested unknown key');
  t.match(r.stderr, 'log.level: ', 'bad enum value');
  t.match(r.stderr, 'extra: unknown key', 'top-level unknown key');
  t.ok(noStackTrace(r.stderr), 'no stack trace');
  t.notMatch(r.stdout, /listening/, 'nothing was started');
});

t.test('each kind of config error alone exits 78 and names the key', async (t) => {
  const cases: [string, string][] = [
    ['listeners:\n  - protocol: mqtt\n    port: 1883\n    tls: true\n', 'listeners[0].tls: unknown key'],
    ['sys:\n  interval: often\n', 'sys.interval: expected number, received string'],
    ['limits:\n  maxOutgoingBytes: 64KiB\n  outgoingHighWater: 64KiB\n', 'limits.outgoingHighWater: must be smaller than maxOutgoingBytes'],
    ['listeners:\n  - protocol: mqtt\n    port: 70000\n', 'listeners[0].port: '],
    ['listeners: [1883\n', 'YAML syntax: '],
    ['- just\n- a list\n', '(top level): expected a mapping'],
  ];
  const results = await Promise.all(cases.map(([yaml]) => runEdgeway(['--config', writeConfig(yaml)])));
  cases.forEach(([yaml, expected], i) => {
    const r = results[i];
    if (r === undefined) throw new Error('missing result');
    t.equal(r.code, EXIT_CONFIG, `exit 78 for ${JSON.stringify(yaml)}`);
    t.match(r.stderr, expected, `stderr names it: ${expected}`);
    t.ok(noStackTrace(r.stderr), 'no stack trace');
  });
});

t.test('a missing config file exits 78', async (t) => {
  const missing = join(dir, 'nope.yaml');
  const r = await runEdgeway(['--config', missing]);
  t.equal(r.code, EXIT_CONFIG);
  t.match(r.stderr, missing, 'names the file');
  t.match(r.stderr, /ENOENT/);
  t.ok(noStackTrace(r.stderr), 'no stack trace');
});

t.test('a port already in use exits 1 with one clear line', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen({ host: '127.0.0.1', port: 0 }, resolve));
  t.teardown(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
  const { port } = blocker.address() as AddressInfo;
  const path = writeConfig(`listeners:\n  - protocol: mqtt\n    host: 127.0.0.1\n    port: ${port}\nsys:\n  interval: 0\n`);
  const r = await runEdgeway(['--config', path]);
  t.equal(r.code, 1, 'exit code 1');
  const lines = r.stderr.trimEnd().split('\n');
  t.equal(lines.length, 1, `one line on stderr: ${JSON.stringify(r.stderr)}`);
  t.match(lines[0], new RegExp(`127\\.0\\.0\\.1:${port}.*address already in use`), 'names the address and the cause');
  t.ok(noStackTrace(r.stderr), 'no stack trace');
});

t.test('a good config: listening, a mosquitto_pub/mosquitto_sub round trip, SIGTERM exits 0', async (t) => {
  const port = await freePort();
  const path = writeConfig(`listeners:\n  - protocol: mqtt\n    host: 127.0.0.1\n    port: ${port}\nsys:\n  interval: 0\nlog:\n  level: info\n`);
  const gw = start(process.execPath, [MAIN, '--config', path], 20_000);
  await waitForOutput(() => gw.stdout, new RegExp(`listening .*port=${port}`), 5000, 'the listening line');
  t.pass('prints "listening" with the port');
  await waitForOutput(() => gw.stdout, /edgeway started/, 5000, 'the started line');

  const common = ['-h', '127.0.0.1', '-p', String(port), '-V', 'mqttv311'];
  // -d prints the protocol exchange, so the SUBACK tells us when the subscription is in place;
  // stdbuf makes its stdout line-buffered on a pipe.
  const sub = start('stdbuf', ['-oL', 'mosquitto_sub', ...common, '-i', 'cli-sub', '-t', 'cli/round-trip', '-q', '1', '-C', '1', '-W', '10', '-d'], 15_000);
  await waitForOutput(() => sub.stdout, /received SUBACK/, 5000, 'mosquitto_sub to be subscribed');
  const pub = start('mosquitto_pub', [...common, '-i', 'cli-pub', '-t', 'cli/round-trip', '-q', '1', '-m', 'hello from mosquitto_pub'], 10_000);
  const pubExit = await pub.exited;
  t.equal(pubExit.code, 0, `mosquitto_pub exits 0 ${pub.stderr}`);
  const subExit = await sub.exited;
  t.equal(subExit.code, 0, `mosquitto_sub received its one message and exited 0 ${sub.stderr}`);
  t.match(sub.stdout, /^hello from mosquitto_pub$/m, 'the payload arrived');
  await waitForOutput(() => gw.stdout, /client connected clientId=cli-pub/, 3000, 'the connect log line');

  t.equal(gw.child.exitCode, null, 'the gateway is still running');
  if (gw.child.pid !== undefined) process.kill(gw.child.pid, 'SIGTERM');
  const { code, signal } = await gw.exited;
  t.equal(signal, null, 'not killed by the signal');
  t.equal(code, 0, 'SIGTERM exits 0');
  t.match(gw.stdout, /stopping signal=SIGTERM/);
  t.ok(noStackTrace(gw.stderr), 'no stack trace');

  // The port is released: it can be bound again at once.
  const again = net.createServer();
  await new Promise<void>((resolve, reject) => {
    again.once('error', reject);
    again.listen({ host: '127.0.0.1', port }, resolve);
  });
  await new Promise<void>((resolve) => again.close(() => resolve()));
  t.pass('the port was released');
});

t.test('check-config: ok and exit 0 for a good file, every problem and exit 78 for a bad one', async (t) => {
  const good = writeConfig('listeners:\n  - protocol: mqtt\n    host: 127.0.0.1\n    port: 1883\nlog:\n  level: debug\n');
  const ok = await runEdgeway(['check-config', good]);
  t.equal(ok.code, 0);
  t.equal(ok.stdout, `${good}: ok\n`);
  const bad = writeConfig('listeners:\n  - protocol: mqtt\n    port: "x"\nlog:\n  level: loud\nextra: 1\n');
  const r = await runEdgeway(['check-config', bad]);
  t.equal(r.code, EXIT_CONFIG);
  for (const problem of ['listeners[0].port: expected number', 'log.level: ', 'extra: unknown key']) t.match(r.stderr, problem, `names ${problem}`);
  t.notMatch(r.stdout, /listening/, 'nothing started');
  const fromEnv = await runEdgeway(['check-config'], 10_000, { EDGEWAY_CONFIG: bad });
  t.equal(fromEnv.code, EXIT_CONFIG, 'the file can come from EDGEWAY_CONFIG');
  t.match(fromEnv.stderr, bad);
  const none = await runEdgeway(['check-config'], 10_000, { EDGEWAY_CONFIG: '' });
  t.equal(none.code, 64, 'no file at all is a usage error');
  t.match(none.stderr, /check-config needs a file/);
});

t.test('EDGEWAY_CONFIG names the file when --config is absent; --config wins', async (t) => {
  const port = await freePort();
  const path = writeConfig(`listeners:\n  - protocol: mqtt\n    host: 127.0.0.1\n    port: ${port}\nsys:\n  interval: 0\n`);
  const gw = startProcess(t, process.execPath, [MAIN], 20_000, { cwd: dir, env: { EDGEWAY_CONFIG: path } });
  await waitForOutput(() => gw.stdout, new RegExp(`listening .*port=${port}`), 5000, 'listening on the port from the file');
  gw.child.kill('SIGTERM');
  t.equal((await gw.exited).code, 0);
  const bad = writeConfig('log:\n  level: loud\n');
  const r = await runEdgeway(['--config', bad], 10_000, { EDGEWAY_CONFIG: path });
  t.equal(r.code, EXIT_CONFIG, '--config is used, not the environment');
  t.match(r.stderr, bad);
});

t.test('under systemd (JOURNAL_STREAM is our stdout) lines carry the journal priority and no time; elsewhere a time', async (t) => {
  const port = await freePort();
  const path = writeConfig(`listeners:\n  - protocol: mqtt\n    host: 127.0.0.1\n    port: ${port}\nsys:\n  interval: 0\nlog:\n  level: debug\n`);
  const run = async (journalStream: (fd: number) => string) => {
    const file = join(dir, `out-${++fileCounter}.log`);
    const fd = openSync(file, 'w');
    const gw = startProcess(t, process.execPath, [MAIN, '--config', path], 20_000, { cwd: dir, env: { JOURNAL_STREAM: journalStream(fd) }, stdoutFd: fd });
    closeSync(fd);
    await waitForOutput(() => readFileSync(file, 'utf8'), /edgeway started/, 5000, 'the started line');
    gw.child.kill('SIGTERM');
    t.equal((await gw.exited).code, 0);
    return readFileSync(file, 'utf8').trimEnd().split('\n');
  };
  const journal = await run((fd) => {
    const st = fstatSync(fd);
    return `${st.dev}:${st.ino}`;
  });
  t.ok(journal.length >= 2, 'several lines');
  t.ok(journal.every((l) => /^<[3-7]>(debug|info|warn|error) /.test(l)), `every line starts with its priority: ${journal[0]}`);
  t.ok(journal.some((l) => l.startsWith('<6>info listening')), 'info is priority 6');
  t.notOk(journal.some((l) => /\d{4}-\d\d-\d\dT/.test(l.slice(0, 40))), 'no time of its own');
  const plain = await run(() => '1:1');
  t.ok(plain.every((l) => /^\d{4}-\d\d-\d\dT\S+Z (debug|info|warn|error) /.test(l)), `another stream's JOURNAL_STREAM: plain lines with a time: ${plain[0]}`);
});
