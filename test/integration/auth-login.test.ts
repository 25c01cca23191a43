/**
 * Logins against the password file (issue 8 part 2), on a whole gateway over real TCP: mqtt.js,
 * raw MQTT 3.1.1 / 5 clients and Mosquitto's own `mosquitto_pub`; files made by a real
 * `mosquitto_passwd` accepted as they are; anonymous access; SIGHUP reloads of the users (and
 * the clients a reload no longer accepts disconnected).
 */
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connectAsync } from 'mqtt';
import { withUser, hashPassword } from '../../adapters/auth';
import { authGateway, FAST_SCRYPT, passwordLines } from '../helpers/auth';
import { client, open } from '../helpers/mqtt5';
import { within } from '../helpers/mqtt-client';
import { RawClient } from '../helpers/raw-client';

const run = promisify(execFile);

/** mosquitto_pub with `args`: its exit code and output (bounded by a kill after 10 s). */
async function mosquittoPub(port: number, args: string[]): Promise<{ code: number; stderr: string }> {
  try {
    const { stderr } = await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '-t', 'login/test', '-m', 'x', ...args], { timeout: 10_000 });
    return { code: 0, stderr };
  } catch (err) {
    const e = err as { code?: number; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stderr: e.stderr ?? '' };
  }
}

/** Whether mqtt.js gets in as `username`/`password` (MQTT 3.1.1 unless `protocolVersion` says otherwise); the refusal's code otherwise. */
async function mqttLogin(t: Test, port: number, username: string | undefined, password: string | undefined, protocolVersion: 4 | 5 = 4): Promise<true | number> {
  try {
    const c = await within(connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 3000, protocolVersion, ...(username === undefined ? {} : { username }), ...(password === undefined ? {} : { password }) }, false), 'mqtt.js connect', 5000);
    t.teardown(() => c.endAsync(true).catch(() => undefined));
    await c.endAsync();
    return true;
  } catch (err) {
    return (err as { code?: number }).code ?? -1;
  }
}

t.test('right and wrong passwords, unknown users and anonymous clients with a password file', async (t) => {
  const g = await authGateway(t, { passwd: `# test users\n${await passwordLines({ alice: 'wonderland', bob: 'builder' })}` });
  t.equal(await mqttLogin(t, g.tb.port, 'alice', 'wonderland'), true, 'right password');
  t.equal(await mqttLogin(t, g.tb.port, 'alice', 'Wonderland'), 5, 'wrong password: CONNACK 5 (not authorized)');
  t.equal(await mqttLogin(t, g.tb.port, 'alice', undefined), 5, 'no password');
  t.equal(await mqttLogin(t, g.tb.port, 'mallory', 'wonderland'), 5, 'unknown user');
  t.equal(await mqttLogin(t, g.tb.port, 'bob', 'builder', 5), true, 'MQTT 5, right password');
  t.equal(await mqttLogin(t, g.tb.port, 'bob', 'wrong', 5), 0x87, 'MQTT 5, wrong password: 0x87');

  const ok = await mosquittoPub(g.tb.port, ['-u', 'alice', '-P', 'wonderland']);
  t.equal(ok.code, 0, `mosquitto_pub with the right password: ${ok.stderr}`);
  const bad = await mosquittoPub(g.tb.port, ['-u', 'alice', '-P', 'nope']);
  t.not(bad.code, 0, 'mosquitto_pub with a wrong password fails');
  t.match(bad.stderr, /not authori[sz]ed/i);

  // Anonymous: refused by default when there is a password file.
  const v4 = await RawClient.open(g.tb.port, { clientId: 'anon4' });
  t.teardown(() => v4.client.destroy());
  t.equal(v4.connack.returnCode, 5, '3.1.1 anonymous: CONNACK 5');
  const v5 = await open(t, g.tb, { clientId: 'anon5' });
  t.equal(v5.connack.reasonCode, 0x87, 'MQTT 5 anonymous: 0x87');
  t.equal((await mosquittoPub(g.tb.port, [])).code === 0, false, 'mosquitto_pub without a user name is refused');

  const stats = g.gateway.broker.metrics;
  t.ok(stats.connectionsAccepted > 0);
  t.notOk(g.log.some((l) => JSON.stringify(l).includes('wonderland')), 'no password in any log line');
});

t.test('allowAnonymous: true lets anonymous clients in beside the users', async (t) => {
  const opened = await authGateway(t, { passwd: await passwordLines({ alice: 'wonderland' }) }, { allowAnonymous: true });
  t.equal(await mqttLogin(t, opened.tb.port, undefined, undefined), true, 'anonymous allowed');
  t.equal(await mqttLogin(t, opened.tb.port, 'alice', 'wrong'), 5, 'a wrong password is still refused');
  t.equal(await mqttLogin(t, opened.tb.port, 'alice', 'wonderland'), true);
});

