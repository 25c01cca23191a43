/**
 * scripts/install.sh and scripts/edgeway.service (issue 6).
 *
 * The installer runs for real with --root into a temporary folder: it installs the production
 * dependencies with `npm ci --omit=dev` (better-sqlite3 may compile here: about a minute), and
 * the staged gateway is started from that tree. --root records the commands that would change
 * the live system (useradd, systemctl, apt-get) in ROOT/.edgeway-install.log instead of running
 * them, which is what is checked for them. The compiled output this test runs from is installed
 * with --dist, so the shared checkout's dist/ and node_modules/ are never rebuilt by a test.
 *
 * The npm failure paths (the build-tools fallback for better-sqlite3, the checkout build and its
 * up-to-date check) run against a fake `npm` first in PATH that logs its calls.
 */
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import t from 'tap';
import { loadConfigFile } from '../../config/load';
import { NotifySocket } from '../helpers/notify-socket';
import { freePort, startProcess, waitForOutput } from '../helpers/processes';
import { RawClient } from '../helpers/raw-client';

/** The compiled tree this file runs from (dist/, or a private tsc --outDir): holds gateway/, adapters/, config/. */
const OUT = join(__dirname, '..', '..');

/** The checkout: the nearest folder above the compiled test that has scripts/install.sh. */
function findRepo(): string {
  for (let dir = OUT; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'scripts', 'install.sh')) && existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no scripts/install.sh above ${OUT}`);
  }
}
const REPO = findRepo();
const INSTALL = join(REPO, 'scripts', 'install.sh');
const UNIT_SOURCE = join(REPO, 'scripts', 'edgeway.service');
const EXAMPLE = join(REPO, 'config', 'edgeway.example.yaml');
const VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
// The node running this test is the one the installer finds first (and writes into the wrapper).
const NODE_DIR = dirname(process.execPath);
const PATH = `${NODE_DIR}${delimiter}${process.env.PATH ?? '/usr/bin:/bin'}`;

// The staged `npm ci --omit=dev` compiles better-sqlite3 from source where its prebuilt binary
// cannot be downloaded (here: about a minute, more beside other test files): a larger bound than
// .taprc's 120 s for this file. Each step also has its own kill timer.
t.setTimeout(300_000);

const tmp = mkdtempSync(join(tmpdir(), 'edgeway-install-test-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (SIGKILLed after `timeoutMs`), output captured. */
async function run(command: string, args: string[], options: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {}): Promise<Result> {
  const r = startProcess(t, command, args, options.timeoutMs ?? 30_000, { cwd: options.cwd ?? tmp, env: { PATH, ...options.env } });
  const { code, signal } = await r.exited;
  return { code, signal, stdout: r.stdout, stderr: r.stderr };
}

const install = (args: string[], env?: Record<string, string>, timeoutMs = 180_000): Promise<Result> => run('bash', [INSTALL, ...args], { env, timeoutMs });
/** A failing assertion's diagnostics: the command's output (tap prints extras for failures only). */
const output = (r: Result) => ({ stdout: r.stdout, stderr: r.stderr });
const mode = (path: string): string => (statSync(path).mode & 0o7777).toString(8).padStart(4, '0');
const read = (path: string): string => readFileSync(path, 'utf8');

/** The lines recorded under --root, without the "# install" / "# uninstall" run headers. */
function recorded(root: string): string[] {
  return read(join(root, '.edgeway-install.log'))
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'));
}

/** The lines of the last run recorded under --root (after its "# …" header). */
function lastRun(root: string): string[] {
  const lines = read(join(root, '.edgeway-install.log')).split('\n').filter((l) => l !== '');
  let start = 0;
  lines.forEach((l, i) => {
    if (l.startsWith('#')) start = i + 1;
  });
  return lines.slice(start);
}

function userExists(name: string): boolean {
  return spawnSync('getent', ['passwd', name]).status === 0;
}

// ---------------------------------------------------------------------------------------------

t.test('usage: --help exits 0; a bad option or --purge without --uninstall exits 64 with the usage', async (t) => {
  const help = await install(['--help']);
  t.equal(help.code, 0, 'exits 0', output(help));
  t.match(help.stdout, /^Usage: sudo scripts\/install\.sh/);
  t.match(help.stdout, /--uninstall/);
  for (const args of [['--frobnicate'], ['--purge', '--root', join(tmp, 'usage')], ['--root'], ['stray']]) {
    const r = await install(args);
    t.equal(r.code, 64, `${args.join(' ')} exits 64 (EX_USAGE)`, output(r));
    t.match(r.stderr, /Usage: sudo scripts\/install\.sh/, 'prints the usage on stderr');
  }
  t.notOk(existsSync(join(tmp, 'usage', 'opt')), 'nothing staged');
});

t.test('Node.js older than 20: explains where to get it and exits 69, installing nothing', async (t) => {
  const bin = join(tmp, 'old-node-bin');
  mkdirSync(bin);
  writeFileSync(join(bin, 'node'), '#!/bin/sh\necho 18.19.1\n');
  chmodSync(join(bin, 'node'), 0o755);
  const root = join(tmp, 'old-node');
  const r = await install(['--root', root, '--dist', OUT], { PATH: `${bin}${delimiter}${PATH}` });
  t.equal(r.code, 69, 'exits 69 (EX_UNAVAILABLE)', output(r));
  t.match(r.stderr, /Node\.js 20 or newer/);
  t.match(r.stderr, /found Node\.js 18\.19\.1/);
  t.match(r.stderr, /deb\.nodesource\.com/, 'names NodeSource');
  t.match(r.stderr, /apt-get install -y nodejs/, 'names the distribution package');
  t.notOk(existsSync(join(root, 'opt')), 'nothing staged');
});

// ---------------------------------------------------------------------------------------------
// The real install, staged. The subtests below share `root` and run in order.

const root = join(tmp, 'root');
const app = join(root, 'opt', 'edgeway');
const wrapper = join(root, 'usr', 'local', 'bin', 'edgeway');
const unit = join(root, 'etc', 'systemd', 'system', 'edgeway.service');
const conf = join(root, 'etc', 'edgeway', 'edgeway.yaml');
const stateDir = join(root, 'var', 'lib', 'edgeway');
const hadUser = userExists('edgeway');

t.test('install --root: the staged tree', async (t) => {
  const r = await install(['--root', root, '--dist', OUT]);
  t.equal(r.code, 0, 'install.sh exits 0', output(r));
  if (r.code !== 0) return;
  t.match(r.stdout, /installing production dependencies into \/opt\/edgeway \(npm ci --omit=dev\)/);

  // The application, compiled JavaScript only, with production dependencies only.
  for (const f of ['dist/gateway/main.js', 'dist/gateway/app.js', 'dist/config/load.js', 'config/edgeway.example.yaml', 'libexec/notify-exec.pl', 'package.json', 'package-lock.json']) {
    t.ok(existsSync(join(app, f)), `opt/edgeway/${f}`);
  }
  t.ok(readdirSync(join(app, 'dist', 'adapters')).includes('sqlite'), 'opt/edgeway/dist/adapters/sqlite');
  t.same(readdirSync(join(app, 'dist')).sort(), ['adapters', 'config', 'gateway'], 'no tests or scripts in dist/');
  t.equal(read(join(app, 'package-lock.json')), read(join(REPO, 'package-lock.json')), 'the checkout lock file');
  const deps = JSON.parse(read(join(REPO, 'package.json'))) as { dependencies: Record<string, string> };
  for (const name of Object.keys(deps.dependencies)) t.ok(existsSync(join(app, 'node_modules', name, 'package.json')), `dependency ${name} installed`);
  // --omit=dev: nothing the lock file marks as dev-only (typescript, tap, mqtt, aedes …).
  const lock = JSON.parse(read(join(REPO, 'package-lock.json'))) as { packages: Record<string, { dev?: boolean }> };
  const devOnly = Object.entries(lock.packages).filter(([path, p]) => path !== '' && p.dev === true);
  const present = devOnly.filter(([path]) => existsSync(join(app, path)));
  t.ok(devOnly.length > 0, 'the lock file has dev-only packages');
  t.same(present.map(([path]) => path), [], 'none of them is installed');
  const maps = spawnSync('find', [join(app, 'dist'), '-name', '*.map']).stdout.toString();
  t.equal(maps, '', 'no source maps');
  t.equal(mode(join(app, 'dist', 'gateway', 'main.js')), '0644');
  t.equal(mode(app), '0755');

  // The unit, the wrapper, the configuration, the state folder.
  t.equal(read(unit), read(UNIT_SOURCE), 'the unit is scripts/edgeway.service');
  t.equal(mode(unit), '0644');
  t.equal(mode(wrapper), '0755');
  const wrapperText = read(wrapper);
  t.match(wrapperText, /^#!\/bin\/sh\n/);
  t.match(wrapperText, `\nset -- "${join(NODE_DIR, 'node')}" --max-semi-space-size=2 "\${EDGEWAY_HOME:-/opt/edgeway}/dist/gateway/main.js" "$@"\n`);
  t.match(wrapperText, `\nif [ -n "\${NOTIFY_SOCKET:-}" ]; then\n  exec "/usr/bin/perl" "\${EDGEWAY_HOME:-/opt/edgeway}/libexec/notify-exec.pl" "$@"\nfi\nexec "$@"\n`, 'through notify-exec.pl under systemd');
  t.equal(mode(dirname(conf)), '0750');
  t.equal(mode(conf), '0640', 'the configuration is not world-readable (it may hold a Redis password)');
  t.equal(mode(stateDir), '0750');

  // The configuration is the example with storage.path in the state folder, and valid.
  const text = read(conf);
  t.match(text, /^storage:\n(?:.*\n)*?  path: \/var\/lib\/edgeway\/edgeway\.db /m, 'storage.path is /var/lib/edgeway/edgeway.db');
  const body = text
    .split('\n')
    .filter((l) => !l.startsWith('# /etc/edgeway/edgeway.yaml') && !l.startsWith('# set to /var/lib/edgeway'))
    .join('\n')
    .replace('  path: /var/lib/edgeway/edgeway.db', '  path: ./data/edgeway.db');
  t.equal(body, read(EXAMPLE), 'otherwise the documented example, unchanged');
  t.equal(loadConfigFile(conf).storage.path, '/var/lib/edgeway/edgeway.db', 'valid against the schema');

  // What would change the live system was recorded, not done.
  const lines = recorded(root);
  t.match(
    lines.find((l) => l.startsWith('useradd ')) ?? '',
    /^useradd --system --user-group --groups dialout --home-dir \/var\/lib\/edgeway --no-create-home --shell \S*nologin .* edgeway$/,
    'useradd: a system user edgeway in group dialout, no login shell',
  );
  t.ok(lines.includes('chown edgeway:edgeway /var/lib/edgeway'), 'the state folder is owned by edgeway');
  t.ok(lines.includes('chgrp edgeway /etc/edgeway/edgeway.yaml'), 'the configuration is readable by group edgeway');
  const reload = lines.indexOf('systemctl daemon-reload');
  const enable = lines.indexOf('systemctl enable --now edgeway');
  t.ok(reload >= 0 && enable > reload, `systemctl daemon-reload, then systemctl enable --now edgeway: ${JSON.stringify(lines)}`);
  t.notOk(lines.some((l) => l.includes('apt-get')), 'no build tools needed');
  if (!hadUser) t.notOk(userExists('edgeway'), 'no user was created on this machine');
  t.notOk(existsSync(join(REPO, 'dist', '.edgeway-install-build')), 'the checkout was not built (--dist)');
});

t.test('the staged wrapper runs the installed gateway', async (t) => {
  if (!existsSync(wrapper)) return t.fail('not installed');
  const env = { EDGEWAY_HOME: app };
  const version = await run(wrapper, ['--version'], { env });
  t.equal(version.code, 0, 'exits 0', output(version));
  t.equal(version.stdout, `${VERSION}\n`, '--version prints the package version');

  // The installed configuration, with a free port and a database in the test folder.
  const port = await freePort();
  const db = join(tmp, 'run', 'edgeway.db');
  const config = read(conf)
    .replace(/^(    port: )1883$/m, `$1${port}`)
    .replace(/^(  path: )\/var\/lib\/edgeway\/edgeway\.db /m, `$1${db} `);
  const configPath = join(tmp, 'run.yaml');
  writeFileSync(configPath, config);
  // Never start it on the real /var/lib/edgeway or port 1883.
  const loaded = loadConfigFile(configPath);
  t.equal(loaded.storage.path, db, 'the copy stores in the test folder');
  t.same(loaded.listeners.map((l) => l.port), [port], 'the copy listens on the free port');
  if (loaded.storage.path !== db || loaded.listeners[0]?.port !== port) return;

  // As the unit starts it (Type=notify): with a NOTIFY_SOCKET, so through the installed notify-exec.pl.
  const notify = await NotifySocket.bind(t, join(tmp, 'notify.sock'));
  const gw = startProcess(t, wrapper, ['--config', configPath], 30_000, { cwd: tmp, env: { PATH, NOTIFY_SOCKET: notify.address, ...env } });
  const out = () => gw.stdout + gw.stderr;

  await waitForOutput(out, new RegExp(`listening .*port=${port}`), 10_000, 'the staged gateway to listen');
  await waitForOutput(out, /edgeway started/, 10_000, 'the staged gateway to start');
  // The wrapper exec()s node, so this is the gateway's own environment.
  const environ = gw.child.pid === undefined ? [] : read(`/proc/${gw.child.pid}/environ`).split('\0');
  t.ok(environ.includes('MALLOC_ARENA_MAX=2'), 'the wrapper limits glibc to 2 malloc arenas');
  await notify.waitFor('READY=1', 10_000);
  t.pass('it reports READY=1 to the notification socket');
  const client = await RawClient.connect(port, { clientId: 'install-test' });
  t.pass('an MQTT client connects (CONNACK accepted)');
  client.disconnect();
  t.ok(statSync(db).size > 0, 'the database was created by the installed better-sqlite3');

  if (gw.child.pid !== undefined) process.kill(gw.child.pid, 'SIGTERM');
  const { code, signal } = await gw.exited;
  t.equal(signal, null, `not killed by a signal${out()}`);
  t.equal(code, 0, 'SIGTERM exits 0');
});

t.test('the unit: type, user, restart policy, hardening without PrivateDevices= or MemoryDenyWriteExecute=', async (t) => {
  const text = read(UNIT_SOURCE);
  for (const line of [
    'Type=notify',
    'NotifyAccess=main',
    'TimeoutStartSec=60',
    'WatchdogSec=30',
    'User=edgeway',
    'Group=edgeway',
    'SupplementaryGroups=dialout',
    'ExecStart=/usr/local/bin/edgeway --config /etc/edgeway/edgeway.yaml',
    'WorkingDirectory=/var/lib/edgeway',
    'StateDirectory=edgeway',
    'Restart=on-failure',
    'RestartPreventExitStatus=78',
    'ProtectSystem=strict',
    'NoNewPrivileges=yes',
    'DevicePolicy=closed',
    'DeviceAllow=char-ttyUSB rw',
    'DeviceAllow=char-ttyACM rw',
    'DeviceAllow=char-ttyAMA rw',
    'DeviceAllow=char-ttyS rw',
    'CapabilityBoundingSet=',
  ]) {
    t.match(text, new RegExp(`^${line.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`, 'm'), line);
  }
  t.notMatch(text, /^\s*PrivateDevices\s*=/m, 'no PrivateDevices= (it hides the serial ports)');
  t.notMatch(text, /^\s*MemoryDenyWriteExecute\s*=/m, 'no MemoryDenyWriteExecute= (it breaks V8)');

});

const analyze = spawnSync('sh', ['-c', 'command -v systemd-analyze']).stdout.toString().trim();
const noAnalyze = analyze === '' ? 'systemd-analyze is not installed (Debian package "systemd"): verify and security not run' : false;

t.test('systemd-analyze verify passes and systemd-analyze security --offline scores the unit', { skip: noAnalyze }, async (t) => {
  // verify checks that ExecStart= is executable: point it at an existing file (the unit is
  // otherwise the one installed), in a folder of its own so the file name stays edgeway.service.
  const dir = join(tmp, 'verify');
  mkdirSync(dir, { recursive: true });
  const exec = join(dir, 'edgeway-exec');
  writeFileSync(exec, '#!/bin/sh\n');
  chmodSync(exec, 0o755);
  const copy = join(dir, 'edgeway.service');
  const installed = read(existsSync(unit) ? unit : UNIT_SOURCE);
  writeFileSync(copy, installed.replace(/^ExecStart=\/usr\/local\/bin\/edgeway /m, `ExecStart=${exec} `));
  const verify = await run(analyze, ['verify', copy]);
  t.equal(verify.code, 0, 'systemd-analyze verify exits 0', output(verify));
  t.equal(verify.stdout + verify.stderr, '', 'and prints nothing (unknown keys are only warnings)');

  // The check can fail: a misspelt key and a bad value are reported.
  const broken = join(dir, 'broken', 'edgeway.service');
  mkdirSync(dirname(broken));
  writeFileSync(broken, read(copy).replace(/^Type=notify$/m, 'Type=notify\nRestartPreventExitStatuss=78\nProtectSystem=sometimes'));
  const bad = await run(analyze, ['verify', broken]);
  t.match(bad.stdout + bad.stderr, /RestartPreventExitStatuss/, 'verify reports an unknown key');
  t.match(bad.stdout + bad.stderr, /protect system value.*sometimes/i, 'verify reports a bad value');

  const security = await run(analyze, ['security', '--offline=true', copy]);
  const score = /Overall exposure level for edgeway\.service: ([\d.]+)/.exec(security.stdout);
  t.ok(score, 'systemd-analyze security prints the exposure level', output(security));
  if (score?.[1] !== undefined) {
    t.comment(`systemd-analyze security --offline=true: ${score[1]} (0 = best, 10 = worst)`);
    t.ok(Number(score[1]) <= 2, `exposure ${score[1]} is at most 2.0 ("OK")`);
  }
});

t.test('a second run is idempotent and keeps an edited configuration', async (t) => {
  if (!existsSync(conf)) return t.fail('not installed');
  const edited = `${read(conf)}\n# edited by install.test\n`;
  writeFileSync(conf, edited);
  const appInode = statSync(app).ino;
  const r = await install(['--root', root, '--dist', OUT]);
  t.equal(r.code, 0, 'exits 0', output(r));
  t.equal(read(conf), edited, 'the edited configuration was not overwritten');
  t.match(r.stdout, /kept \/etc\/edgeway\/edgeway\.yaml/);
  t.match(r.stdout, /\/opt\/edgeway is up to date/);
  t.notMatch(r.stdout, /npm ci/, 'no npm ci');
  t.equal(statSync(app).ino, appInode, '/opt/edgeway was left in place');
  const lines = lastRun(root);
  t.ok(lines.includes('systemctl enable --now edgeway'), 'enables and starts again (a no-op when running)');
  t.notOk(lines.includes('systemctl try-restart edgeway'), 'no restart: nothing changed');

  // An upgrade: new code is swapped in, the unchanged dependencies are kept (no npm ci), the
  // running service restarted.
  const upgrade = join(tmp, 'upgrade-out');
  for (const part of ['gateway', 'adapters', 'config']) cpSync(join(OUT, part), join(upgrade, part), { recursive: true });
  writeFileSync(join(upgrade, 'gateway', 'upgrade-marker.js'), '// a new file in the new build\n');
  const u = await install(['--root', root, '--dist', upgrade]);
  t.equal(u.code, 0, 'exits 0', output(u));
  t.notMatch(u.stdout, /npm ci/, 'dependencies reused, not reinstalled');
  t.ok(existsSync(join(app, 'dist', 'gateway', 'upgrade-marker.js')), 'the new build is installed');
  t.not(statSync(app).ino, appInode, 'the application folder was replaced as a whole');
  t.ok(lastRun(root).includes('systemctl try-restart edgeway'), 'the service is restarted after an upgrade');
  t.equal(read(conf), edited, 'the configuration still untouched');
  const version = await run(wrapper, ['--version'], { env: { EDGEWAY_HOME: app } });
  t.equal(version.stdout, `${VERSION}\n`, 'the upgraded tree runs');
});

