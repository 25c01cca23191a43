/**
 * The pure parts of the Redis adapter (adapters/redis, issue 5) and the `redis` config section:
 * stream ids and the epoch rule, reconnect back-off, settings resolution, URL redaction, error
 * wording, config validation; and the downlink's entry checks against a fake connection. No
 * processes, no sockets: the real-Redis behaviour is in test/integration/redis-downlink-cluster.
 */
import { EventEmitter } from 'node:events';
import fc from 'fast-check';
import t, { type Test } from 'tap';
import type Redis from 'ioredis';
import { validateConfig } from '../../config/load';
import { GATEWAY_ID_PATTERN, type RedisConfig } from '../../config/redis';
import { backoff, describeRedisError, MemoryStateStore, parseStreamId, redactUrl, resolveRedisSettings, type RedisSettings } from '../../adapters/redis';
import { ClusterLink } from '../../adapters/redis/cluster';
import { Downlink, expiryLeftMs } from '../../adapters/redis/downlink';
import { RedisClock } from '../../adapters/redis/redis-clock';
import { Broker, type LogFields, type Logger, type Message } from '../../gateway/broker';
import { problemsOf } from '../helpers/config';

/** The validated `redis` section of a document holding only `redis`. */
function redisSection(redis: Record<string, unknown>): RedisConfig {
  const section = validateConfig({ redis }, 'test').redis;
  if (section === undefined) throw new Error('no redis section');
  return section;
}

t.test('parseStreamId', async (t) => {
  t.same(parseStreamId('123-4'), { ms: 123n, seq: 4n }, 'a normal id');
  t.same(parseStreamId('0-0'), { ms: 0n, seq: 0n }, 'the smallest id');
  // Both halves are unsigned 64-bit: a Number would lose the low digits.
  t.same(parseStreamId('18446744073709551615-18446744073709551615'), { ms: 18446744073709551615n, seq: 18446744073709551615n }, '64-bit halves kept exactly');
  for (const bad of ['', '1', '1-', '-1', 'a-b', '1-2-3', ' 1-2', '1-2 ', '1.5-2', '-1-2', '*']) t.equal(parseStreamId(bad), null, `${JSON.stringify(bad)} is not an id`);
});

t.test('backoff: doubling from initialDelay, capped at maxDelay, jitter within ±25 %', async (t) => {
  const realRandom = Math.random;
  t.teardown(() => {
    Math.random = realRandom;
  });
  // Deterministic ends of the jitter.
  Math.random = () => 0;
  t.equal(backoff(1, 100, 10_000), 75, 'attempt 1 at the lowest jitter: 0.75 × initialDelay');
  t.equal(backoff(2, 100, 10_000), 150, 'attempt 2: doubled');
  t.equal(backoff(4, 100, 10_000), 600, 'attempt 4: 8 × initialDelay × 0.75');
  t.equal(backoff(50, 100, 10_000), 7500, 'capped: 0.75 × maxDelay');
  Math.random = () => 0.5;
  t.equal(backoff(1, 100, 10_000), 100, 'no jitter in the middle');
  t.equal(backoff(3, 100, 10_000), 400);
  t.equal(backoff(1_000_000, 100, 10_000), 10_000, 'a huge attempt number: the cap, not Infinity or NaN');
  Math.random = () => 0.999_999;
  t.equal(backoff(1, 100, 10_000), 125, 'highest jitter: 1.25 × initialDelay');
  t.equal(backoff(60, 100, 10_000), 12_500, 'capped: 1.25 × maxDelay at most');
  Math.random = () => 0;
  t.equal(backoff(1, 1, 1), 1, 'never 0 ms (a zero delay would spin)');
  Math.random = realRandom;

  // Real randomness: every sample within the bounds, and actually spread (a fleet must not reconnect in step).
  for (const [attempt, base] of [
    [1, 500],
    [2, 1000],
    [3, 2000],
    [7, 30_000],
    [40, 30_000],
  ] as const) {
    const samples = Array.from({ length: 2000 }, () => backoff(attempt, 500, 30_000));
    const min = Math.min(...samples);
    const max = Math.max(...samples);
    t.ok(min >= Math.floor(base * 0.75) && max <= Math.ceil(base * 1.25), `attempt ${attempt}: ${min}…${max} within ${base} ± 25 %`);
    t.ok(min < base * 0.85 && max > base * 1.15, `attempt ${attempt}: jitter actually spreads (${min}…${max})`);
  }
});