t.test('files written by mosquitto_passwd ($7$ and $6$ lines) are accepted as they are', async (t) => {
  const g = await authGateway(t, { passwd: '' });
  // mosquitto_passwd's default ($7$, PBKDF2-SHA512) and -H sha512 ($6$, which this version still writes).
  await run('mosquitto_passwd', ['-c', '-b', g.passwordFile, 'carol', 'c4rol-pw'], { timeout: 10_000 });
  await run('mosquitto_passwd', ['-H', 'sha512', '-b', g.passwordFile, 'dave', 'd4ve-pw'], { timeout: 10_000 });
  const text = readFileSync(g.passwordFile, 'utf8');
  t.match(text, /^carol:\$7\$/m);
  t.match(text, /^dave:\$6\$/m);
  const result = await g.gateway.reload(g.config(), () => undefined);
  t.same(result.auth?.problems, [], 'the Mosquitto file is read without problems');
  t.equal(await mqttLogin(t, g.tb.port, 'carol', 'c4rol-pw'), true, '$7$ user');
  t.equal(await mqttLogin(t, g.tb.port, 'carol', 'c4rol-PW'), 5);
  t.equal(await mqttLogin(t, g.tb.port, 'dave', 'd4ve-pw', 5), true, '$6$ user');
  t.equal((await mosquittoPub(g.tb.port, ['-u', 'dave', '-P', 'd4ve-pw'])).code, 0, 'mosquitto_pub as the $6$ user');
});

t.test('SIGHUP reload: a user added can log in, one removed cannot; a broken file keeps the old users', async (t) => {
  const g = await authGateway(t, { passwd: await passwordLines({ alice: 'wonderland' }) });
  t.equal(await mqttLogin(t, g.tb.port, 'erin', 'new-pw'), 5, 'not a user yet');

  writeFileSync(g.passwordFile, withUser(readFileSync(g.passwordFile, 'utf8'), 'erin', await hashPassword(Buffer.from('new-pw'), FAST_SCRYPT)));
  const added = await g.gateway.reload(g.config(), () => undefined);
  t.same(added.auth?.problems, []);
  t.match(added.auth?.changed.join(), /users: 2 \(1 added, 0 removed, 0 with a new password\)/);
  t.equal(await mqttLogin(t, g.tb.port, 'erin', 'new-pw'), true, 'the user added is let in without a restart');

  appendFileSync(g.passwordFile, 'frank has no colon\n');
  const broken = await g.gateway.reload(g.config(), () => undefined);
  t.same(broken.auth?.problems, [`${g.passwordFile}:3: expected user:hash`], 'the problem names file and line');
  t.equal(await mqttLogin(t, g.tb.port, 'erin', 'new-pw'), true, 'the users in use stay');

  // Connected clients: erin (to be removed), alice (password changed), bob (unchanged), and an anonymous one.
  writeFileSync(g.passwordFile, `${readFileSync(g.passwordFile, 'utf8').trimEnd().split('\n').slice(0, 2).join('\n')}\n${await passwordLines({ bob: 'builder' })}`);
  t.same((await g.gateway.reload(g.config(), () => undefined)).auth?.problems, []);
  const erin = await client(t, g.tb, 'erin-device', { username: 'erin', password: Buffer.from('new-pw') });
  const alice = await client(t, g.tb, 'alice-device', { protocolVersion: 4, username: 'alice', password: Buffer.from('wonderland') });
  const bob = await client(t, g.tb, 'bob-device', { username: 'bob', password: Buffer.from('builder') });

  // bob's line stays byte for byte (a fresh hash of the same password would have a new salt).
  const bobLine = readFileSync(g.passwordFile, 'utf8').split('\n').find((l) => l.startsWith('bob:')) as string;
  writeFileSync(g.passwordFile, `${await passwordLines({ alice: 'changed' })}${bobLine}\n`);
  const removed = await g.gateway.reload(g.config(), () => undefined);
  t.same(removed.auth?.problems, []);
  t.match(removed.auth?.changed.join(), /2 connected clients disconnected/);
  t.equal((await erin.next('disconnect')).reasonCode, 0x98, 'the removed user is disconnected: MQTT 5 DISCONNECT 0x98 (administrative action)');
  await erin.waitClosed();
  await alice.waitClosed();
  t.pass('the user whose password changed is disconnected too (3.1.1: the connection closes)');
  bob.send({ cmd: 'pingreq' });
  await bob.next('pingresp');
  t.notOk(bob.closed, 'an unchanged user stays connected');
  t.equal(await mqttLogin(t, g.tb.port, 'erin', 'new-pw'), 5, 'the user removed is refused');
  t.equal(await mqttLogin(t, g.tb.port, 'alice', 'wonderland'), 5, 'the old password is refused');
  t.equal(await mqttLogin(t, g.tb.port, 'alice', 'changed'), true);
  writeFileSync(g.passwordFile, await passwordLines({ alice: 'wonderland' }));
  t.same((await g.gateway.reload(g.config(), () => undefined)).auth?.problems, []);

  // A missing file on reload is a problem too, not an empty user list.
  const missing = await g.gateway.reload(g.config({ passwordFile: join(g.dir, 'nope') }), () => undefined);
  t.match(missing.auth?.problems.join(), /cannot read the password file/);
  t.equal(await mqttLogin(t, g.tb.port, 'alice', 'wonderland'), true, 'still the old file');
});