t.test('--uninstall keeps the configuration and the data; --purge removes them', async (t) => {
  if (!existsSync(conf)) return t.fail('not installed');
  const data = join(stateDir, 'edgeway.db');
  writeFileSync(data, 'data the gateway wrote');
  const confText = read(conf);

  const r = await install(['--uninstall', '--root', root]);
  t.equal(r.code, 0, 'exits 0', output(r));
  for (const gone of [app, wrapper, unit]) t.notOk(existsSync(gone), `removed ${gone.slice(root.length)}`);
  t.equal(read(conf), confText, 'kept /etc/edgeway/edgeway.yaml');
  t.equal(read(data), 'data the gateway wrote', 'kept /var/lib/edgeway');
  t.ok(lastRun(root).includes('systemctl disable --now edgeway'), 'stops and disables the service');
  t.notOk(lastRun(root).some((l) => l.startsWith('userdel')), 'keeps the user');

  const again = await install(['--uninstall', '--root', root]);
  t.equal(again.code, 0, 'uninstalling again is fine', output(again));

  const p = await install(['--uninstall', '--purge', '--root', root]);
  t.equal(p.code, 0, 'exits 0', output(p));
  t.notOk(existsSync(dirname(conf)), 'removed /etc/edgeway');
  t.notOk(existsSync(stateDir), 'removed /var/lib/edgeway');
  t.ok(lastRun(root).includes('userdel edgeway'), 'removes the user');
  if (!hadUser) t.notOk(userExists('edgeway'), 'no user was touched on this machine');
});