t.test('resolveRedisSettings: gateway id and {gatewayId} templates', async (t) => {
  const section = redisSection({
    url: 'redis://127.0.0.1:6379',
    statusTopic: 'site/{gatewayId}/uplink/{gatewayId}',
    cluster: { channel: 'cl:{gatewayId}' },
  });
  const s = resolveRedisSettings(section, 'pi 4:kitchen/01');
  t.equal(s.gatewayId, 'pi-4-kitchen-01', 'default: the host name, unsafe characters replaced');
  t.equal(s.uplink.stream, 'edgeway:uplink:pi-4-kitchen-01', 'uplink stream');
  t.equal(s.downlink.stream, 'edgeway:downlink:pi-4-kitchen-01', 'downlink stream');
  t.equal(s.cluster.channel, 'cl:pi-4-kitchen-01', 'cluster channel');
  t.equal(s.statusTopic, 'site/pi-4-kitchen-01/uplink/pi-4-kitchen-01', 'status topic, every occurrence');
  t.equal(s.url, 'redis://127.0.0.1:6379', 'other values passed through');
  t.same(s.uplink.topics, ['sensors/#']);
  t.equal(section.uplink.stream, 'edgeway:uplink:{gatewayId}', 'the validated config is left as it was');

  const defaults = resolveRedisSettings(redisSection({ url: 'redis://h' }), 'gw1');
  t.equal(defaults.statusTopic, 'edgeway/gw1/uplink', 'default status topic');
  t.equal(defaults.cluster.channel, 'edgeway:cluster', 'the default channel is shared by all gateways (no {gatewayId})');

  const explicit = resolveRedisSettings(redisSection({ url: 'redis://h', gatewayId: 'line-3' }), 'ignored-host');
  t.equal(explicit.gatewayId, 'line-3', 'an explicit gatewayId wins over the host name');
  t.equal(explicit.downlink.stream, 'edgeway:downlink:line-3');

  for (const [host, expected] of [
    ['raspberrypi', 'raspberrypi'],
    ['pi.local', 'pi.local'],
    ['--_leading', 'leading'],
    ['ünïcode-pi', 'n-code-pi'],
    ['###', 'edgeway'],
    ['', 'edgeway'],
    ['x'.repeat(100), 'x'.repeat(64)],
  ] as const) {
    const id = resolveRedisSettings(redisSection({ url: 'redis://h' }), host).gatewayId;
    t.equal(id, expected, `host ${JSON.stringify(host.length > 20 ? `${host.slice(0, 10)}…` : host)} → ${JSON.stringify(expected)}`);
    t.match(id, GATEWAY_ID_PATTERN, 'a valid gateway id (the config rule)');
  }
  const nasty = resolveRedisSettings(redisSection({ url: 'redis://h' }), 'a/b+c#d*e{f}g h').gatewayId;
  t.match(nasty, GATEWAY_ID_PATTERN, `MQTT wildcards and separators replaced: ${nasty}`);
  t.notMatch(nasty, /[/+#*{} ]/, 'nothing that would break a topic level or a key pattern');
});

t.test('redactUrl: the password never reaches a log', async (t) => {
  t.equal(redactUrl('redis://:s3cret@127.0.0.1:6379'), 'redis://:***@127.0.0.1:6379', 'password only');
  t.equal(redactUrl('redis://alice:s3cret@h:6379/2'), 'redis://alice:***@h:6379/2', 'user kept, password hidden, database kept');
  t.equal(redactUrl('rediss://:p%40ss@h:6380'), 'rediss://:***@h:6380', 'a percent-encoded password');
  t.equal(redactUrl('redis://h:6379'), 'redis://h:6379', 'nothing to hide: unchanged');
  t.equal(redactUrl('redis://alice@h'), 'redis://alice@h', 'a user without password: unchanged');
  t.equal(redactUrl('not a url with s3cret'), '(invalid URL)', 'an unparsable URL is not echoed (it may hold a password)');
  for (const url of ['redis://:s3cret@h', 'redis://u:s3cret@h/0', 'rediss://u:s3cret@[::1]:6380']) t.notMatch(redactUrl(url), /s3cret/, `${url}: password removed`);
});

t.test('describeRedisError names the usual causes', async (t) => {
  const cases: [unknown, RegExp][] = [
    [new Error('WRONGPASS invalid username-password pair or user is disabled.'), /^authentication failed: WRONGPASS/],
    [new Error('NOAUTH Authentication required.'), /^authentication failed: NOAUTH/],
    [new Error('ERR invalid password'), /^authentication failed: /],
    [new Error('connect ECONNREFUSED 127.0.0.1:6379'), /^connection refused \(is Redis running there\?\): connect ECONNREFUSED 127\.0\.0\.1:6379$/],
    [new Error('getaddrinfo ENOTFOUND redis.invalid'), /^host not found: getaddrinfo ENOTFOUND redis\.invalid$/],
    [new Error('getaddrinfo EAI_AGAIN redis.example'), /^host not found: /],
    [new Error('Command timed out'), /^no answer in time: Command timed out$/],
    [new Error('connect ETIMEDOUT'), /^no answer in time: /],
    [new Error("NOPERM User edgeway has no permissions to run the 'xadd' command"), /^not permitted for this Redis user: NOPERM/],
  ];
  for (const [err, re] of cases) t.match(describeRedisError(err), re, (err as Error).message);
  t.equal(describeRedisError(new Error('ERR something else')), 'ERR something else', 'anything else: the message as is');
  t.equal(describeRedisError('plain string'), 'plain string', 'a non-Error value');
  t.equal(describeRedisError(new Error('Connection is closed.')), 'Connection is closed.');
});

t.test('config: a minimal redis section gets every default', async (t) => {
  t.equal(validateConfig({}, 'test').redis, undefined, 'no section: no Redis at all');
  t.same(redisSection({ url: 'redis://127.0.0.1:6379' }), {
    url: 'redis://127.0.0.1:6379',
    connectTimeout: 5000,
    commandTimeout: 5000,
    reconnect: { initialDelay: 500, maxDelay: 30_000 },
    statusTopic: 'edgeway/{gatewayId}/uplink',
    uplink: { topics: ['sensors/#'], stream: 'edgeway:uplink:{gatewayId}', maxLen: 10_000_000, batchSize: 500, replayRate: 0 },
    downlink: { enabled: true, stream: 'edgeway:downlink:{gatewayId}' },
    cluster: { enabled: false, channel: 'edgeway:cluster' },
  });
  const section = redisSection({ url: 'redis://h' });
  t.ok(Object.isFrozen(section) && Object.isFrozen(section.uplink) && Object.isFrozen(section.uplink.topics), 'frozen, deeply');
  const tls = redisSection({ url: 'rediss://h:6380', tls: { ca: '/etc/ca.pem' } });
  t.same(tls.tls, { ca: '/etc/ca.pem', rejectUnauthorized: true }, 'tls: rejectUnauthorized defaults to true');
  const sentinel = redisSection({ url: 'redis://ignored', sentinels: [{ host: 's1', port: 26379 }], name: 'mymaster' });
  t.same(sentinel.sentinels, [{ host: 's1', port: 26379 }], 'sentinels with a name are accepted');
});

t.test('config: bad redis sections are refused, each problem with its key path', async (t) => {
  const one = (redis: Record<string, unknown>): readonly string[] => problemsOf({ redis });
  t.same(one({ url: 'http://127.0.0.1:6379' }), ['redis.url: expected redis:// or rediss://, got http://'], 'wrong scheme');
  const noScheme = one({ url: 'localhost:6379' });
  t.ok(noScheme.length > 0 && noScheme.every((p) => p.startsWith('redis.url: ')), `no scheme: ${noScheme.join('; ')}`);
  t.ok(noScheme.some((p) => /expected redis:\/\/ or rediss:\/\//.test(p)), 'no scheme: says which schemes are expected');
  t.match(one({ url: 'not a url' }), [/^redis\.url: expected a URL such as redis:\/\/host:6379/], 'not a URL');
  t.same(one({ url: 'redis://h', sentinels: [{ host: 's1', port: 26379 }] }), ['redis.name: required with sentinels: the name of the master'], 'sentinels without name');
  t.same(one({ url: 'redis://h', name: 'mymaster' }), ['redis.sentinels: required with name'], 'name without sentinels');
  t.same(one({ url: 'redis://h', uplink: { stream: 'same' }, downlink: { stream: 'same' } }), ['redis.downlink.stream: must differ from uplink.stream'], 'same uplink and downlink stream');
  t.same(
    one({ url: 'redis://h', uplink: { stream: 'edgeway:downlink:{gatewayId}' } }),
    ['redis.downlink.stream: must differ from uplink.stream'],
    'same stream through the defaults',
  );
  const filter = one({ url: 'redis://h', uplink: { topics: ['sensors/ok', 'sensors/#/x'] } });
  t.equal(filter.length, 1, filter.join('\n'));
  t.match(filter[0], /^redis\.uplink\.topics\[1\]: invalid topic filter "sensors\/#\/x": /, 'invalid uplink topic filter, with its index');
  t.match(one({ url: 'redis://h', uplink: { topics: ['a+/b'] } }), [/^redis\.uplink\.topics\[0\]: invalid topic filter/], "'+' inside a level");
  t.match(one({ url: 'redis://h', gatewayId: 'a/b' }), [/^redis\.gatewayId: letters, digits/], 'a gateway id with a topic separator');
  t.match(one({ url: 'redis://h', reconnect: { initialDelay: 5000, maxDelay: 1000 } }), [/^redis\.reconnect\.initialDelay: must not exceed reconnect\.maxDelay/]);
  t.same(one({ url: 'redis://h', pasword: 'x' }), ['redis.pasword: unknown key'], 'a misspelt key');
  t.match(problemsOf({ redis: {} }), [/^redis\.url: /], 'url is required');

  // Every problem at once (convention 4), also those found by the cross-field checks.
  const all = problemsOf({
    redis: { url: 'http://x', sentinels: [{ host: 's', port: 1 }], uplink: { stream: 's', topics: ['a/#/b'] }, downlink: { stream: 's' } },
  });
  t.same(all.map((p) => p.slice(0, p.indexOf(':'))).sort(), ['redis.downlink.stream', 'redis.name', 'redis.uplink.topics[0]', 'redis.url'], all.join('\n'));
  // The same with one more mistake of another kind (a wrong type): the cross-field problems must
  // still be in the first report, not only in a second round after the type is fixed — as the
  // serial section does with `{ when: () => true }` (config/schema.ts).
  const withTypeError = problemsOf({
    redis: { url: 'http://x', sentinels: [{ host: 's', port: 1 }], uplink: { stream: 's', topics: ['a/#/b'] }, downlink: { stream: 's' }, cluster: { enabled: 'yes' } },
  });
  t.same(
    withTypeError.map((p) => p.slice(0, p.indexOf(':'))).sort(),
    ['redis.cluster.enabled', 'redis.downlink.stream', 'redis.name', 'redis.uplink.topics[0]', 'redis.url'],
    `cross-field problems reported together with a type error:\n${withTypeError.join('\n')}`,
  );
});

/**
 * A fake connection for the downlink loop: `ready`, answers the first XREAD with `entries`, then
 * blocks (like XREAD BLOCK with nothing new) until disconnected.
 */
function fakeRedis(entries: [string, [string, Buffer | string][]][]) {
  let served = false;
  let unblock: ((err: Error) => void) | undefined;
  const reads: string[] = [];
  const redis = {
    status: 'ready',
    // No stream yet: a downlink without a stored position starts at 0-0.
    async xinfo(): Promise<unknown> {
      throw new Error('ERR no such key');
    },
    async xreadBuffer(...args: unknown[]): Promise<unknown> {
      reads.push(String(args[args.length - 1]));
      if (!served) {
        served = true;
        return [[Buffer.from('s'), entries.map(([id, fields]) => [Buffer.from(id), fields.flatMap(([k, v]) => [Buffer.from(k), Buffer.isBuffer(v) ? v : Buffer.from(v)])])]];
      }
      return new Promise((_, reject) => (unblock = reject));
    },
    disconnect(): void {
      redis.status = 'end';
      unblock?.(new Error('Connection is closed.'));
    },
  };
  return { redis: redis as unknown as Redis, reads };
}

/**
 * The adapter's main connection as RedisClock uses it: ready at once (or when told), answering
 * TIME with Redis' time `offsetMs` away from this machine's clock (a Redis server, or a gateway,
 * whose clock is off). Never `known` when `answers` is false (a Redis that does not answer TIME).
 */
function fakeMain(opts: { offsetMs?: number; ready?: boolean; answers?: boolean } = {}) {
  const times: number[] = [];
  const main = Object.assign(new EventEmitter(), {
    status: opts.ready === false ? 'connecting' : 'ready',
    async time(): Promise<string[]> {
      times.push(Date.now());
      if (opts.answers === false) return new Promise(() => undefined);
      const now = Date.now() + (opts.offsetMs ?? 0);
      return [String(Math.floor(now / 1000)), String((now % 1000) * 1000)];
    },
    becomeReady(): void {
      main.status = 'ready';
      main.emit('ready');
    },
  });
  return { main, times };
}

/** A started RedisClock over `main`, stopped when the test ends. */
function clockOver(t: Test, main: EventEmitter): RedisClock {
  const clock = new RedisClock(main as unknown as Redis, () => undefined);
  clock.start();
  t.teardown(() => clock.stop());
  return clock;
}

t.test('downlink: each kind of invalid entry is skipped with its reason; the valid ones around it are published', async (t) => {
  const settings: RedisSettings = resolveRedisSettings(redisSection({ url: 'redis://h', gatewayId: 'unit' }), 'host');
  const cases: [string, [string, Buffer | string][], RegExp][] = [
    ['no topic', [['payload', 'x']], /no topic field/],
    ['empty topic', [['topic', ''], ['payload', 'x']], /no topic field/],
    ['qos "7"', [['topic', 'cmd/q'], ['payload', 'x'], ['qos', '7']], /qos must be 0, 1 or 2, not "7"/],
    ['retain "2"', [['topic', 'cmd/r'], ['payload', 'x'], ['retain', '2']], /retain must be 0 or 1, not "2"/],
    ["topic with '#'", [['topic', 'cmd/#'], ['payload', 'x']], /topic "cmd\/#": /],
    ["topic with '+'", [['topic', 'cmd/+/x'], ['payload', 'x']], /topic "cmd\/\+\/x": /],
    ['properties not JSON', [['topic', 'cmd/p'], ['payload', 'x'], ['properties', '{contentType: text}']], /^invalid properties \(not JSON\)$/],
    ['properties not UTF-8', [['topic', 'cmd/p'], ['payload', 'x'], ['properties', Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d])]], /^invalid properties \(not UTF-8\)$/],
    ['properties not an object', [['topic', 'cmd/p'], ['payload', 'x'], ['properties', '[1]']], /invalid properties \(properties: not an object\)/],
    ['correlationData not base64', [['topic', 'cmd/p'], ['payload', 'x'], ['properties', '{"correlationData":"***"}']], /invalid properties \(correlationData: /],
    ['contentType a number', [['topic', 'cmd/p'], ['payload', 'x'], ['properties', '{"contentType":5}']], /invalid properties \(contentType: /],
    ['messageExpiryInterval text', [['topic', 'cmd/p'], ['payload', 'x'], ['properties', '{"messageExpiryInterval":"60"}']], /invalid properties \(messageExpiryInterval: /],
    ['responseTopic with a wildcard', [['topic', 'cmd/p'], ['payload', 'x'], ['properties', '{"responseTopic":"resp/#"}']], /invalid properties \(invalid Response Topic/],
    ['UTF-8 announced over bytes that are not', [['topic', 'cmd/p'], ['payload', Buffer.from([0xff])], ['properties', '{"payloadFormatIndicator":true}']], /invalid properties \(the Payload Format Indicator says UTF-8/],
  ];
  for (const [name, fields, reason] of cases) {
    const warnings: [string, LogFields | undefined][] = [];
    const logger: Logger = { debug: () => undefined, info: () => undefined, warn: (m, f) => warnings.push([m, f]), error: () => undefined };
    const broker = new Broker({ limits: validateConfig({}, 'test').limits, sysInterval: 0, version: 'test' }, logger);
    const ctx = broker.context('redis');
    const got: Message[] = [];
    ctx.subscribe('#', (m) => got.push(m));
    const store = new MemoryStateStore();
    const { redis, reads } = fakeRedis([
      ['1-1', [['topic', 'cmd/before'], ['payload', 'b']]],
      ['1-2', fields],
      ['1-3', [['topic', 'cmd/after'], ['payload', Buffer.from([0, 255])], ['qos', '1'], ['retain', '1']]],
    ]);
    const downlink = new Downlink(redis, ctx, store, settings, clockOver(t, fakeMain().main));
    downlink.start();
    const deadline = Date.now() + 2000;
    while (reads.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    await downlink.stop();
    t.same(
      got.map((m) => [m.topic, m.payload, m.qos, m.retain]),
      [
        ['cmd/before', Buffer.from('b'), 0, false],
        ['cmd/after', Buffer.from([0, 255]), 1, true],
      ],
      `${name}: skipped, the entries around it published (qos, retain, binary payload)`,
    );
    const skipped = warnings.filter(([m]) => m === 'redis downlink: entry skipped');
    t.equal(skipped.length, 1, `${name}: one log line`);
    t.match(String(skipped[0]?.[1]?.reason), reason, `${name}: the reason named`);
    t.equal(skipped[0]?.[1]?.id, '1-2', `${name}: the entry id named`);
    t.equal(store.get(`downlink.lastId:${settings.downlink.stream}`), '1-3', `${name}: consumed up to the last entry`);
    t.same(reads, ['0-0', '1-3'], `${name}: the next read starts after the last entry`);
    t.same({ delivered: downlink.stats().delivered, invalid: downlink.stats().invalid }, { delivered: 2, invalid: 1 }, `${name}: counted`);
  }
});

t.test('downlink: starts after the last id kept in the state store', async (t) => {
  const settings = resolveRedisSettings(redisSection({ url: 'redis://h', gatewayId: 'unit' }), 'host');
  const broker = new Broker({ limits: validateConfig({}, 'test').limits, sysInterval: 0, version: 'test' }, { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined });
  const store = new MemoryStateStore();
  store.set(`downlink.lastId:${settings.downlink.stream}`, '1700000000000-5');
  const { redis, reads } = fakeRedis([]);
  const downlink = new Downlink(redis, broker.context('redis'), store, settings, clockOver(t, fakeMain().main));
  downlink.start();
  const deadline = Date.now() + 2000;
  while (reads.length < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  await downlink.stop();
  t.equal(reads[0], '1700000000000-5', 'the first XREAD asks for entries after the stored id');
});

t.test('expiryLeftMs: the interval counts from the time in the id, never more than the interval; an id that is not such a time counts from now', async (t) => {
  const now = 1_700_000_100_000;
  t.equal(expiryLeftMs(`${now - 10_000}-0`, 60, now), 50_000, 'added 10 s ago: 50 of 60 s left');
  t.equal(expiryLeftMs(`${now - 100_000}-7`, 60, now), -40_000, 'added 100 s ago: expired 40 s ago');
  t.equal(expiryLeftMs(`${now - 60_000}-0`, 60, now), 0, 'exactly used up: nothing left (expired)');
  t.equal(expiryLeftMs(`${now}-0`, 60, now), 60_000, 'added now: the whole interval');
  t.equal(expiryLeftMs(`${now - 1}-0`, 0, now), -1, 'an interval of 0 has run out once any time passed');
  t.equal(expiryLeftMs(`${now - 7_200_000}-0`, 60, now + 0.5), -7_140_000.5, "Redis' clock with its fraction of a ms");
  for (const id of ['1-1', '0-5', '999999999999-0']) t.equal(expiryLeftMs(id, 60, now), 60_000, `${id}: explicit, not a time: from now`);
  t.equal(expiryLeftMs('1000000000000-0', 60, now), 60_000 - (now - 1e12), '10^12 ms is a time (September 2001)');
  for (const id of [`${now + 1}-0`, `${now + 3_600_000}-0`, '18446744073709551615-18446744073709551615']) {
    t.equal(expiryLeftMs(id, 60, now), 60_000, `${id}: ahead of Redis' clock, not the time it was added: from now`);
  }
  t.equal(expiryLeftMs('not-an-id', 60, now), 60_000, 'an id that does not parse: from now');
  fc.assert(
    fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.integer({ min: 0, max: 0xffff_ffff }), fc.integer({ min: 1e12, max: 4e12 }), (ms, interval, redisNow) => {
      const left = expiryLeftMs(`${ms}-0`, interval, redisNow);
      const isTime = ms >= 1_000_000_000_000n && ms <= BigInt(redisNow);
      return left <= interval * 1000 && (isTime ? left === interval * 1000 - (redisNow - Number(ms)) : left === interval * 1000);
    }),
  );
});

/** A downlink on a fake connection answering one XREAD with `entries`; stopped once it reads again. */
async function runDownlink(t: Test, entries: [string, [string, Buffer | string][]][], clock: RedisClock, broker: Broker): Promise<Downlink> {
  const settings = resolveRedisSettings(redisSection({ url: 'redis://h', gatewayId: 'unit' }), 'host');
  const { redis, reads } = fakeRedis(entries);
  const downlink = new Downlink(redis, broker.context('redis'), new MemoryStateStore(), settings, clock);
  downlink.start();
  const deadline = Date.now() + 3000;
  while (reads.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  await downlink.stop();
  t.equal(reads.length, 2, 'the downlink read past the entries');
  return downlink;
}

function brokerWithLog(): { broker: Broker; warnings: [string, LogFields | undefined][] } {
  const warnings: [string, LogFields | undefined][] = [];
  const logger: Logger = { debug: () => undefined, info: () => undefined, warn: (m, f) => warnings.push([m, f]), error: () => undefined };
  return { broker: new Broker({ limits: validateConfig({}, 'test').limits, sysInterval: 0, version: 'test' }, logger), warnings };
}

t.test("downlink: properties reach subscribers; a Message Expiry Interval counts from the id's time on Redis' clock, not this machine's", async (t) => {
  // Redis' clock an hour behind this machine's: measured by this machine's, every entry would be an
  // hour old and expired.
  const offsetMs = -3_600_000;
  const clock = clockOver(t, fakeMain({ offsetMs }).main);
  await clock.measured();
  const { broker, warnings } = brokerWithLog();
  const got: Message[] = [];
  broker.context('test').subscribe('cmd/#', (m) => got.push(m));
  broker.context('test').publish({ topic: 'cmd/state', payload: Buffer.from('old'), qos: 1, retain: true });
  got.length = 0;

  const redisNow = Date.now() + offsetMs;
  const correlation = Buffer.from([0, 0xff, 0x80]);
  const full = { payloadFormatIndicator: true, contentType: 'application/json', responseTopic: 'resp/central', correlationData: correlation.toString('base64'), userProperties: { a: ['1', '2'], b: 'x' } };
  const downlink = await runDownlink(
    t,
    [
      [`${redisNow - 90_000}-0`, [['topic', 'cmd/stale'], ['payload', 'late'], ['properties', '{"messageExpiryInterval":60}']]],
      [`${redisNow - 90_000}-1`, [['topic', 'cmd/state'], ['payload', 'stale state'], ['retain', '1'], ['properties', '{"messageExpiryInterval":60}']]],
      [`${redisNow - 10_000}-0`, [['topic', 'cmd/fresh'], ['payload', '{"open":true}'], ['qos', '1'], ['properties', JSON.stringify({ ...full, messageExpiryInterval: 60 })]]],
      ['1-5', [['topic', 'cmd/explicit-id'], ['payload', 'x'], ['properties', '{"messageExpiryInterval":60}']]],
      [`${redisNow + 3_600_000}-0`, [['topic', 'cmd/future-id'], ['payload', 'x'], ['properties', '{"messageExpiryInterval":60}']]],
      [`${redisNow + 3_600_000}-1`, [['topic', 'cmd/no-expiry'], ['payload', '{}'], ['properties', JSON.stringify(full)]]],
      [`${redisNow + 3_600_000}-2`, [['topic', 'cmd/empty'], ['payload', 'x'], ['properties', '{"later":1}']]],
    ],
    clock,
    broker,
  );
  const readAt = Date.now();
  t.same(
    got.map((m) => m.topic),
    ['cmd/fresh', 'cmd/explicit-id', 'cmd/future-id', 'cmd/no-expiry', 'cmd/empty'],
    'the two entries added 90 s before with 60 s to live are not delivered',
  );
  t.equal(broker.retained.get('cmd/state'), undefined, 'the expired retained one still replaced the retained message of its topic');
  t.match(downlink.stats(), { delivered: 5, expired: 2, invalid: 0 }, 'counted');
  const expiredLog = warnings.filter(([m]) => m === 'redis downlink: entry expired before it was read; not delivered');
  t.equal(expiredLog.length, 1, 'logged once (rate-limited)');
  t.match(expiredLog[0]?.[1], { id: `${redisNow - 90_000}-0`, topic: 'cmd/stale', messageExpiryInterval: 60 }, 'with the entry');

  const byTopic = new Map(got.map((m) => [m.topic, m]));
  const fresh = byTopic.get('cmd/fresh');
  t.same(fresh?.properties, { ...full, correlationData: correlation, messageExpiryInterval: 60 }, 'the properties as published (correlation data as bytes)');
  // Added 10 s before on Redis' clock: it expires 60 s after that, whatever this machine's clock says.
  const addedHere = redisNow - 10_000 - offsetMs;
  t.ok(Math.abs((fresh?.expiresAt ?? 0) - (addedHere + 60_000)) < 1000, `expires 60 s after it was added (${String((fresh?.expiresAt ?? 0) - addedHere)} ms after)`);
  for (const topic of ['cmd/explicit-id', 'cmd/future-id']) {
    const left = (byTopic.get(topic)?.expiresAt ?? 0) - readAt;
    t.ok(left > 55_000 && left <= 60_000, `${topic}: the interval counts from when it was read (${left} ms left)`);
  }
  t.equal(byTopic.get('cmd/no-expiry')?.expiresAt, undefined, 'no interval: no expiry');
  t.same(byTopic.get('cmd/no-expiry')?.properties, { ...full, correlationData: correlation }, 'its properties');
  t.equal(byTopic.get('cmd/empty')?.properties, undefined, 'only names it does not know: no properties');
});

t.test("downlink: the first read waits for Redis' clock; without an answer, for commandTimeout at most, with a warning", async (t) => {
  const { broker, warnings } = brokerWithLog();
  const settings = resolveRedisSettings(redisSection({ url: 'redis://h', gatewayId: 'unit', commandTimeout: 1000 }), 'host');
  const late = fakeMain({ ready: false });
  const { redis, reads } = fakeRedis([]);
  const downlink = new Downlink(redis, broker.context('redis'), new MemoryStateStore(), settings, clockOver(t, late.main));
  downlink.start();
  await new Promise((r) => setTimeout(r, 200));
  t.same(reads, [], 'no XREAD while the main connection has not read the clock');
  late.main.becomeReady();
  const deadline = Date.now() + 2000;
  while (reads.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  t.equal(late.times.length, 1, 'TIME sent once the main connection is ready');
  t.ok(reads.length > 0, 'then the downlink reads');
  await downlink.stop();

  const silent = fakeMain({ answers: false });
  const second = fakeRedis([]);
  const started = Date.now();
  const waiting = new Downlink(second.redis, broker.context('redis'), new MemoryStateStore(), settings, clockOver(t, silent.main));
  waiting.start();
  const deadline2 = Date.now() + 3000;
  while (second.reads.length === 0 && Date.now() < deadline2) await new Promise((r) => setTimeout(r, 5));
  await waiting.stop();
  t.ok(second.reads.length > 0, 'a Redis that does not answer TIME does not keep the downlink from reading');
  t.ok(Date.now() - started >= 950, 'after commandTimeout (1 s)');
  t.ok(
    warnings.some(([m]) => m.startsWith("redis downlink: Redis' clock not read yet")),
    'warned that the expiry is measured by this machine\'s clock',
  );
});

/** Fakes of the two cluster connections: events, status, and the few commands ClusterLink uses. */
function fakeClusterConnections(retained: Record<string, string>) {
  const notWriteable = (): Error => new Error("Stream isn't writeable and enableOfflineQueue options is false");
  const published: { channel: string; frame: Record<string, unknown> }[] = [];
  const pub = Object.assign(new EventEmitter(), {
    status: 'connecting',
    async hgetallBuffer(): Promise<Record<string, Buffer>> {
      // Like ioredis without the offline queue: a command on a connection not ready fails at once.
      if (pub.status !== 'ready') throw notWriteable();
      return Object.fromEntries(Object.entries(retained).map(([k, v]) => [k, Buffer.from(v)]));
    },
    async publish(channel: string, frame: string): Promise<number> {
      if (pub.status !== 'ready') throw notWriteable();
      published.push({ channel, frame: JSON.parse(frame) as Record<string, unknown> });
      return 1;
    },
    async time(): Promise<string[]> {
      if (pub.status !== 'ready') throw notWriteable();
      const now = Date.now();
      return [String(Math.floor(now / 1000)), String((now % 1000) * 1000)];
    },
    async hset(): Promise<number> {
      return 1;
    },
    async hdel(): Promise<number> {
      return 1;
    },
    becomeReady(): void {
      pub.status = 'ready';
      pub.emit('ready');
    },
  });
  const sub = Object.assign(new EventEmitter(), {
    status: 'wait',
    async connect(): Promise<void> {
      setImmediate(() => {
        sub.status = 'ready';
        sub.emit('ready');
      });
    },
    async subscribe(): Promise<number> {
      return 1;
    },
    disconnect(): void {
      sub.status = 'end';
    },
  });
  return { pub, sub, published };
}

function clusterUnderTest(t: Test, retained: Record<string, string>) {
  const settings = resolveRedisSettings(redisSection({ url: 'redis://h', gatewayId: 'gw-a', cluster: { enabled: true } }), 'host');
  const warnings: string[] = [];
  const logger: Logger = { debug: () => undefined, info: () => undefined, warn: (m, f) => warnings.push(`${m} ${JSON.stringify(f)}`), error: () => undefined };
  const broker = new Broker({ limits: validateConfig({}, 'test').limits, sysInterval: 0, version: 'test' }, logger);
  const ctx = broker.context('redis');
  const got: Message[] = [];
  ctx.subscribe('#', (m) => got.push(m));
  const conns = fakeClusterConnections(retained);
  // As the adapter wires it: one clock, read over the publishing connection.
  const clock = clockOver(t, conns.pub);
  const cluster = new ClusterLink(conns.pub as unknown as Redis, conns.sub as unknown as Redis, ctx, settings, clock);
  return { cluster, ctx, got, warnings, ...conns };
}

const retainedFrame = JSON.stringify({ o: 'gw-b', t: 'clu/kept', q: 1, r: true, p: Buffer.from('from b').toString('base64') });

t.test('cluster: retained messages of the hash are loaded at start (publishing connection ready first)', async (t) => {
  const { cluster, got, warnings, pub } = clusterUnderTest(t, { 'clu/kept': retainedFrame });
  pub.becomeReady();
  cluster.start();
  const deadline = Date.now() + 1000;
  while (got.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  await cluster.stop();
  t.same(got.map((m) => [m.topic, m.payload.toString(), m.qos, m.retain]), [['clu/kept', 'from b', 1, true]], 'published locally, retained');
  t.same(warnings, [], 'no warning');
});

t.test('cluster: retained messages are loaded even when the subscriber connection is ready before the publishing one', async (t) => {
  // Both connections connect at the same time at start (and again after an outage): either may be
  // ready first. Seen with the real gateway: about 1 start in 4 logs "retained messages not loaded".
  const { cluster, got, warnings, pub, sub } = clusterUnderTest(t, { 'clu/kept': retainedFrame });
  cluster.start();
  const readyDeadline = Date.now() + 1000;
  while (sub.status !== 'ready' && Date.now() < readyDeadline) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 20));
  pub.becomeReady();
  const deadline = Date.now() + 1500;
  while (got.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  await cluster.stop();
  t.same(
    got.map((m) => [m.topic, m.payload.toString(), m.retain]),
    [['clu/kept', 'from b', true]],
    `the cluster's retained message reaches this gateway (warnings: ${warnings.join('; ') || 'none'})`,
  );
});

t.test('cluster: local messages go out once with this origin; messages of others come in and are never sent back', async (t) => {
  const { cluster, ctx, got, pub, sub, published } = clusterUnderTest(t, {});
  pub.becomeReady();
  cluster.start();
  ctx.publish({ topic: 'clu/local', payload: Buffer.from('mine'), qos: 1, retain: false }, 'some-client');
  await new Promise((r) => setImmediate(r));
  t.same(
    published.map((p) => [p.channel, p.frame.o, p.frame.t, p.frame.q, p.frame.r, Buffer.from(String(p.frame.p), 'base64').toString()]),
    [['edgeway:cluster', 'gw-a', 'clu/local', 1, false, 'mine']],
    'a local message is sent to the channel once, with this gateway as origin',
  );
  const frame = (o: string, topic: string) => Buffer.from(JSON.stringify({ o, t: topic, q: 0, r: false, p: Buffer.from(`from ${o}`).toString('base64') }));
  sub.emit('messageBuffer', Buffer.from('edgeway:cluster'), frame('gw-b', 'clu/remote'));
  sub.emit('messageBuffer', Buffer.from('edgeway:cluster'), frame('gw-a', 'clu/echo'));
  sub.emit('messageBuffer', Buffer.from('edgeway:cluster'), Buffer.from('not json'));
  await new Promise((r) => setImmediate(r));
  t.same(
    got.map((m) => [m.topic, m.payload.toString()]),
    [
      ['clu/local', 'mine'],
      ['clu/remote', 'from gw-b'],
    ],
    "another gateway's message is published locally; our own echo is ignored",
  );
  t.equal(published.length, 1, 'the message from gw-b was not sent back to the channel');
  t.match(cluster.stats(), { sent: 1, received: 1, invalid: 1 }, 'counted');
  await cluster.stop();
  ctx.publish({ topic: 'clu/after-stop', payload: Buffer.from('x'), qos: 0, retain: false }, 'some-client');
  await new Promise((r) => setImmediate(r));
  t.equal(published.length, 1, 'nothing sent after stop');
});
