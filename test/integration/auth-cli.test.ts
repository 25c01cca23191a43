/**
 * The command line of issue 8 parts 2 and 3: `edgeway passwd` (stdin not a terminal), the secure
 * default at `check-config` and at start (exit 78, no LAN address bound), a broken auth file at
 * `check-config` and at start (exit 78 naming file and line), and a real SIGHUP picking up a user added by
 * `edgeway passwd` in a running gateway.
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connectAsync } from 'mqtt';
import { parsePasswordFile, verifyPassword, type PasswordHash } from '../../adapters/auth';
import { GATEWAY_MAIN, startGatewayProcess } from '../helpers/gateway';
import { within } from '../helpers/mqtt-client';
import { freePort, waitForOutput } from '../helpers/processes';
import { tempDir } from '../helpers/sqlite';

/** Runs the CLI with `args` and `input` on its stdin (a pipe, not a terminal); killed after 20 s. */
function cli(t: Test, args: string[], input = ''): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [GATEWAY_MAIN, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
  };
  const timer = setTimeout(kill, 20_000);
  t.teardown(kill);
  child.stdin.end(input);
  return new Promise((resolve) => child.on('close', (code) => (clearTimeout(timer), resolve({ code, stdout, stderr }))));
}

async function verifies(file: string, user: string, password: string): Promise<boolean> {
  const hash = parsePasswordFile(readFileSync(file, 'utf8'), file).users.get(user) as PasswordHash | undefined;
  return hash !== undefined && (await verifyPassword(Buffer.from(password), hash));
}

const MOSQUITTO_LINE = 'carol:$7$101$/VyyZCQnjG6SWsRr$DmYXrtXvfqCY3fG9WhR2oAF7it1tljejP7sQy2cLmC2cxzQFoR22SGVxtA00SFVc2QL4CfcH+VzKGDyw/KCvew==';