// ---------------------------------------------------------------------------------------------
// npm's failure paths and the checkout build, against a fake npm.

/**
 * A fake `npm` that appends "<cwd> <args>" to `log`. `npm ci` fails (exit 1, printing
 * `failure`) while the count of its calls is below `failCi`, else creates node_modules/;
 * `npm run build` writes a minimal dist/ (or fails when FAKE_BUILD_FAIL is set).
 */
function fakeNpm(dir: string, failCi: number, failure: string): { bin: string; calls: () => string[] } {
  const bin = join(dir, 'bin');
  const log = join(dir, 'npm-calls.log');
  mkdirSync(bin, { recursive: true });
  writeFileSync(
    join(bin, 'npm'),
    `#!/bin/sh
echo "$PWD $*" >> '${log}'
case "$1" in
  --version) echo 10.9.9 ;;
  ci)
    n=$(grep -c ' ci ' '${log}')
    if [ "$n" -le ${failCi} ]; then echo '${failure}' >&2; exit 1; fi
    mkdir -p node_modules && echo '{}' > node_modules/.package-lock.json ;;
  run)
    if [ -n "\${FAKE_BUILD_FAIL:-}" ]; then echo 'error TS2322' >&2; exit 2; fi
    mkdir -p dist/gateway dist/adapters dist/config
    echo 'console.log("fake build")' > dist/gateway/main.js
    echo '' > dist/adapters/index.js
    echo '' > dist/config/load.js ;;
esac
`,
  );
  chmodSync(join(bin, 'npm'), 0o755);
  return { bin, calls: () => (existsSync(log) ? read(log).split('\n').filter((l) => l !== '') : []) };
}

