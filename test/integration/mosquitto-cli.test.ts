import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { startBroker, waitFor, type TestBroker } from '../helpers/broker';

/**
 * Interoperability with Mosquitto's own command-line clients (`mosquitto_pub`, `mosquitto_sub`,
 * from the mosquitto-clients package) over real TCP.
 */

async function setup(t: Test, config: Record<string, unknown> = {}): Promise<TestBroker> {
  const tb = await startBroker(config);
  t.teardown(() => tb.stop());
  return tb;
}

interface Run {
  readonly child: ChildProcess;
  /** Resolves with the exit code (null if killed by a signal) and the output. */
  readonly done: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

/**
 * Starts a Mosquitto client. Every child is bounded twice: by its own `-W` (mosquitto_sub) and by
 * a kill timer here; teardown kills it by PID if it is still running.
 */
function run(t: Test, command: 'mosquitto_pub' | 'mosquitto_sub', args: string[], killAfterMs = 15_000): Run {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const running = (): boolean => child.exitCode === null && child.signalCode === null;
  const kill = (): void => {
    if (running() && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
  };
  const timer = setTimeout(kill, killAfterMs);
  t.teardown(() => {
    clearTimeout(timer);
    kill();
  });
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
  return { child, done };
}

const lines = (s: string): string[] => s.split('\n').filter((l) => l.length > 0);

/** Waits until the broker has a session for `clientId` with `n` subscriptions (mosquitto_sub is ready). */
async function subscribed(tb: TestBroker, clientId: string, n = 1): Promise<void> {
  await waitFor(() => (tb.broker.sessions.get(clientId)?.subscriptions.size ?? 0) >= n, 5000, `${clientId} to subscribe`);
}

t.test("mosquitto_sub -t '#' -v receives what mosquitto_pub sends at QoS 0, 1 and 2", async (t) => {
  const tb = await setup(t);
  const host = ['-h', '127.0.0.1', '-p', String(tb.port)];
  const sub = run(t, 'mosquitto_sub', [...host, '-i', 'cli-sub', '-q', '2', '-t', '#', '-v', '-C', '3', '-W', '10']);
  await subscribed(tb, 'cli-sub');

  for (const [qos, topic, message] of [
    ['0', 'cli/q0', 'zero'],
    ['1', 'cli/q1', 'one'],
    ['2', 'cli/deep/q2', 'two words'],
  ] as const) {
    const pub = await run(t, 'mosquitto_pub', [...host, '-q', qos, '-t', topic, '-m', message]).done;
    t.equal(pub.code, 0, `mosquitto_pub -q ${qos} exits 0 ${pub.stderr}`);
  }
  const result = await sub.done;
  t.equal(result.code, 0, `mosquitto_sub exits 0 after -C 3 ${result.stderr}`);
  t.same(lines(result.stdout), ['cli/q0 zero', 'cli/q1 one', 'cli/deep/q2 two words'], 'every message, in order, verbatim');
});

t.test('mosquitto_sub sees the delivered QoS as min(subscription, publication)', async (t) => {
  const tb = await setup(t);
  const host = ['-h', '127.0.0.1', '-p', String(tb.port)];
  // -F: %q delivered QoS, %r retain flag, %t topic, %p payload.
  const sub = run(t, 'mosquitto_sub', [...host, '-i', 'cli-qos', '-q', '1', '-t', 'qos/#', '-F', '%q %r %t %p', '-C', '3', '-W', '10']);
  await subscribed(tb, 'cli-qos');
  for (const qos of ['0', '1', '2']) {
    const pub = await run(t, 'mosquitto_pub', [...host, '-q', qos, '-t', `qos/${qos}`, '-m', `p${qos}`]).done;
    t.equal(pub.code, 0);
  }
  const result = await sub.done;
  t.equal(result.code, 0, result.stderr);
  t.same(lines(result.stdout), ['0 0 qos/0 p0', '1 0 qos/1 p1', '1 0 qos/2 p2']);
});

t.test('mosquitto_pub -r stores a retained message; mosquitto_sub gets it flagged retained; -r -n deletes it', async (t) => {
  const tb = await setup(t);
  const host = ['-h', '127.0.0.1', '-p', String(tb.port)];
  const pub = await run(t, 'mosquitto_pub', [...host, '-q', '1', '-r', '-t', 'cli/retained', '-m', 'kept']).done;
  t.equal(pub.code, 0, pub.stderr);
  t.equal(tb.broker.retained.get('cli/retained')?.payload.toString(), 'kept', 'stored by the broker');

  // A subscriber that connects afterwards gets it, with the retain flag, at min(1, 2) = 1.
  const sub = await run(t, 'mosquitto_sub', [...host, '-q', '2', '-t', 'cli/#', '-F', '%r %q %t %p', '-C', '1', '-W', '10']).done;
  t.equal(sub.code, 0, sub.stderr);
  t.same(lines(sub.stdout), ['1 1 cli/retained kept']);

  const subV = await run(t, 'mosquitto_sub', [...host, '-t', 'cli/retained', '-v', '-C', '1', '-W', '10']).done;
  t.same(lines(subV.stdout), ['cli/retained kept'], '-v output');

  // -n sends a zero-length payload: with -r it deletes the retained message.
  const del = await run(t, 'mosquitto_pub', [...host, '-q', '1', '-r', '-n', '-t', 'cli/retained']).done;
  t.equal(del.code, 0, del.stderr);
  t.equal(tb.broker.retained.get('cli/retained'), undefined, 'deleted');
  t.equal(tb.broker.retained.size, 0);
});

t.test('mosquitto_sub -c (persistent session) receives QoS 1 messages queued while it was away', async (t) => {
  const tb = await setup(t);
  const host = ['-h', '127.0.0.1', '-p', String(tb.port)];
  const args = [...host, '-c', '-i', 'cli-persist', '-q', '1', '-t', 'persist/#', '-v', '-W', '10'];
  // First run: subscribe, then exit on the first message (which also ends the connection).
  const first = run(t, 'mosquitto_sub', [...args, '-C', '1']);
  await subscribed(tb, 'cli-persist');
  t.equal((await run(t, 'mosquitto_pub', [...host, '-q', '1', '-t', 'persist/x', '-m', 'online']).done).code, 0);
  t.same(lines((await first.done).stdout), ['persist/x online']);
  await waitFor(() => !tb.broker.clients.has('cli-persist'), 3000, 'mosquitto_sub to disconnect');

  for (const m of ['a1', 'a2']) {
    t.equal((await run(t, 'mosquitto_pub', [...host, '-q', '1', '-t', 'persist/x', '-m', m]).done).code, 0);
  }
  const second = await run(t, 'mosquitto_sub', [...args, '-C', '2']).done;
  t.equal(second.code, 0, second.stderr);
  t.same(lines(second.stdout), ['persist/x a1', 'persist/x a2'], 'queued messages delivered in order on return');
});

t.test('mosquitto_sub and mosquitto_pub with -V mqttv5 exchange messages with 3.1.1 peers on the same topics', async (t) => {
  const tb = await setup(t);
  const host = ['-h', '127.0.0.1', '-p', String(tb.port)];
  // -x: Session Expiry Interval of the MQTT 5 subscriber's session.
  const sub5 = run(t, 'mosquitto_sub', [...host, '-V', 'mqttv5', '-c', '-x', '300', '-i', 'cli-v5', '-q', '2', '-t', 'cli5/#', '-F', '%q %t %p', '-C', '3', '-W', '10']);
  const sub4 = run(t, 'mosquitto_sub', [...host, '-V', 'mqttv311', '-i', 'cli-v311', '-q', '2', '-t', 'cli5/#', '-F', '%q %t %p', '-C', '3', '-W', '10']);
  await subscribed(tb, 'cli-v5');
  await subscribed(tb, 'cli-v311');
  t.equal(tb.broker.clients.get('cli-v5')?.protocolVersion, 5, 'mosquitto_sub -V mqttv5 speaks MQTT 5');

  for (const [version, qos, topic, message] of [
    ['mqttv5', '1', 'cli5/a', 'from v5'],
    ['mqttv311', '2', 'cli5/b', 'from 3.1.1'],
    ['mqttv5', '2', 'cli5/c', 'v5 at QoS 2'],
  ] as const) {
    const pub = await run(t, 'mosquitto_pub', [...host, '-V', version, '-q', qos, '-t', topic, '-m', message]).done;
    t.equal(pub.code, 0, `mosquitto_pub -V ${version} -q ${qos} exits 0 ${pub.stderr}`);
  }
  const expected = ['1 cli5/a from v5', '2 cli5/b from 3.1.1', '2 cli5/c v5 at QoS 2'];
  const v5 = await sub5.done;
  t.equal(v5.code, 0, `mosquitto_sub -V mqttv5 exits 0 after -C 3 ${v5.stderr}`);
  t.same(lines(v5.stdout), expected, 'the MQTT 5 subscriber gets every message, in order, at its QoS');
  const v4 = await sub4.done;
  t.equal(v4.code, 0, v4.stderr);
  t.same(lines(v4.stdout), expected, 'and so does the 3.1.1 subscriber');
  await waitFor(() => !tb.broker.clients.has('cli-v5'), 3000, 'mosquitto_sub -V mqttv5 to disconnect');
  t.equal(tb.broker.sessions.get('cli-v5')?.expiryInterval, 300, 'its session outlives it with the Session Expiry Interval of -x');
});

t.test('mosquitto_pub -V mqttv5 -D properties reach mosquitto_sub -V mqttv5 unchanged, with its Subscription Identifier', async (t) => {
  const tb = await setup(t);
  const host = ['-h', '127.0.0.1', '-p', String(tb.port), '-V', 'mqttv5'];
  // %C content type, %E message expiry interval, %F payload format indicator, %P user properties,
  // %R response topic, %S subscription identifier.
  const sub = run(t, 'mosquitto_sub', [...host, '-i', 'cli-props', '-t', 'props/#', '-D', 'subscribe', 'subscription-identifier', '3', '-F', '%t %p|%C|%E|%F|%P|%R|%S', '-C', '1', '-W', '10']);
  await subscribed(tb, 'cli-props');
  const pub = await run(t, 'mosquitto_pub', [
    ...host,
    '-t', 'props/a',
    '-m', 'hello',
    '-D', 'publish', 'content-type', 'text/plain',
    '-D', 'publish', 'user-property', 'unit', 'C',
    '-D', 'publish', 'response-topic', 'replies/a',
    '-D', 'publish', 'message-expiry-interval', '60',
    '-D', 'publish', 'payload-format-indicator', '1',
  ]).done;
  t.equal(pub.code, 0, pub.stderr);
  const result = await sub.done;
  t.equal(result.code, 0, result.stderr);
  t.same(lines(result.stdout), ['props/a hello|text/plain|60|1|unit:C|replies/a|3'], 'every property as published, and the subscription identifier');
});

t.test("mosquitto_sub members of '$share/…' share the messages, 3.1.1 and MQTT 5 alike", async (t) => {
  const tb = await setup(t);
  const host = ['-h', '127.0.0.1', '-p', String(tb.port)];
  const members = [
    run(t, 'mosquitto_sub', [...host, '-V', 'mqttv5', '-i', 'cli-share-5', '-q', '1', '-t', '$share/cli/jobs/#', '-v', '-C', '2', '-W', '10']),
    run(t, 'mosquitto_sub', [...host, '-V', 'mqttv311', '-i', 'cli-share-3', '-q', '1', '-t', '$share/cli/jobs/#', '-v', '-C', '2', '-W', '10']),
  ];
  await subscribed(tb, 'cli-share-5');
  await subscribed(tb, 'cli-share-3');
  for (const n of [1, 2, 3, 4]) {
    t.equal((await run(t, 'mosquitto_pub', [...host, '-q', '1', '-t', `jobs/${n}`, '-m', `job ${n}`]).done).code, 0);
  }
  const outputs = await Promise.all(members.map((m) => m.done));
  for (const out of outputs) t.equal(out.code, 0, `each member exits after its two messages ${out.stderr}`);
  t.same(outputs.flatMap((o) => lines(o.stdout)).sort(), ['jobs/1 job 1', 'jobs/2 job 2', 'jobs/3 job 3', 'jobs/4 job 4'], 'every message went to exactly one member');
});