t.test('edgeway passwd: creates the file 0600, adds, changes and deletes users, keeps every other line', async (t) => {
  const dir = tempDir(t, 'edgeway-passwd-');
  const file = join(dir, 'passwd');
  const added = await cli(t, ['passwd', file, 'alice'], 'first-pw\n');
  t.equal(added.code, 0, added.stderr);
  t.match(added.stderr, /user "alice" added to/);
  t.equal(statSync(file).mode & 0o777, 0o600, 'created with mode 0600');
  t.match(readFileSync(file, 'utf8'), /^alice:\$edgeway-scrypt\$N=16384,r=8,p=2\$[^$]+\$[^$]+\n$/);
  t.ok(await verifies(file, 'alice', 'first-pw'), 'the line verifies the password read from stdin');
  t.notOk((added.stdout + added.stderr).includes('first-pw'), 'the password is never printed');

  // Other lines, including a Mosquitto one and comments, stay as they are.
  writeFileSync(file, `# site users\n${readFileSync(file, 'utf8')}${MOSQUITTO_LINE}\n`);
  const changed = await cli(t, ['passwd', file, 'alice'], 'second-pw\r\nignored second line\n');
  t.equal(changed.code, 0, changed.stderr);
  t.match(changed.stderr, /password of "alice" changed/);
  const text = readFileSync(file, 'utf8');
  t.match(text, /^# site users\nalice:\$edgeway-scrypt\$/);
  t.ok(text.endsWith(`\n${MOSQUITTO_LINE}\n`), 'the Mosquitto user is untouched');
  t.ok(await verifies(file, 'alice', 'second-pw'), 'only the first line of stdin, without its CR LF');
  t.notOk(await verifies(file, 'alice', 'first-pw'));
  t.equal(statSync(file).mode & 0o777, 0o600, 'the mode is kept');

  const deleted = await cli(t, ['passwd', '--delete', file, 'alice']);
  t.equal(deleted.code, 0, deleted.stderr);
  t.equal(readFileSync(file, 'utf8'), `# site users\n${MOSQUITTO_LINE}\n`);

  t.equal((await cli(t, ['passwd', '--delete', file, 'alice'])).code, 1, 'deleting a user that is not there: 1');
  t.equal((await cli(t, ['passwd', file, 'bob'], '\n')).code, 1, 'an empty password: 1');
  t.equal((await cli(t, ['passwd', file, 'bo:b'], 'pw\n')).code, 64, "a ':' in the user name: 64");
  const usage = await cli(t, ['passwd', file]);
  t.equal(usage.code, 64, 'no user: 64');
  t.match(usage.stderr, /edgeway passwd \[--delete\] FILE USER/);
  t.equal((await cli(t, ['--delete'])).code, 64, '--delete without passwd: 64');
  t.equal(readFileSync(file, 'utf8'), `# site users\n${MOSQUITTO_LINE}\n`, 'failed commands changed nothing');
});

t.test('the secure default: a LAN listener without auth is refused by check-config and at start (exit 78)', async (t) => {
  const dir = tempDir(t, 'edgeway-secure-');
  const config = join(dir, 'lan.yaml');
  // Never bound: the configuration is refused before any listener opens.
  writeFileSync(config, 'listeners:\n  - { protocol: mqtt, host: 0.0.0.0, port: 1883 }\n');
  const check = await cli(t, ['check-config', config]);
  t.equal(check.code, 78);
  t.match(check.stderr, /listeners\[0\]\.host: 0\.0\.0\.0 is reachable from the network but no authentication is configured/);
  t.match(check.stderr, /edgeway passwd/);
  const start = await cli(t, ['--config', config]);
  t.equal(start.code, 78, 'the gateway does not start');
  t.notMatch(start.stderr + start.stdout, /listening/);

  writeFileSync(config, `listeners:\n  - { protocol: mqtt, host: 0.0.0.0, port: 1883 }\nauth:\n  passwordFile: ${join(dir, 'passwd')}\n`);
  const missing = await cli(t, ['check-config', config]);
  t.equal(missing.code, 78, 'with a password file that does not exist yet: 78');
  t.match(missing.stderr, /passwd: cannot read the password file: ENOENT/);
  t.equal((await cli(t, ['passwd', join(dir, 'passwd'), 'alice'], 'pw\n')).code, 0);
  const ok = await cli(t, ['check-config', config]);
  t.equal(ok.code, 0, `with users it is accepted: ${ok.stderr}`);
  t.match(ok.stdout, /: ok\n$/);
});

t.test('a broken password or ACL file stops the start with exit 78, naming file and line', async (t) => {
  const dir = tempDir(t, 'edgeway-badauth-');
  const passwd = join(dir, 'passwd');
  const acl = join(dir, 'acl');
  writeFileSync(passwd, `# ok\n${MOSQUITTO_LINE}\nbroken line\n`);
  writeFileSync(acl, 'user carol\ntopic rw a/#\n');
  const config = join(dir, 'edgeway.yaml');
  writeFileSync(config, `listeners:\n  - { protocol: mqtt, host: 127.0.0.1, port: ${await freePort()} }\nstorage: { path: ${join(dir, 'db')} }\nauth:\n  passwordFile: ${passwd}\n  aclFile: ${acl}\n`);
  const check = await cli(t, ['check-config', config]);
  t.equal(check.code, 78, 'check-config reads the auth files too');
  t.match(check.stderr, `${passwd}:3: expected user:hash`);
  const start = await cli(t, ['--config', config]);
  t.equal(start.code, 78);
  t.match(start.stderr, `${passwd}:3: expected user:hash`);
  t.match(start.stderr, `${acl}:2: access must be read, write, readwrite or deny, not "rw"`);
  t.notMatch(start.stderr + start.stdout, /listening/, 'no listener opened');
});

t.test('SIGHUP: a user added with edgeway passwd can log in to the running gateway', async (t) => {
  const dir = tempDir(t, 'edgeway-hup-');
  const passwd = join(dir, 'passwd');
  t.equal((await cli(t, ['passwd', passwd, 'alice'], 'alice-pw\n')).code, 0);
  const port = await freePort();
  const config = join(dir, 'edgeway.yaml');
  writeFileSync(config, `listeners:\n  - { protocol: mqtt, host: 127.0.0.1, port: ${port} }\nstorage: { path: ${join(dir, 'db')} }\nsys: { interval: 0 }\nauth:\n  passwordFile: ${passwd}\n`);
  const gw = await startGatewayProcess(t, config, { cwd: dir });
  const login = (username: string, password: string): Promise<boolean> =>
    within(connectAsync(`mqtt://127.0.0.1:${port}`, { username, password, reconnectPeriod: 0, connectTimeout: 3000 }, false), 'connect', 5000).then(
      (c) => c.endAsync().then(() => true),
      () => false,
    );
  t.equal(await login('alice', 'alice-pw'), true);
  t.equal(await login('bob', 'bob-pw'), false, 'bob is not a user yet');
  t.equal((await cli(t, ['passwd', passwd, 'bob'], 'bob-pw\n')).code, 0);
  process.kill(gw.child.pid as number, 'SIGHUP');
  await waitForOutput(() => gw.stdout + gw.stderr, /SIGHUP: auth files reloaded/, 10_000, 'the reload');
  t.match(gw.stdout + gw.stderr, /users: 2 \(1 added, 0 removed, 0 with a new password\)/);
  t.equal(await login('bob', 'bob-pw'), true, 'bob is let in without a restart');
  t.notMatch(gw.stdout + gw.stderr, /alice-pw|bob-pw/, 'no password in the log');
});