/** install.sh --root TMP/NAME/root --dist OUT with fakeNpm(TMP/NAME, failCi, failure) first in PATH. */
async function installWithFakeNpm(name: string, failCi: number, failure: string) {
  const dir = join(tmp, name);
  const npm = fakeNpm(dir, failCi, failure);
  const stage = join(dir, 'root');
  const r = await install(['--root', stage, '--dist', OUT], { PATH: `${npm.bin}${delimiter}${PATH}` });
  return { r, stage, ciCalls: () => npm.calls().filter((c) => / ci /.test(c)) };
}

t.test('a failed native build installs build-essential and python3, then retries npm ci once', async (t) => {
  const { r, stage, ciCalls } = await installWithFakeNpm('gyp', 1, 'npm error gyp ERR! stack Error: not found: make');
  t.equal(r.code, 0, 'exits 0', output(r));
  const ci = ciCalls();
  t.equal(ci.length, 2, `npm ci ran twice: ${JSON.stringify(ci)}`);
  for (const c of ci) t.match(c, /\/opt\/\.edgeway\.new ci --no-audit --no-fund --omit=dev --prefer-offline$/, 'production dependencies, offline first, in the new tree');
  const lines = recorded(stage);
  t.ok(lines.includes('env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential python3'), `build tools recorded: ${JSON.stringify(lines)}`);
  t.ok(existsSync(join(stage, 'opt', 'edgeway', 'node_modules')), 'installed after the retry');
});

