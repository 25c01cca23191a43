import t from 'tap';
import { validateConfig } from '../../config/load';
import { problemsOf } from '../helpers/config';
import { discoveryMessage } from '../../adapters/serial/discovery';

t.test('no serial section: no ports', async (t) => {
  t.same(validateConfig({}, 'test').serial, []);
});

t.test('a minimal port gets every default', async (t) => {
  const [p] = validateConfig({ serial: [{ name: 'greenhouse', path: '/dev/ttyUSB0' }] }, 'test').serial;
  t.same(p, {
    name: 'greenhouse',
    path: '/dev/ttyUSB0',
    baudRate: 9600,
    dataBits: 8,
    parity: 'none',
    stopBits: 1,
    rtscts: false,
    format: 'raw',
    topic: 'sensors/{name}',
    qos: 0,
    retain: false,
    delimiter: '\n',
    maxLineLength: 1024,
    columns: [],
    separator: ',',
    wholeLine: false,
    wrap: false,
    userProperties: false,
    maxKeys: 64,
    maxWriteQueue: 64,
    statusTopic: 'edgeway/serial/{name}/status',
    statusInterval: 30,
    reconnect: { initialDelay: 250, maxDelay: 5000 },
  });
  t.ok(Object.isFrozen(p), 'frozen with the rest of the config');
});

t.test('the default topic follows the format', async (t) => {
  const ports = validateConfig(
    {
      serial: [
        { name: 'a', path: '/a', format: 'json' },
        { name: 'b', path: '/b', format: 'json', wholeLine: true },
        { name: 'c', path: '/c', format: 'kv' },
        { name: 'd', path: '/d', format: 'csv', columns: ['x'] },
        { name: 'e', path: '/e', format: 'raw' },
      ],
    },
    'test',
  ).serial;
  t.same(
    ports.map((p) => p.topic),
    ['sensors/{name}/{key}', 'sensors/{name}', 'sensors/{name}/{key}', 'sensors/{name}/{key}', 'sensors/{name}'],
  );
});

t.test('homeAssistant: true enables discovery with defaults', async (t) => {
  const [p] = validateConfig({ serial: [{ name: 'a', path: '/a', format: 'kv', homeAssistant: true }] }, 'test').serial;
  t.same(p?.homeAssistant, { prefix: 'homeassistant', maxKeys: 256, keys: {} });
  const [q] = validateConfig({ serial: [{ name: 'a', path: '/a', homeAssistant: false }] }, 'test').serial;
  t.equal(q?.homeAssistant, undefined);
});

t.test('every problem at once, each with its path', async (t) => {
  const problems = problemsOf({
    serial: [
      { name: 'bad name', path: '', baudRate: 11520, format: 'xml', qos: 3, extra: 1 },
      { name: 'csv', path: '/dev/ttyUSB1', format: 'csv', topic: 'a/+/{key}', write: 'cmd/#' },
      { name: 'ok', path: '/dev/ttyUSB1', format: 'json', topic: 'sensors/{name}', columns: ['a'] },
      { name: 'ok', path: '/dev/ttyUSB2', format: 'csv', columns: ['t', 'a/b', 't'], reconnect: { initialDelay: 9000, maxDelay: 1000 } },
      { name: 'w', path: '/dev/ttyUSB3', write: 'x/status', statusTopic: 'x/status', homeAssistant: { prefix: 'ha/{name}', colour: 'red' } },
    ],
  });
  const expected = [
    /^serial\[0\]\.name: expected 1 to 64 letters/,
    /^serial\[0\]\.path: /,
    /^serial\[0\]\.baudRate: expected a standard baud rate: one of .*115200/,
    /^serial\[0\]\.format: /,
    /^serial\[0\]\.qos: /,
    /^serial\[0\]\.extra: unknown key$/,
    /^serial\[1\]\.topic: invalid topic template: wildcards/,
    /^serial\[1\]\.columns: required when format is csv/,
    /^serial\[1\]\.write: invalid write topic: wildcards/,
    /^serial\[2\]\.topic: invalid topic template: must contain \{key\}/,
    /^serial\[2\]\.columns: only used with format csv$/,
    /^serial\[2\]\.path: duplicate path "\/dev\/ttyUSB1" \(also serial\[1\]\)$/,
    /^serial\[3\]\.name: duplicate name "ok" \(also serial\[2\]\)$/,
    /^serial\[3\]\.columns\[1\]: not a safe topic level/,
    /^serial\[3\]\.columns\[2\]: duplicate column "t"/,
    /^serial\[3\]\.reconnect\.initialDelay: must not be larger than maxDelay$/,
    /^serial\[4\]\.write: must differ from statusTopic$/,
    /^serial\[4\]\.homeAssistant\.prefix: placeholders are not allowed/,
    /^serial\[4\]\.homeAssistant\.colour: unknown key$/,
  ];
  for (const re of expected) t.ok(problems.some((p) => re.test(p)), `reports ${re}`);
  t.equal(problems.length, expected.length, `nothing else:\n${problems.join('\n')}`);
});

