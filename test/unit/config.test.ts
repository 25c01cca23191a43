import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ConfigError, defaultConfig, formatPath, loadConfigFile, validateConfig } from '../../config/load';
import { loadConfigIsolated } from '../../config/load-isolated';

/** Runs `fn`, which must throw a ConfigError, and returns its problems. */
function problemsOf(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError, but the configuration was accepted');
}

const dir = mkdtempSync(join(tmpdir(), 'edgeway-config-test-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let fileCounter = 0;
function writeYaml(text: string): string {
  const path = join(dir, `config-${++fileCounter}.yaml`);
  writeFileSync(path, text);
  return path;
}

t.test('an empty document gives the documented defaults', async (t) => {
  for (const empty of [{}, undefined, null]) {
    const c = validateConfig(empty, 'test');
    t.same(c.listeners, [{ protocol: 'mqtt', host: '127.0.0.1', port: 1883 }], 'one listener on 127.0.0.1:1883');
    t.same(
      c.limits,
      {
        maxPacketSize: 1024 * 1024,
        maxConnections: 10_000,
        maxInflight: 20,
        receiveMaximum: 65_535,
        topicAliasMaximum: 10,
        maxKeepalive: 0,
        maxQueued: 1000,
        maxQueuedBytes: 16 * 1024 * 1024,
        maxQueuedBytesTotal: 128 * 1024 * 1024,
        maxSessions: 10_000,
        maxTopicLevels: 64,
        maxSubscriptionsPerClient: 1000,
        maxRetained: 100_000,
        maxRetainedBytes: 64 * 1024 * 1024,
        maxOutgoingBytes: 1024 * 1024,
        maxOutgoingBytesTotal: 64 * 1024 * 1024,
        outgoingHighWater: 64 * 1024,
        backpressureTimeout: 1000,
        connectTimeout: 5_000,
        perAddress: { maxConnections: 256, connectionsPerSecond: 50, connectionBurst: 100, exemptLoopback: true, maxTracked: 10_000 },
        loginBackoff: { freeAttempts: 3, initialDelay: 250, maxDelay: 15_000, forgetAfter: 600_000 },
      },
      'limits as in the README table',
    );
    t.equal(c.sys.interval, 10, 'sys.interval defaults to 10 s');
    t.equal(c.log.level, 'info');
  }
  t.same(defaultConfig(), validateConfig({}, 'x'), 'defaultConfig() is the empty document');
  const emptyFile = loadConfigFile(writeYaml(''));
  t.same(emptyFile, defaultConfig(), 'an empty file is a complete configuration');
  const commentsOnly = loadConfigFile(writeYaml('# nothing here\n'));
  t.same(commentsOnly, defaultConfig(), 'a file with only comments is a complete configuration');
});

t.test('partial sections keep the other defaults', async (t) => {
  const c = validateConfig({ listeners: [{ protocol: 'mqtt', port: 1884 }], limits: { maxInflight: 5 } }, 'test');
  t.same(c.listeners, [{ protocol: 'mqtt', host: '127.0.0.1', port: 1884 }], 'listener host defaults');
  t.equal(c.limits.maxInflight, 5);
  t.equal(c.limits.maxQueued, 1000, 'other limits keep their defaults');
});

t.test('every error is reported at once, each with its key path', async (t) => {
  const problems = problemsOf(() =>
    validateConfig(
      {
        listeners: [{ protocol: 'mqtt', port: 1883 }, { protocol: 'mqtt', port: 'eighteen', host: '' }],
        limits: { maxConnections: 0, maxInflight: 'many' },
        sys: { interval: -1 },
        log: { level: 'loud' },
      },
      'test.yaml',
    ),
  );
  t.ok(problems.includes('listeners[1].port: expected number, received string'), 'the README example message');
  const paths = problems.map((p) => p.slice(0, p.indexOf(':')));
  t.same(
    [...paths].sort(),
    ['limits.maxConnections', 'limits.maxInflight', 'listeners[1].host', 'listeners[1].port', 'log.level', 'sys.interval'].sort(),
    'one problem per bad key, all of them',
  );
  t.notOk(
    problems.some((p) => p.startsWith('listeners[0]')),
    'the valid listener is not reported',
  );
  t.ok(
    problems.every((p) => !/^Invalid (input|option): /.test(p.slice(p.indexOf(':') + 2))),
    "zod's 'Invalid input: ' prefix is removed",
  );
  t.match(problems.find((p) => p.startsWith('log.level')), /debug.*info.*warn.*error/, 'an enum error lists the allowed values');
});

t.test('ConfigError carries source, problems and a readable message', async (t) => {
  let caught: unknown;
  try {
    validateConfig({ listeners: [{ protocol: 'mqtt', port: 70000 }] }, 'my.yaml');
  } catch (err) {
    caught = err;
  }
  t.ok(caught instanceof ConfigError, 'a ConfigError');
  const err = caught as ConfigError;
  t.equal(err.code, 'EDGEWAY_ERR_CONFIG', 'stable error code');
  t.equal(err.source, 'my.yaml');
  t.equal(err.problems.length, 1);
  t.match(err.problems[0], /^listeners\[0\]\.port: /);
  t.match(err.message, /^invalid configuration in my\.yaml:\n {2}listeners\[0\]\.port: /, 'message names the source and each problem');
});

t.test('unknown keys at the top level and nested are named', async (t) => {
  const problems = problemsOf(() =>
    validateConfig(
      {
        listener: [],
        limits: { maxPacketSise: 10 },
        sys: { intervall: 5 },
        log: { lvl: 'info' },
        listeners: [{ protocol: 'mqtt', port: 1, tls: true }],
      },
      'test',
    ),
  );
  t.same(
    [...problems].sort(),
    ['limits.maxPacketSise: unknown key', 'listener: unknown key', 'listeners[0].tls: unknown key', 'log.lvl: unknown key', 'sys.intervall: unknown key'].sort(),
    'each unknown key by its full path',
  );
  const two = problemsOf(() => validateConfig({ a: 1, b: 2 }, 'test'));
  t.same([...two].sort(), ['a: unknown key', 'b: unknown key'], 'several unknown keys in one object give one problem each');
});

t.test('wrong types and bad values', async (t) => {
  const cases: [unknown, RegExp][] = [
    [{ listeners: 'mqtt://0.0.0.0' }, /^listeners: expected array/],
    [{ listeners: [] }, /^listeners: .*>=1/],
    [{ listeners: [{ protocol: 'http', port: 1 }] }, /^listeners\[0\]\.protocol: expected protocol mqtt, mqtts, ws or wss/],
    [{ listeners: [{ protocol: 'mqtts', port: 8883, key: 'k.pem' }] }, /^listeners\[0\]\.cert: /],
    [{ listeners: [{ protocol: 'mqtts', cert: 'c.pem', key: 'k.pem', requireCertificate: true }] }, /^listeners\[0\]\.ca: required with requireCertificate/],
    [{ listeners: [{ protocol: 'ws', path: 'mqtt' }] }, /^listeners\[0\]\.path: expected an absolute URL path/],
    [{ listeners: [{ protocol: 'mqtt', host: '0.0.0.0' }] }, /^listeners\[0\]\.host: 0\.0\.0\.0 is reachable from the network but no authentication is configured: add users with "edgeway passwd/],
    [{ listeners: [{ protocol: 'mqtt', port: -1 }] }, /^listeners\[0\]\.port: /],
    [{ listeners: [{ protocol: 'mqtt', port: 1.5 }] }, /^listeners\[0\]\.port: /],
    [{ limits: { maxPacketSize: 10 } }, /^limits\.maxPacketSize: /],
    [{ limits: { maxPacketSize: '12 parsecs' } }, /^limits\.maxPacketSize: /],
    [{ limits: { maxPacketSize: -5 } }, /^limits\.maxPacketSize: /],
    [{ limits: { maxInflight: 70_000 } }, /^limits\.maxInflight: /],
    [{ limits: { connectTimeout: 50 } }, /^limits\.connectTimeout: /],
    [{ limits: 'none' }, /^limits: expected object/],
    [{ sys: { interval: 'often' } }, /^sys\.interval: expected number, received string$/],
    [{ log: { level: 5 } }, /^log\.level: /],
  ];
  for (const [doc, re] of cases) {
    const problems = problemsOf(() => validateConfig(doc, 'test'));
    t.equal(problems.length, 1, `one problem for ${JSON.stringify(doc)}`);
    t.match(problems[0], re, JSON.stringify(doc));
  }
});

t.test('byte sizes', async (t) => {
  const sizes: [string | number, number][] = [
    ['64KiB', 64 * 1024],
    ['1MiB', 1024 * 1024],
    ['1 MiB', 1024 * 1024],
    ['2mib', 2 * 1024 * 1024],
    ['256MB', 256_000_000],
    ['100KB', 100_000],
    ['4096', 4096],
    ['4096B', 4096],
    [' 8KiB ', 8 * 1024],
    [131072, 131072],
  ];
  for (const [text, bytes] of sizes) {
    const c = validateConfig({ limits: { maxPacketSize: text } }, 'test');
    t.equal(c.limits.maxPacketSize, bytes, `maxPacketSize ${JSON.stringify(text)} = ${bytes}`);
  }
  const c = validateConfig({ limits: { maxOutgoingBytes: '2MiB', outgoingHighWater: '128KiB' } }, 'test');
  t.equal(c.limits.maxOutgoingBytes, 2 * 1024 * 1024);
  t.equal(c.limits.outgoingHighWater, 128 * 1024);
  for (const bad of ['1.5MiB', 'MiB', '10 TiB', '-1KiB', '']) {
    const problems = problemsOf(() => validateConfig({ limits: { maxOutgoingBytes: bad } }, 'test'));
    t.match(problems, [/^limits\.maxOutgoingBytes: /], `${JSON.stringify(bad)} is refused`);
  }
  const totals = validateConfig({ limits: { maxQueuedBytesTotal: '1GiB', maxOutgoingBytesTotal: '32MiB' } }, 'test');
  t.same([totals.limits.maxQueuedBytesTotal, totals.limits.maxOutgoingBytesTotal], [1024 ** 3, 32 * 1024 * 1024], 'the global budgets take sizes');
  const badTotals = problemsOf(() => validateConfig({ limits: { maxQueuedBytesTotal: '-1KiB', maxOutgoingBytesTotal: 'lots' } }, 'test'));
  t.match(badTotals.slice().sort(), [/^limits\.maxOutgoingBytesTotal: /, /^limits\.maxQueuedBytesTotal: /], 'and refuse what is not one');
  const fromYaml = loadConfigFile(writeYaml('limits:\n  maxPacketSize: 64KiB\n  maxOutgoingBytes: 1MiB\n  outgoingHighWater: 16KiB\n'));
  t.equal(fromYaml.limits.maxPacketSize, 65536, 'unquoted 64KiB in YAML');
  t.equal(fromYaml.limits.maxOutgoingBytes, 1048576, 'unquoted 1MiB in YAML');
  t.equal(fromYaml.limits.outgoingHighWater, 16384);
  const tooBig = problemsOf(() => validateConfig({ limits: { maxPacketSize: '1GiB' } }, 'test'));
  t.match(tooBig, [/^limits\.maxPacketSize: /], 'a packet size above the MQTT maximum is refused');
});

t.test('outgoingHighWater must be below maxOutgoingBytes', async (t) => {
  const equal = problemsOf(() => validateConfig({ limits: { maxOutgoingBytes: '64KiB', outgoingHighWater: 65536 } }, 'test'));
  t.match(equal, [/^limits\.outgoingHighWater: must be smaller than maxOutgoingBytes \(65536\)/], 'equal is refused');
  const above = problemsOf(() => validateConfig({ limits: { outgoingHighWater: '2MiB' } }, 'test'));
  t.match(above, [/^limits\.outgoingHighWater: .*1048576/], 'above the default maxOutgoingBytes is refused');
  const ok = validateConfig({ limits: { maxOutgoingBytes: 65537, outgoingHighWater: 65536 } }, 'test');
  t.equal(ok.limits.outgoingHighWater, 65536, 'one byte below is accepted');
  const withOthers = problemsOf(() => validateConfig({ limits: { maxConnections: 0, outgoingHighWater: '2MiB' } }, 'test'));
  t.equal(withOthers.length, 2, 'reported together with other limit errors');
});

t.test('loadConfigFile: a full valid file', async (t) => {
  const path = writeYaml(`
listeners:
  - protocol: mqtt
    host: 0.0.0.0
    port: 1884
  - protocol: mqtt
    port: 1885
limits:
  maxConnections: 50
sys:
  interval: 0
log:
  level: debug
auth:
  allowAnonymous: true
`);
  const c = loadConfigFile(path);
  t.same(c.listeners, [
    { protocol: 'mqtt', host: '0.0.0.0', port: 1884 },
    { protocol: 'mqtt', host: '127.0.0.1', port: 1885 },
  ]);
  t.equal(c.limits.maxConnections, 50);
  t.equal(c.sys.interval, 0);
  t.equal(c.log.level, 'debug');
  t.same(c.auth, { allowAnonymous: true });
});

t.test('loadConfigFile: the shipped example is valid and equals the defaults', async (t) => {
  // dist/test/unit → ../../../config/edgeway.example.yaml (the YAML is not compiled into dist).
  const example = join(__dirname, '..', '..', '..', 'config', 'edgeway.example.yaml');
  t.same(loadConfigFile(example), defaultConfig(), 'README: "a full example with every default"');
});

t.test('loadConfigFile: errors', async (t) => {
  const missing = join(dir, 'does-not-exist.yaml');
  t.same(problemsOf(() => loadConfigFile(missing)), ['cannot read the file: ENOENT'], 'missing file');
  t.same(problemsOf(() => loadConfigFile(dir)), ['cannot read the file: EISDIR'], 'a directory');

  const syntax = problemsOf(() => loadConfigFile(writeYaml('listeners:\n  - protocol: mqtt\n   port: [1883\n')));
  t.ok(syntax.length >= 1, 'a YAML syntax error is reported');
  t.ok(
    syntax.every((p) => p.startsWith('YAML syntax: ')),
    'as a YAML syntax problem',
  );
  t.match(syntax[0], /line \d+/, 'with the line');

  const dup = problemsOf(() => loadConfigFile(writeYaml('sys:\n  interval: 1\nsys:\n  interval: 2\n')));
  t.match(dup, [/^YAML syntax: .*[Dd]uplicate|unique/], 'duplicate keys are refused');

  for (const text of ['just a string\n', '- a\n- b\n', '42\n', 'true\n']) {
    const problems = problemsOf(() => loadConfigFile(writeYaml(text)));
    t.same(problems, ['(top level): expected a mapping of sections such as "listeners:"'], `non-mapping top level: ${JSON.stringify(text)}`);
  }

  const bad = problemsOf(() => loadConfigFile(writeYaml('listeners:\n  - protocol: mqtt\n    port: "1883"\nbogus: 1\n')));
  t.same([...bad].sort(), ['bogus: unknown key', 'listeners[0].port: expected number, received string'], 'schema errors from a file');
});

t.test('the result is deeply frozen', async (t) => {
  const c = validateConfig({ listeners: [{ protocol: 'mqtt', port: 1 }] }, 'test');
  t.ok(Object.isFrozen(c), 'top level');
  t.ok(Object.isFrozen(c.listeners), 'listeners array');
  t.ok(Object.isFrozen(c.listeners[0]), 'a listener');
  t.ok(Object.isFrozen(c.limits), 'limits');
  t.ok(Object.isFrozen(c.sys), 'sys');
  t.ok(Object.isFrozen(c.log), 'log');
  t.throws(() => {
    (c.limits as { maxConnections: number }).maxConnections = 1;
  }, TypeError, 'assignment throws in strict mode');
  t.equal(c.limits.maxConnections, 10_000, 'value unchanged');
  const d = defaultConfig();
  t.ok(Object.isFrozen(d.listeners[0]), 'defaultConfig() is frozen too');
  // Freezing one result must not affect a later one (defaults are not shared mutable objects).
  const e = validateConfig({}, 'test');
  t.not(e.listeners, d.listeners, 'each call returns its own objects');
});

t.test('formatPath', async (t) => {
  t.equal(formatPath(['listeners', 0, 'port']), 'listeners[0].port');
  t.equal(formatPath(['limits', 'maxInflight']), 'limits.maxInflight');
  t.equal(formatPath([]), '(top level)');
  t.equal(formatPath([2]), '[2]');
});

t.test('loadConfigIsolated: the same result and the same errors as loadConfigFile, from a worker thread', async (t) => {
  const example = join(__dirname, '..', '..', '..', 'config', 'edgeway.example.yaml');
  const full = writeYaml('listeners:\n  - protocol: mqtt\n    port: 1999\nlimits:\n  maxPacketSize: 64KiB\nserial:\n  - name: shed\n    path: /dev/ttyUSB0\n    format: csv\n    columns: [a, b]\n');
  for (const path of [example, full]) {
    const isolated = await loadConfigIsolated(path);
    t.same(isolated, loadConfigFile(path), `the configuration of ${path}`);
    t.ok(Object.isFrozen(isolated) && Object.isFrozen(isolated.listeners[0]) && Object.isFrozen(isolated.serial[0]?.columns), 'deeply frozen');
  }
  t.same(await loadConfigIsolated(undefined), defaultConfig(), 'no path: the built-in defaults');

  const bad = writeYaml('listeners:\n  - protocol: mqtt\n    port: "1883"\nbogus: 1\n');
  const missing = join(dir, 'does-not-exist.yaml');
  for (const path of [bad, missing]) {
    const err = await loadConfigIsolated(path).then(
      () => undefined,
      (e: unknown) => e,
    );
    t.ok(err instanceof ConfigError, `a ConfigError for ${path}`);
    t.same((err as ConfigError).problems, problemsOf(() => loadConfigFile(path)), 'with the same problems');
    t.equal((err as ConfigError).message, `invalid configuration in ${path}:\n${problemsOf(() => loadConfigFile(path)).map((p) => `  ${p}`).join('\n')}`, 'and the same message');
  }
});