t.test('any other npm failure is not retried, installs no build tools and stages nothing', async (t) => {
  const { r, stage, ciCalls } = await installWithFakeNpm('npm-fails', 99, 'npm error code ETIMEDOUT');
  t.equal(r.code, 1, 'exits 1', output(r));
  t.match(r.stderr, /npm ci failed/);
  t.equal(ciCalls().length, 1, 'npm ci ran once');
  t.notOk(recorded(stage).some((l) => l.includes('apt-get')), 'no apt-get');
  for (const p of ['opt/edgeway', 'opt/.edgeway.new', 'etc/systemd/system/edgeway.service']) t.notOk(existsSync(join(stage, p)), `no ${p}`);
});

t.test('from a checkout: npm ci + npm run build, skipped while dist/ is up to date', async (t) => {
  const dir = join(tmp, 'checkout-build');
  const checkout = join(dir, 'checkout');
  for (const f of ['package.json', 'package-lock.json', 'tsconfig.json', 'config/edgeway.example.yaml', 'scripts/install.sh', 'scripts/edgeway.service', 'scripts/notify-exec.pl']) {
    mkdirSync(dirname(join(checkout, f)), { recursive: true });
    copyFileSync(join(REPO, f), join(checkout, f));
  }
  for (const f of ['gateway/main.ts', 'adapters/index.ts']) {
    mkdirSync(dirname(join(checkout, f)), { recursive: true });
    writeFileSync(join(checkout, f), 'export {};\n');
  }
  const npm = fakeNpm(dir, 0, '');
  const env = { PATH: `${npm.bin}${delimiter}${PATH}` };
  const stage = join(dir, 'root');
  const script = join(checkout, 'scripts', 'install.sh');
  const runInstall = (extra: NodeJS.ProcessEnv = {}) => run('bash', [script, '--root', stage], { env: { ...env, ...extra } });
  const callsSince = (n: number): string[] => npm.calls().slice(n).map((c) => c.replace(checkout, '<checkout>').replace(stage, '<root>'));

  const first = await runInstall();
  t.equal(first.code, 0, 'exits 0', output(first));
  t.same(
    callsSince(0).filter((c) => !c.endsWith('--version')),
    ['<checkout> ci --no-audit --no-fund', '<checkout> run build', '<root>/opt/.edgeway.new ci --no-audit --no-fund --omit=dev --prefer-offline'],
    'first run: npm ci (with dev dependencies) and npm run build in the checkout, then npm ci --omit=dev in the target',
  );
  t.equal(read(join(stage, 'opt', 'edgeway', 'dist', 'gateway', 'main.js')), 'console.log("fake build")\n', 'the build output is installed');

  let n = npm.calls().length;
  const second = await runInstall();
  t.equal(second.code, 0, 'exits 0', output(second));
  t.same(callsSince(n).filter((c) => !c.endsWith('--version')), [], 'second run: dist/ is up to date, nothing built or installed');
  t.match(second.stdout, /dist\/ is up to date/);

  // A source edited after the build: build again (node_modules/ is current, so no npm ci).
  const later = new Date(Date.now() + 5000);
  utimesSync(join(checkout, 'gateway', 'main.ts'), later, later);
  n = npm.calls().length;
  const failed = await runInstall({ FAKE_BUILD_FAIL: '1' });
  t.not(failed.code, 0, 'a failed build fails the install', output(failed));
  t.same(callsSince(n).filter((c) => !c.endsWith('--version')), ['<checkout> run build'], 'only npm run build');
  n = npm.calls().length;
  const third = await runInstall();
  t.equal(third.code, 0, 'exits 0', output(third));
  t.same(callsSince(n).filter((c) => !c.endsWith('--version')), ['<checkout> run build'], 'the failed build left dist/ out of date: built again');
});