t.test('topic templates: the fixed part must be a valid topic', async (t) => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ format: 'json', topic: 'sensors/{name}/#' }, /wildcards/],
    [{ format: 'raw', topic: 'sensors/{name}/{key}' }, /\{key\} is not allowed here/],
    [{ format: 'kv', topic: '/sensors/{key}' }, /empty topic level/],
    [{ format: 'kv', topic: '$SYS/{key}' }, /reserved/],
    [{ format: 'kv', topic: 'sensors/{id}/{key}' }, /unknown placeholder \{id\}/],
    [{ statusTopic: 'status/+' }, /status topic: wildcards/],
    [{ write: '' }, /write topic: empty topic/],
  ];
  for (const [port, re] of cases) {
    const problems = problemsOf({ serial: [{ name: 'p', path: '/dev/x', ...port }] });
    t.ok(problems.some((p) => re.test(p)), `${JSON.stringify(port)}: ${problems.join('; ')}`);
  }
});

t.test('bounds are enforced', async (t) => {
  const cases: [Record<string, unknown>, string][] = [
    [{ maxLineLength: 8 }, 'serial[0].maxLineLength'],
    [{ maxLineLength: '1MiB' }, 'serial[0].maxLineLength'],
    [{ delimiter: '' }, 'serial[0].delimiter'],
    [{ maxKeys: 0 }, 'serial[0].maxKeys'],
    [{ maxWriteQueue: -1 }, 'serial[0].maxWriteQueue'],
    [{ reconnect: { maxDelay: 5 } }, 'serial[0].reconnect.maxDelay'],
    [{ dataBits: 9 }, 'serial[0].dataBits'],
    [{ stopBits: 1.5 }, 'serial[0].stopBits'],
    [{ parity: 'maybe' }, 'serial[0].parity'],
  ];
  for (const [port, path] of cases) {
    const problems = problemsOf({ serial: [{ name: 'p', path: '/dev/x', ...port }] });
    t.ok(problems.some((p) => p.startsWith(`${path}: `)), `${JSON.stringify(port)} → ${problems.join('; ')}`);
  }
  const [p] = validateConfig({ serial: [{ name: 'p', path: '/dev/x', maxLineLength: '4KiB' }] }, 'test').serial;
  t.equal(p?.maxLineLength, 4096, 'a byte size with a unit');
});

t.test('homeAssistant: keys named like Object.prototype members get no inherited hints', async (t) => {
  const [p] = validateConfig({ serial: [{ name: 'a', path: '/a', format: 'json', homeAssistant: { keys: { temp: { name: 'Temperature' } } } }] }, 'test').serial;
  const ha = p?.homeAssistant;
  if (ha === undefined) throw new Error('no homeAssistant options');
  const config = (key: string) =>
    JSON.parse(discoveryMessage({ gatewayId: 'gw', portName: 'a', key, stateTopic: `s/${key}`, statusTopic: 'st', qos: 0, wrap: false, sampleJson: '1', version: 'v', options: ha }).payload) as Record<string, unknown>;
  t.equal(config('temp').name, 'Temperature', 'a configured hint applies');
  t.equal(config('constructor').name, 'constructor', 'not "Object" from Object.prototype.constructor');
  t.equal(config('toString').name, 'toString');
  t.equal(config('__proto__').name, '__proto__');
});

t.test('serial topics deeper than limits.maxTopicLevels are refused at start, with their paths', async (t) => {
  const problems = problemsOf({
    limits: { maxTopicLevels: 3 },
    serial: [{ name: 'deep', path: '/dev/ttyUSB0', format: 'kv', topic: 'a/b/c/{name}/{key}', write: 'x/y/z/w', statusTopic: 's/{name}' }],
  });
  t.ok(problems.some((p) => p.startsWith('serial[0].topic: has 5 topic levels')), 'reading topic');
  t.ok(problems.some((p) => p.startsWith('serial[0].write: has 4 topic levels')), 'write topic');
  t.notOk(problems.some((p) => p.startsWith('serial[0].statusTopic')), 'a shallow status topic is fine');
});
